"""Session API through a real grpc.aio server and a real Redis (worker disabled)."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.handover_limits import MAX_TAG_CHARS, MAX_TAGS
from ccbridge.services.session.__main__ import RunningSession
from ccbridge.services.session.store import PARK_MAX, Lane
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.runtime.test_infobip_client import BAD_IDS

Api = tuple[RunningSession, session_pb2_grpc.SessionServiceStub]
IN = common_pb2.DIRECTION_INBOUND


def msg(cid: str, mid: str, text: str = "hi") -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        conversation_id=cid,
        direction=IN,
        channel="WHATSAPP",
        to="447000",
        content_type="TEXT",
        content_json=json.dumps({"text": text}),
        **{"from": "385911"},
    )


async def test_escalate_is_idempotent(session_api: Api) -> None:
    _, stub = session_api
    first = await stub.Escalate(
        session_pb2.EscalateRequest(conversation_id="c-1", tags=["vip"], metadata={"lang": "de"})
    )
    again = await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-1"))
    assert first.created and not again.created
    assert again.handover.state == session_pb2.HANDOVER_STATE_OPENING
    assert list(again.handover.tags) == ["vip"]
    assert dict(again.handover.metadata) == {"lang": "de"}
    # Not routed yet: no routing decision (the HTTP view shows null, docs/http-api.md).
    assert not again.handover.HasField("routing")


async def test_escalate_rejects_bad_ids(session_api: Api) -> None:
    _, stub = session_api
    for bad in ("", "a b", "x" * 129, "c/1", *BAD_IDS):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Escalate(session_pb2.EscalateRequest(conversation_id=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetHandover(session_pb2.GetHandoverRequest(conversation_id=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_ingest_outcomes_and_order(session_api: Api) -> None:
    running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-2"))
    res = await stub.Ingest(
        session_pb2.IngestRequest(
            messages=[msg("c-2", "m1"), msg("bot-only", "m2"), msg("c-2", "m3"), msg("c-2", "m1")]
        )
    )
    assert [r.outcome for r in res.results] == [
        session_pb2.INGEST_OUTCOME_ACCEPTED,
        session_pb2.INGEST_OUTCOME_IGNORED,
        session_pb2.INGEST_OUTCOME_ACCEPTED,
        session_pb2.INGEST_OUTCOME_DUPLICATE,
    ]
    queued = await running.parts.store.r.lrange(running.parts.store.k_in("c-2"), 0, -1)
    assert [common_pb2.Message.FromString(q).id for q in queued] == ["m1", "m3"]
    handover = (
        await stub.GetHandover(session_pb2.GetHandoverRequest(conversation_id="c-2"))
    ).handover
    assert handover.inbox_pending == 2
    assert handover.end_user == "385911" and handover.business_sender == "447000"


async def test_ingest_requires_ids(session_api: Api) -> None:
    _, stub = session_api
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Ingest(session_pb2.IngestRequest(messages=[msg("c", "")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for bad in BAD_IDS:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Ingest(session_pb2.IngestRequest(messages=[msg("c", "m1"), msg(bad, "m2")]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_unknown_is_not_found(session_api: Api) -> None:
    _, stub = session_api
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetHandover(session_pb2.GetHandoverRequest(conversation_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_by_state_is_paged(session_api: Api) -> None:
    _, stub = session_api
    for i in range(5):
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id=f"l-{i}"))
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListHandovers(
            session_pb2.ListHandoversRequest(
                state=session_pb2.HANDOVER_STATE_OPENING, page_size=2, page_token=token
            )
        )
        seen += [h.conversation_id for h in page.handovers]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"l-{i}" for i in range(5)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListHandovers(
            session_pb2.ListHandoversRequest(
                state=session_pb2.HANDOVER_STATE_OPENING, page_token="!!"
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_case_events_need_a_linked_case(session_api: Api) -> None:
    running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-3"))
    await running.parts.store.link_case("c-3", "webhook", "case-9")
    agent = common_pb2.Message(id="a1", content_type="TEXT", content_json='{"text":"hello"}')
    events = [
        session_pb2.CaseEvent(
            connector="webhook", external_id="case-9", event_id="e1", agent_message=agent
        ),
        session_pb2.CaseEvent(
            connector="webhook", external_id="case-9", event_id="e1", agent_message=agent
        ),
        session_pb2.CaseEvent(
            connector="webhook", external_id="unknown", event_id="e2", agent_message=agent
        ),
        session_pb2.CaseEvent(
            connector="webhook",
            external_id="case-9",
            event_id="e3",
            case_closed=session_pb2.CaseClosed(reason="resolved"),
        ),
    ]
    res = await stub.ReportCaseEvents(session_pb2.ReportCaseEventsRequest(events=events))
    # The event of a case not linked yet is parked, not ignored (test_parked.py).
    assert (res.accepted, res.duplicates, res.ignored) == (3, 1, 0)
    assert await running.parts.store.r.llen(running.parts.store.k_park("webhook", "unknown")) == 1
    handover = (
        await stub.GetHandover(
            session_pb2.GetHandoverRequest(connector="webhook", external_id="case-9")
        )
    ).handover
    assert handover.state == session_pb2.HANDOVER_STATE_CLOSING
    assert handover.closed_by == session_pb2.CLOSE_INITIATOR_CCAAS
    assert handover.outbox_pending == 1
    # CLOSING by the CCaaS: end-user messages are no longer relayed.
    res2 = await stub.Ingest(session_pb2.IngestRequest(messages=[msg("c-3", "late")]))
    assert res2.results[0].outcome == session_pb2.INGEST_OUTCOME_IGNORED


async def test_a_case_not_linked_parks_a_bounded_number_of_events(session_api: Api) -> None:
    """Parked events are acknowledged (accepted); beyond the bound the sender is told to
    retry (the gateway answers 503 + Retry-After), what was parked stays parked."""
    _running, stub = session_api

    def reply(i: int) -> session_pb2.CaseEvent:
        agent = common_pb2.Message(id=f"r{i}", content_type="TEXT", content_json='{"text":"x"}')
        return session_pb2.CaseEvent(
            connector="webhook", external_id="case-late", event_id=f"e{i}", agent_message=agent
        )

    events = [reply(i) for i in range(PARK_MAX)]
    res = await stub.ReportCaseEvents(session_pb2.ReportCaseEventsRequest(events=events))
    assert (res.accepted, res.duplicates, res.ignored) == (PARK_MAX, 0, 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportCaseEvents(
            session_pb2.ReportCaseEventsRequest(events=[reply(0), reply(PARK_MAX)])
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_close_and_retry_rules(session_api: Api) -> None:
    _running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-4"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RetryHandover(session_pb2.RetryHandoverRequest(conversation_id="c-4"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    closed = await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id="c-4", initiator=session_pb2.CLOSE_INITIATOR_INFOBIP
        )
    )
    assert closed.handover.state == session_pb2.HANDOVER_STATE_CLOSING
    assert closed.handover.closed_by == session_pb2.CLOSE_INITIATOR_INFOBIP
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendAgentMessage(
            session_pb2.SendAgentMessageRequest(
                conversation_id="c-4", message=common_pb2.Message(content_json='{"text":"x"}')
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_close_older_than_the_handover_leaves_it_open(session_api: Api) -> None:
    _running, stub = session_api
    created = (
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-old-close"))
    ).handover.created_at
    earlier = Timestamp()
    earlier.FromMilliseconds(created.ToMilliseconds() - 1)
    ignored = await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id="c-old-close",
            initiator=session_pb2.CLOSE_INITIATOR_INFOBIP,
            event_time=earlier,
        )
    )
    assert ignored.handover.state == session_pb2.HANDOVER_STATE_OPENING
    assert ignored.handover.created_at == created
    closed = await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id="c-old-close",
            initiator=session_pb2.CLOSE_INITIATOR_INFOBIP,
            event_time=created,  # not older: closes
        )
    )
    assert closed.handover.state == session_pb2.HANDOVER_STATE_CLOSING


async def test_send_agent_message_validates_and_dedupes(session_api: Api) -> None:
    _, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-5"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendAgentMessage(
            session_pb2.SendAgentMessageRequest(
                conversation_id="c-5", message=common_pb2.Message(content_json="nope")
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    m = common_pb2.Message(id="k1", content_json='{"text":"hello"}')
    first = await stub.SendAgentMessage(
        session_pb2.SendAgentMessageRequest(conversation_id="c-5", message=m)
    )
    second = await stub.SendAgentMessage(
        session_pb2.SendAgentMessageRequest(conversation_id="c-5", message=m)
    )
    assert (first.duplicate, second.duplicate) == (False, True)


async def test_bad_utf8_is_invalid_argument(session_api: Api) -> None:
    # A lone surrogate in agent text reaches the server as bad UTF-8 (no client library
    # encodes it): the one error policy answers INVALID_ARGUMENT, not grpc's UNKNOWN.
    running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-utf8"))
    request = session_pb2.SendAgentMessageRequest(conversation_id="c-utf8")
    request.message.content_json = '{"text": "XXX"}'
    for bad in (b"\xed\xa0\x80", b"a\xed\xbf\xbf", b"\xff"):
        raw = request.SerializeToString().replace(b"XXX", bad)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary("/ccbridge.session.v1.SessionService/SendAgentMessage")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(raw, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    queued = await running.parts.store.r.llen(running.parts.store.k_out("c-utf8"))
    assert queued == 0


async def test_tag_limits_are_the_gateways(session_api: Api) -> None:
    # One limit for the gateway and Session (a request the gateway accepts never fails
    # at Session): MAX_TAGS tags of MAX_TAG_CHARS characters pass, one more does not.
    _, stub = session_api
    tags = [f"t{i}".ljust(MAX_TAG_CHARS, "x") for i in range(MAX_TAGS)]
    assert MAX_TAGS == 100  # the documented limit (docs/http-api.md)
    created = await stub.Escalate(session_pb2.EscalateRequest(conversation_id="tags", tags=tags))
    assert list(created.handover.tags) == tags
    for bad in ([*tags, "one-more"], ["x" * (MAX_TAG_CHARS + 1)], [""]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Escalate(session_pb2.EscalateRequest(conversation_id="tags-2", tags=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _dead_letter_of(running: RunningSession, stub: object, cid: str) -> str:
    """Escalates ``cid``, ingests one message and moves it to the dead letters (as the
    worker does after its attempts); returns the dead letter's id."""
    store = running.parts.store
    assert isinstance(stub, session_pb2_grpc.SessionServiceStub)
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id=cid))
    await stub.Ingest(session_pb2.IngestRequest(messages=[msg(cid, f"{cid}-m1")]))
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    (head,) = await store.peek(store.k_in(cid), 1)
    assert await store.dead_letter(Lane.INBOX, cid, token, head, "test", 3)
    await store.release_lease(Lane.INBOX, cid, token)
    letters, _ = await store.list_dead_letters(cid, 0, 10)
    return letters[0].id


async def test_replay_dead_letter_requeues_once(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    dl_id = await _dead_letter_of(running, stub, "c-dl1")
    assert await store.r.llen(store.k_in("c-dl1")) == 0
    done = await stub.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=dl_id))
    assert done.conversation_id == "c-dl1"
    assert await store.r.llen(store.k_in("c-dl1")) == 1
    assert (await store.get("c-dl1")).get_int("dead_letters") == 0  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the letter is gone now
        await stub.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=dl_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await store.r.llen(store.k_in("c-dl1")) == 1


async def test_replay_into_a_closed_handover_is_refused(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    dl_id = await _dead_letter_of(running, stub, "c-dl2")
    ok, _ = await store.transition("c-dl2", allowed=("OPENING",), new_state="CLOSED")
    assert ok
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=dl_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is CLOSED" in (err.value.details() or "")
    # Nothing queued, and the letter is still there for the operator.
    assert await store.r.llen(store.k_in("c-dl2")) == 0
    assert await store.get_dead_letter(dl_id) is not None


async def test_replay_of_an_expired_handover_is_refused(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    dl_id = await _dead_letter_of(running, stub, "c-dl3")
    await store.r.delete(store.k_h("c-dl3"), store.k_in("c-dl3"))  # as retention would
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=dl_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no longer exists" in (err.value.details() or "")
    # No stateless handover hash left behind for the worker to spin on.
    assert not await store.r.exists(store.k_h("c-dl3"))
    assert not await store.r.llen(store.k_in("c-dl3"))
    assert await store.get_dead_letter(dl_id) is not None


async def test_message_ids_with_control_characters_are_refused(session_api: Api) -> None:
    _, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-ids"))
    calls = [
        stub.Ingest(
            session_pb2.IngestRequest(
                messages=[common_pb2.Message(id="a\r\nb", conversation_id="c-ids")]
            )
        ),
        stub.SendAgentMessage(
            session_pb2.SendAgentMessageRequest(
                conversation_id="c-ids",
                message=common_pb2.Message(id="a\nb", content_json='{"text":"x"}'),
            )
        ),
        stub.ReportCaseEvents(
            session_pb2.ReportCaseEventsRequest(
                events=[
                    session_pb2.CaseEvent(connector="webhook", external_id="C-1", event_id="e\r\n1")
                ]
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
