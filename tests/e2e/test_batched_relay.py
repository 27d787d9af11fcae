"""The relay with the webhook connector's batched delivery on
(CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX=50), through the whole mesh: many conversations at
once arrive each in order and exactly once, in shared array requests; a SIGKILL of
Session mid-relay and a CCaaS outage lose nothing (the same scenarios as
test_handover_flow.py, whose mesh posts one event per request)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.test_handover_flow import (
    test_ccaas_outage_messages_wait_and_arrive as _outage_scenario,
)
from tests.e2e.test_handover_flow import (
    test_sigkill_session_while_relaying_500_messages as _sigkill_scenario,
)
from tests.support.mesh import Mesh, running_mesh, wait_for


@pytest.fixture(scope="module")
def batched(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = Path(tmp_path_factory.mktemp("batched-mesh-logs"))
    with running_mesh(redis_url, log_dir, {"CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX": "50"}) as handle:
        yield handle


def test_many_conversations_share_requests_each_in_order(batched: Mesh) -> None:
    mesh = batched
    cids = [mesh.conversation(history=2)["id"] for _ in range(12)]
    for cid in cids:
        mesh.escalate(cid)
    for cid in cids:
        wait_for("ACTIVE", lambda cid=cid: mesh.handover(cid).get("state") == "ACTIVE")
    texts = {cid: [f"{cid[:8]} says {i:02d}" for i in range(25)] for cid in cids}

    def talk(cid: str) -> None:
        for text in texts[cid]:
            assert mesh.send(cid, text)["webhook_status"] == 200

    with ThreadPoolExecutor(len(cids)) as pool:
        list(pool.map(talk, cids))
    for cid in cids:
        wait_for("all messages at the CCaaS", lambda cid=cid: len(mesh.customer_texts(cid)) >= 25)
        assert mesh.customer_texts(cid) == texts[cid], "exactly once, in order"
    # The relay sent arrays (the simulator records each event with the size of the
    # request that carried it) holding several messages. A step that was already under
    # way when the messages came (e.g. the one that opened the case) may still post some
    # one by one, so not every event must have come in an array.
    deliveries = [
        d
        for d in mesh.ccaas.get("/_sim/deliveries").json()["deliveries"]
        if d.get("type") == "case.message" and d.get("conversationId") in texts
    ]
    assert len(deliveries) >= 12 * 25
    assert max(d.get("batch", 1) for d in deliveries) > 1


def test_sigkill_session_mid_relay_with_batches(batched: Mesh) -> None:
    _sigkill_scenario(batched)


def test_ccaas_outage_with_batches(batched: Mesh) -> None:
    _outage_scenario(batched)
