"""End to end: all five components as separate processes, simulators at the edges."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.support.mesh import (
    Mesh,
    inbound_text,
    post_until_accepted,
    start_component,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _created(item: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(item["createdAt"]).replace("Z", "+00:00"))


def test_full_handover_with_1500_messages_of_history(mesh: Mesh) -> None:
    conv = mesh.conversation(history=1500)
    cid = conv["id"]
    answer = mesh.escalate(cid, tags=["vip"], metadata={"language": "en"})
    assert answer.status_code == 202
    assert answer.json()["conversationId"] == cid

    case = wait_for("the case to open", lambda: mesh.case_for(cid))
    transcript = case["transcript"]
    # Capped at the most recent 1,000, oldest first, no duplicates, paging used.
    assert len(transcript) == 1000
    assert case["transcriptTruncated"] is True
    assert len({m["id"] for m in transcript}) == 1000
    times = [_created(m) for m in transcript]
    assert times == sorted(times)
    history = mesh.infobip.get(
        f"/ccaas/1/conversations/{cid}/messages",
        params={"limit": 999, "orderBy": "createdAt:desc"},
        headers={"Authorization": "App e2e-key"},
    ).json()["messages"]
    assert transcript[-1]["id"] == history[0]["id"]  # the newest message is included
    handover = wait_for("ACTIVE", lambda: (h := mesh.handover(cid)).get("state") == "ACTIVE" and h)
    assert handover["tags"] == ["vip"]
    # Routed by the escalation's tag; the tag and metadata were attached at Infobip.
    assert (case["routing"]["rule"], case["routing"]["queue"]) == ("vip", "vip")
    at_infobip = mesh.infobip.get(f"/_sim/conversations/{cid}").json()
    assert "vip" in at_infobip["tags"] and at_infobip["metadata"]["language"] == "en"

    # Patch Metadata also records where the case lives (docs/infobip.md), right after
    # the handover turns ACTIVE.
    def case_recorded() -> dict[str, str] | None:
        meta: dict[str, str] = mesh.infobip.get(f"/_sim/conversations/{cid}").json()["metadata"]
        return meta if "ccbridgeCaseId" in meta else None

    recorded = wait_for("the case recorded at Infobip", case_recorded)
    assert recorded["ccbridgeConnector"] == handover["connector"]
    assert recorded["ccbridgeCaseId"] == handover["externalId"] == case["caseId"]

    # 200 end-user messages arrive at the CCaaS in order.
    texts = [f"message {i:03d}" for i in range(200)]
    for text in texts:
        assert mesh.send(cid, text)["webhook_status"] == 200
    wait_for("200 messages at the CCaaS", lambda: len(mesh.customer_texts(cid)) >= 200)
    assert mesh.customer_texts(cid) == texts

    # Agent replies reach Infobip Create Message with from/to/channel swapped.
    case_id = case["caseId"]
    for text in ("Hello from Alice", "Second reply"):
        reply = mesh.ccaas.post(
            f"/_sim/cases/{case_id}/reply", json={"text": text, "agentName": "Alice"}
        ).json()
        assert reply["bridgeStatus"] == 200
    sent = wait_for(
        "agent replies at Infobip", lambda: m if len(m := mesh.agent_messages(cid)) >= 2 else None
    )
    assert [m["content"]["text"] for m in sent] == ["Hello from Alice", "Second reply"]
    for m in sent:
        assert (m["channel"], m["from"], m["to"]) == ("WHATSAPP", "447492263897", "385981234567")

    # The agent closes: Infobip conversation CLOSED, handover CLOSED.
    closed = mesh.ccaas.post(f"/_sim/cases/{case_id}/close", json={"reason": "resolved"})
    assert closed.json()["bridgeStatus"] == 200
    wait_for(
        "Infobip CLOSED",
        lambda: mesh.infobip.get(f"/_sim/conversations/{cid}").json()["status"] == "CLOSED",
    )
    wait_for("handover CLOSED", lambda: mesh.handover(cid).get("state") == "CLOSED")

    # Later messages of that conversation are not relayed.
    late = mesh.gateway.post(
        mesh.webhook_path,
        json=inbound_text(cid, f"late-{uuid.uuid4()}", "are you still there?"),
    )
    assert late.status_code == 200 and late.json()["ignored"] == 1
    assert len(mesh.customer_texts(cid)) == 200


def test_routing_reads_infobip_tags_and_metadata(mesh: Mesh) -> None:
    cid = mesh.conversation(history=5, tags=["billing"], metadata={"country": "DE"})["id"]
    assert mesh.escalate(cid).status_code == 202
    case = wait_for("the case", lambda: mesh.case_for(cid))
    assert case["routing"]["rule"] == "billing-de"
    assert (case["routing"]["queue"], case["routing"]["priority"]) == ("billing-de", 5)
    assert case["routing"]["skills"] == ["billing", "german"]
    assert "billing" in case["tags"] and case["metadata"]["country"] == "DE"


def test_messages_sent_while_opening_arrive_once_after_the_case(mesh: Mesh) -> None:
    # Slow history pages keep the handover OPENING while the end user writes.
    mesh.infobip.put("/_sim/config", json={"page_delay_ms": 400})
    try:
        conv = mesh.conversation(history=30)
        cid = conv["id"]
        assert mesh.escalate(cid).status_code == 202
        texts = [f"early {i}" for i in range(8)]
        for text in texts:
            assert mesh.send(cid, text)["webhook_status"] == 200
        assert mesh.handover(cid).get("state") == "OPENING"
    finally:
        mesh.infobip.put("/_sim/config", json={"page_delay_ms": 0})
    case = wait_for("the case", lambda: mesh.case_for(cid))

    def all_early() -> list[str] | None:
        c = mesh.case_for(cid) or {}
        seen = [m["content"].get("text") for m in c.get("transcript", [])] + [
            m["content"].get("text") for m in c.get("messages", []) if m["from"] == "customer"
        ]
        early = [t for t in seen if t and t.startswith("early ")]
        return early if len(set(early)) == len(texts) else None

    early = wait_for("every early message at the CCaaS", all_early)
    assert sorted(early) == sorted(texts), "each early message exactly once"
    relayed = mesh.customer_texts(cid)
    assert relayed == [t for t in texts if t in relayed], "relayed ones keep their order"
    assert case["caseId"]


def test_duplicates_have_one_effect_and_bad_credentials_are_rejected(mesh: Mesh) -> None:
    cid = mesh.conversation(history=3)["id"]
    mesh.escalate(cid)
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    message = inbound_text(cid, f"dup-{uuid.uuid4()}", "only once")
    first = mesh.gateway.post(mesh.webhook_path, json=message)
    second = mesh.gateway.post(mesh.webhook_path, json=[message, message])
    assert first.json()["accepted"] == 1
    assert second.json()["duplicates"] == 2
    assert mesh.escalate(cid).json()["created"] is False
    wait_for("the message", lambda: "only once" in mesh.customer_texts(cid))
    assert mesh.customer_texts(cid).count("only once") == 1

    assert (
        mesh.gateway.post("/webhooks/infobip/wrong-token-0123456789", json=message).status_code
        == 401
    )
    assert (
        mesh.gateway.post(
            "/v1/escalations",
            json={"conversationId": cid},
            headers={"Authorization": "Bearer nope"},
        ).status_code
        == 401
    )
    bad_sig = mesh.gateway.post(
        "/webhooks/ccaas/webhook",
        content=b'{"type":"case.closed"}',
        headers={
            "X-Ccbridge-Timestamp": "1",
            "X-Ccbridge-Signature": "v1=00",
            "Content-Type": "application/json",
        },
    )
    assert bad_sig.status_code == 401
    # A duplicate agent event (same event id) reaches the end user once.
    case = mesh.case_for(cid)
    assert case is not None
    case_id = case["caseId"]
    reply = {"text": "dedupe me", "agentName": "Bob", "messageId": "m-1", "eventId": "ev-1"}
    for _ in range(2):
        mesh.ccaas.post(f"/_sim/cases/{case_id}/reply", json=reply)
    wait_for("the reply", lambda: mesh.agent_messages(cid))
    wait_for("an idle outbox", lambda: mesh.handover(cid)["outboxPending"] == 0)
    assert [m["content"]["text"] for m in mesh.agent_messages(cid)] == ["dedupe me"]


def test_sigkill_session_while_relaying_500_messages(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    mesh.escalate(cid)
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    texts = [f"crash {i:03d}" for i in range(500)]
    killed = False
    for i, text in enumerate(texts):
        doc = inbound_text(cid, f"{cid}-crash-{i}", text)
        post_until_accepted(mesh.gateway, mesh.webhook_path, doc)
        if not killed and len(mesh.customer_texts(cid)) >= 50:
            mesh.group.kill("session")  # SIGKILL in the middle of relaying
            killed = True
            start_component(mesh, "session")
    assert killed
    wait_for(
        "500 messages at the CCaaS", lambda: len(mesh.customer_texts(cid)) >= 500, timeout_s=120
    )
    assert mesh.customer_texts(cid) == texts, "each message exactly once, in order"
    # Redeliveries (if any) carried the same idempotency key as the first attempt.
    deliveries = [
        d
        for d in mesh.ccaas.get("/_sim/deliveries").json()["deliveries"]
        if d.get("conversationId") == cid and d.get("type") == "case.message"
    ]
    keys = [d["idempotencyKey"] for d in deliveries]
    assert set(keys) == {f"{cid}-crash-{i}" for i in range(500)}


def test_ccaas_outage_messages_wait_and_arrive(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    mesh.escalate(cid)
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    mesh.ccaas.post("/_sim/down")
    texts = [f"outage {i}" for i in range(20)]
    try:
        for text in texts:
            assert mesh.send(cid, text)["webhook_status"] == 200
        wait_for(
            "failed attempts",
            lambda: (
                mesh.handover(cid)["inboxPending"] == 20
                and any(
                    d.get("status") == 503
                    for d in mesh.ccaas.get("/_sim/deliveries").json()["deliveries"]
                    if d.get("conversationId") == cid
                )
            ),
        )
        assert mesh.customer_texts(cid) == []
    finally:
        mesh.ccaas.post("/_sim/up")
    wait_for("20 messages after the outage", lambda: len(mesh.customer_texts(cid)) >= 20)
    assert mesh.customer_texts(cid) == texts
