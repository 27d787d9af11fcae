"""End to end: a routing rule's opening hours reject an escalation (no case), a bot
learns it from the escalation's answer, escalating again is a new try; and an opening
that fails for good hands the conversation back to Infobip's routing; the reconciler
backfills an inbound message whose webhook was lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import Mesh, running_mesh, wait_for

pytestmark = pytest.mark.e2e

# "closed-desk" is never open (no weekly ranges), "open-desk" always: no clock involved.
RULES = """
default: {connector: webhook, queue: general}
rules:
  - name: closed-desk
    match: {tags_any: [closed-desk]}
    route: {queue: nights}
    hours:
      timezone: Europe/Zagreb
      weekly: {}
  - name: open-desk
    match: {tags_any: [open-desk]}
    route: {queue: days}
    hours:
      timezone: America/New_York
      weekly: {mon: "00:00-24:00", tue: "00:00-24:00", wed: "00:00-24:00",
               thu: "00:00-24:00", fri: "00:00-24:00", sat: "00:00-24:00",
               sun: "00:00-24:00"}
  - name: broken
    match: {tags_any: [broken]}
    route: {connector: nowhere}
"""


@pytest.fixture(scope="module")
def mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    rules = tmp_path_factory.mktemp("routing") / "rules.yaml"
    rules.write_text(RULES)
    env = {
        "CCBRIDGE_ROUTING_RULES": str(rules),
        "CCBRIDGE_ROUTE_BACK_ON_FAILED": "true",
        # Long enough for any opening here: the answer comes once it is decided.
        "CCBRIDGE_ESCALATE_WAIT_MS": "4000",
        "CCBRIDGE_GRPC_TIMEOUT_S": "10",
    }
    log_dir = Path(tmp_path_factory.mktemp("mesh-logs"))
    with running_mesh(redis_url, log_dir, env) as handle:
        yield handle


def test_outside_opening_hours_the_escalation_answers_rejected_and_opens_no_case(
    mesh: Mesh,
) -> None:
    cid = mesh.conversation(history=2)["id"]
    answer = mesh.escalate(cid, tags=["closed-desk"])
    assert answer.status_code == 202
    assert answer.json() == {"conversationId": cid, "state": "REJECTED", "created": True}
    handover = mesh.handover(cid)
    assert handover["state"] == "REJECTED"
    assert handover["failureReason"] == "outside_hours"
    assert handover["routing"]["rule"] == "closed-desk"
    assert mesh.case_for(cid) is None
    # The end user writes on: nothing is relayed to a case that does not exist.
    mesh.send(cid, "anyone there?")
    assert mesh.case_for(cid) is None
    # Escalating again is a new try (still closed here, so rejected again).
    again = mesh.escalate(cid, tags=["closed-desk"])
    assert again.json()["state"] == "REJECTED" and again.json()["created"] is True


def test_inside_opening_hours_the_case_opens(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    answer = mesh.escalate(cid, tags=["open-desk"])
    assert answer.status_code == 202 and answer.json()["state"] == "ACTIVE"
    case = mesh.case_for(cid)
    assert case is not None and case["routing"]["queue"] == "days"


def test_a_failed_opening_hands_the_conversation_back_to_infobip_routing(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    assert mesh.escalate(cid, tags=["broken"]).status_code == 202
    failed = wait_for("FAILED", lambda: (h := mesh.handover(cid)).get("state") == "FAILED" and h)
    assert "nowhere" in failed["failureReason"]
    wait_for(
        "the route back",
        lambda: mesh.infobip.get(f"/_sim/conversations/{cid}").json()["routed"] == 1,
    )
    assert mesh.case_for(cid) is None


def test_the_reconciler_backfills_an_inbound_message_whose_webhook_was_lost(mesh: Mesh) -> None:
    cid = mesh.conversation(history=3)["id"]
    assert mesh.escalate(cid, tags=["open-desk"]).json()["state"] == "ACTIVE"
    mesh.send(cid, "by webhook")
    wait_for("the webhook's message", lambda: mesh.customer_texts(cid) == ["by webhook"])
    config = mesh.infobip.get("/_sim/config").json()
    mesh.infobip.put("/_sim/config", json={"webhook_url": None}).raise_for_status()
    try:
        sent = mesh.send(cid, "webhook lost")
        assert sent["deliveries"] == []  # nothing told the gateway
    finally:
        mesh.infobip.put("/_sim/config", json={"webhook_url": config["webhook_url"]})
    # Once, in order, after the one the webhook brought (the reconciler runs every 5 s).
    wait_for(
        "the backfill",
        lambda: mesh.customer_texts(cid) == ["by webhook", "webhook lost"],
        timeout_s=30,
    )
