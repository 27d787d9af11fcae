"""A handover's timeline and DiscardDeadLetter, through the real Session server and Redis."""

from __future__ import annotations

import grpc
import pytest

from ccbridge.services.session.store import Finishing, Lane
from ccbridge.services.session.timeline import (
    HASH_DETAIL_MAX,
    TIMELINE_MAX,
    EventKind,
    TimelineEvent,
    merged,
    state_events,
    state_field,
)
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
    # An idle handover owns no timeline key: its state changes are in its hash.
    assert not await store.r.exists(store.k_tl(cid))
    assert [K.Name(e.kind) for e in await _timeline(stub, cid)] == ["TIMELINE_EVENT_KIND_STATE"]
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
    assert [e.detail for e in events if e.state] == ["", "done"]
    assert await store.r.object("encoding", store.k_h(cid)) == b"listpack"
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
    await store.record("tl-3", TimelineEvent(1, EventKind.REPLAYED, "inbox", "m1"))
    assert await store.r.exists(store.k_tl("tl-3"))
    states = [e.state for e in await _timeline(stub, "tl-3") if e.state]
    assert states == ["OPENING", "CLOSING", "CLOSED"]
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


async def test_a_long_reason_is_cut_so_the_hash_stays_compact(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    cid = "tl-5"
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id=cid))
    reason = "é" * 200  # 400 bytes: cut at a character boundary
    assert await store.transition(
        cid, allowed=("OPENING",), new_state="FAILED", values={"failure_reason": reason}
    ) == (True, "OPENING")
    # No change of state: no second record of it.
    await store.transition(cid, allowed=("FAILED",), new_state="FAILED")
    (failed, opening) = (
        await stub.GetTimeline(session_pb2.GetTimelineRequest(conversation_id=cid))
    ).events
    assert (opening.state, failed.state) == ("OPENING", "FAILED")
    assert failed.detail == "é" * (HASH_DETAIL_MAX // 2)
    # Within hash-max-listpack-value: the timeline never turns the hash into a hashtable.
    fields = await store.r.hgetall(store.k_h(cid))
    (kept,) = [v for k, v in fields.items() if k.startswith(b"tl:")]
    assert len(kept) == HASH_DETAIL_MAX
    assert not await store.r.exists(store.k_tl(cid))
    # A close at the CCaaS records its reason with the state.
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="tl-6"))
    assert await store.transition("tl-6", allowed=("OPENING",), new_state="ACTIVE") == (
        True,
        "OPENING",
    )
    assert await store.agent_event("tl-6", "c:e1", None, "agent left") == 3
    events = (await stub.GetTimeline(session_pb2.GetTimelineRequest(conversation_id="tl-6"))).events
    assert [(e.state, e.detail) for e in events] == [
        ("CLOSING", "closed at the CCaaS: agent left"),
        ("ACTIVE", ""),
        ("OPENING", ""),
    ]
    assert (
        await stub.GetTimeline(session_pb2.GetTimelineRequest(conversation_id="tl-6", limit=2))
    ).events == events[:2]


def test_list_entries_are_compact_and_unreadable_ones_are_skipped() -> None:
    event = TimelineEvent(1_765_000_000_000, EventKind.DEAD_LETTERED, "outbox", "a|b", detail="x|y")
    raw = event.encode()
    assert raw == b"mitvfg1s|xo|3|a|bx|y"
    assert TimelineEvent.decode(raw) == event
    for kind in set(EventKind) - {EventKind.STATE}:
        plain = TimelineEvent(36, kind, "inbox", "m-1")
        assert TimelineEvent.decode(plain.encode()) == plain
    state = TimelineEvent(5, EventKind.STATE, state="ACTIVE", detail="d")
    assert TimelineEvent.decode(state.encode()) == state
    for bad in (b"", b"{}", b'{"t":1,"k":"stored"}', b"1|?|", b"1|s|z|m", b"1|sq||", b"\xff|s||"):
        assert TimelineEvent.decode(bad) is None


def test_state_events_come_from_the_history_with_their_details() -> None:
    fields = {
        "created_at": "1000",
        "history": "OPENING@0,ACTIVE@5,junk,FAILED@x,CLOSING@9",
        state_field(1009, "CLOSING"): "bye",
        state_field(1005, "FAILED"): "not this one",
    }
    assert state_events(fields) == [
        TimelineEvent(1000, EventKind.STATE, state="OPENING"),
        TimelineEvent(1005, EventKind.STATE, state="ACTIVE"),
        TimelineEvent(1009, EventKind.STATE, state="CLOSING", detail="bye"),
    ]
    assert state_events({"created_at": "no", "history": "OPENING@0"}) == []
    assert state_events({}) == []
    stored = [TimelineEvent(t, EventKind.STORED, "inbox", f"m{t}") for t in (1007, 1003)]
    assert [e.at_ms for e in merged(state_events(fields), stored, 10)] == [
        1009,
        1007,
        1005,
        1003,
        1000,
    ]
    many = [TimelineEvent(t, EventKind.STORED) for t in range(TIMELINE_MAX + 10, 0, -1)]
    assert len(merged(state_events(fields), many, 10_000)) == TIMELINE_MAX
