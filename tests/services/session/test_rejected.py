"""REJECTED handovers (routing refused them, e.g. outside opening hours) through the
Session API: no messages taken, a new escalation or RetryHandover reopens, an operator
close ends them."""

from __future__ import annotations

import json

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.__main__ import RunningSession
from ccbridge.services.session.store import Lane, SessionStore
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

Api = tuple[RunningSession, session_pb2_grpc.SessionServiceStub]


async def _rejected(store: SessionStore, cid: str) -> None:
    """What the worker does when routing rejects (services/session/worker.py)."""
    assert await store.create(cid, [], {})
    ok, _ = await store.transition(
        cid,
        allowed=("OPENING",),
        new_state="REJECTED",
        values={"failure_reason": "outside_hours", "routing": '{"rule":"desk"}'},
    )
    assert ok
    await store.finish_rejected(cid)


async def test_a_rejected_handover_shows_why_and_takes_no_messages(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    await _rejected(store, "r-1")
    handover = (
        await stub.GetHandover(session_pb2.GetHandoverRequest(conversation_id="r-1"))
    ).handover
    assert handover.state == session_pb2.HANDOVER_STATE_REJECTED
    assert handover.failure_reason == "outside_hours"
    assert handover.routing.rule == "desk"
    assert 0 < await store.r.ttl(store.k_h("r-1")) <= store.closed_retention_s
    message = common_pb2.Message(
        id="m1",
        conversation_id="r-1",
        direction=common_pb2.DIRECTION_INBOUND,
        content_json=json.dumps({"text": "hello?"}),
    )
    ingested = await stub.Ingest(session_pb2.IngestRequest(messages=[message]))
    assert [r.outcome for r in ingested.results] == [session_pb2.INGEST_OUTCOME_IGNORED]
    listed = await stub.ListHandovers(
        session_pb2.ListHandoversRequest(state=session_pb2.HANDOVER_STATE_REJECTED)
    )
    assert [h.conversation_id for h in listed.handovers] == ["r-1"]


async def test_escalating_again_starts_a_new_opening_that_does_not_expire(
    session_api: Api,
) -> None:
    running, stub = session_api
    store = running.parts.store
    await _rejected(store, "r-2")
    again = await stub.Escalate(session_pb2.EscalateRequest(conversation_id="r-2"))
    assert again.created
    assert again.handover.state == session_pb2.HANDOVER_STATE_OPENING
    assert again.handover.failure_reason == ""
    assert await store.r.ttl(store.k_h("r-2")) == -1
    assert await store.scheduled(Lane.INBOX, "r-2")
    # An OPENING handover escalated again is a no-op as before.
    third = await stub.Escalate(session_pb2.EscalateRequest(conversation_id="r-2"))
    assert not third.created


async def test_retry_and_close_of_a_rejected_handover(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    await _rejected(store, "r-3")
    retried = await stub.RetryHandover(session_pb2.RetryHandoverRequest(conversation_id="r-3"))
    assert retried.handover.state == session_pb2.HANDOVER_STATE_OPENING
    await _rejected(store, "r-4")
    closed = await stub.CloseHandover(session_pb2.CloseHandoverRequest(conversation_id="r-4"))
    assert closed.handover.state == session_pb2.HANDOVER_STATE_CLOSED
