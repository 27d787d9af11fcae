"""A handover's timeline and DiscardDeadLetter, through the real Session server and Redis."""

from __future__ import annotations

import grpc
import pytest

from ccbridge.services.session.store import Finishing, Lane
from ccbridge.session.v1 import session_pb2
from tests.services.session.test_servicer import Api, _dead_letter_of, msg

K = session_pb2.TimelineEventKind


async def _timeline(stub: object, cid: str) -> list[session_pb2.TimelineEvent]:
    assert hasattr(stub, "GetTimeline")
    reply = await stub.GetTimeline(session_pb2.GetTimelineRequest(conversation_id=cid))
    return list(reversed(reply.events))  # oldest first


async def test_timeline_records_each_step_without_text(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    cid = "tl-1"
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id=cid))
    await stub.Ingest(
        session_pb2.IngestRequest(messages=[msg(cid, "m1", "secret words"), msg(cid, "m2")])
    )
    await stub.Ingest(session_pb2.IngestRequest(messages=[msg(cid, "m1")]))  # duplicate
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    head = await store.peek(store.k_in(cid), 1)
    await store.finish(Lane.INBOX, [Finishing(cid, token, head)])
    await store.release_lease(Lane.INBOX, cid, token)
    await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id=cid, initiator=session_pb2.CLOSE_INITIATOR_OPERATOR, reason="done"
        )
    )
    events = await _timeline(stub, cid)
    seen = [(K.Name(e.kind), e.queue, e.message_id, e.state) for e in events]
    assert seen == [
        ("TIMELINE_EVENT_KIND_STATE", "", "", "OPENING"),
        ("TIMELINE_EVENT_KIND_STORED", "inbox", "m1", ""),
        ("TIMELINE_EVENT_KIND_STORED", "inbox", "m2", ""),
        ("TIMELINE_EVENT_KIND_DELIVERED", "inbox", "m1", ""),
        ("TIMELINE_EVENT_KIND_STATE", "", "", "CLOSING"),
    ]
    assert all(e.at.ToMilliseconds() > 0 for e in events)
    assert b"secret words" not in b"".join(await store.r.lrange(store.k_tl(cid), 0, -1))
    assert 0 < await store.r.ttl(store.k_tl(cid)) <= store.timeline_ttl_s


async def test_dead_letters_replay_and_discard_are_on_the_timeline(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    first = await _dead_letter_of(running, stub, "tl-2")
    await stub.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=first))
    token, _, _, _ = await store.begin_step(Lane.INBOX, "tl-2", 60_000)
    assert token
    (head,) = await store.peek(store.k_in("tl-2"), 1)
    assert await store.dead_letter(Lane.INBOX, "tl-2", token, head, "gave up", 5)
    await store.release_lease(Lane.INBOX, "tl-2", token)
    (letter,), _ = await store.list_dead_letters("tl-2", 0, 10)
    done = await stub.DiscardDeadLetter(session_pb2.DiscardDeadLetterRequest(id=letter.id))
    assert done.conversation_id == "tl-2"
    assert await store.get_dead_letter(letter.id) is None
    assert (await store.get("tl-2")).get_int("dead_letters") == 0  # type: ignore[union-attr]
    kinds = [
        K.Name(e.kind).removeprefix("TIMELINE_EVENT_KIND_") for e in await _timeline(stub, "tl-2")
    ]
    assert kinds == ["STATE", "STORED", "DEAD_LETTERED", "REPLAYED", "DEAD_LETTERED", "DISCARDED"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DiscardDeadLetter(session_pb2.DiscardDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_erase_deletes_the_timeline_and_bad_requests_are_refused(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="tl-3"))
    await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id="tl-3", initiator=session_pb2.CLOSE_INITIATOR_OPERATOR
        )
    )
    await store.transition("tl-3", allowed=("CLOSING",), new_state="CLOSED")
    assert await store.r.exists(store.k_tl("tl-3"))
    await stub.EraseData(session_pb2.EraseDataRequest(conversation_id="tl-3"))
    assert not await store.r.exists(store.k_tl("tl-3"))
    assert await _timeline(stub, "tl-3") == []
    for bad in (
        session_pb2.GetTimelineRequest(conversation_id="../x"),
        session_pb2.GetTimelineRequest(conversation_id="tl-3", limit=501),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTimeline(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DiscardDeadLetter(session_pb2.DiscardDeadLetterRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_timeline_that_cannot_be_written_fails_nothing(
    session_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    running, stub = session_api
    store = running.parts.store
    cid = "tl-4"
    # A key of the wrong type: every timeline write fails (as a Redis ACL without the
    # key family would refuse it), and what it records must happen all the same.
    await store.r.set(store.k_tl(cid), "not a list")
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id=cid))
    reply = await stub.Ingest(session_pb2.IngestRequest(messages=[msg(cid, "m1"), msg(cid, "m2")]))
    assert [r.outcome for r in reply.results] == [session_pb2.INGEST_OUTCOME_ACCEPTED] * 2
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    (first, second) = await store.peek(store.k_in(cid), 2)
    (done,) = await store.finish(Lane.INBOX, [Finishing(cid, token, [first])])
    assert done.popped == 1
    assert await store.dead_letter(Lane.INBOX, cid, token, second, "gave up", 5)
    await store.release_lease(Lane.INBOX, cid, token)
    assert await store.r.llen(store.k_in(cid)) == 0
    assert (await store.get(cid)).get_int("dead_letters") == 1  # type: ignore[union-attr]
    assert any("timeline event was not recorded" in r.getMessage() for r in caplog.records)
    assert await store.r.get(store.k_tl(cid)) == b"not a list"
