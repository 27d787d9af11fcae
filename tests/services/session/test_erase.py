"""A data-protection request (issue 12 B.6): EraseData removes everything Session stores
about one conversation or one end user, refuses while a handover is open, and leaves
everyone else's data alone — through the real gRPC server and a real Redis."""

from __future__ import annotations

import json

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.cli import main as cli_main
from ccbridge.services.session.__main__ import RunningSession
from ccbridge.services.session.store import ALL_STATES, Lane, SessionStore, agent_message_key
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

Api = tuple[RunningSession, session_pb2_grpc.SessionServiceStub]


def message(cid: str, mid: str, end_user: str) -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        conversation_id=cid,
        direction=common_pb2.DIRECTION_INBOUND,
        channel="WHATSAPP",
        to="447000",
        content_type="TEXT",
        content_json=json.dumps({"text": "my card number is ..."}),
        **{"from": end_user},
    )


async def agent_side(store: SessionStore, cid: str) -> None:
    """An agent reply's dedupe id, a sending mark and an Infobip id sent."""
    reply = common_pb2.Message(id=f"{cid}-agent", content_type="TEXT", content_json="{}")
    assert await store.agent_event(cid, agent_message_key(reply.id), reply.SerializeToString())
    token, _, _, _ = await store.begin_step(Lane.OUTBOX, cid, 60_000)
    assert token
    assert await store.mark_sending(
        cid, token, "item", part=0, done=1, sent_at_ms=0, infobip_id="ib-1"
    )
    await store.release_lease(Lane.OUTBOX, cid, token)


async def closed_handover_with_a_dead_letter(store: SessionStore, cid: str, end_user: str) -> str:
    await store.create(cid, [], {})
    await store.ingest([message(cid, f"{cid}-1", end_user), message(cid, f"{cid}-2", end_user)])
    await store.link_case(cid, "webhook", f"case-{cid}")
    await agent_side(store, cid)
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    (head,) = await store.peek(store.k_in(cid), 1)
    assert await store.dead_letter(Lane.INBOX, cid, token, head, "test", 3)
    await store.release_lease(Lane.INBOX, cid, token)
    ok, _ = await store.transition(
        cid,
        allowed=("OPENING",),
        new_state="CLOSED",
        values={"connector": "webhook", "external_id": f"case-{cid}"},
    )
    assert ok
    await store._index(cid, "CLOSED", "OPENING", 1, due=())
    letters, _ = await store.list_dead_letters(cid, 0, 10)
    return letters[0].id


async def stored_about(store: SessionStore, cid: str) -> list[str]:
    """Every key or index entry that still names ``cid``."""
    left = [
        key
        for key in (
            store.k_h(cid),
            store.k_in(cid),
            store.k_out(cid),
            store.k_seen(cid),
            store.k_dlc(cid),
            store.k_seen_agent(cid),
            store.k_sending(cid),
            store.k_sent_ids(cid),
        )
        if await store.r.exists(key)
    ]
    left += [state for state in ALL_STATES if await store.r.zscore(store.k_state(state), cid)]
    if await store.lookup_case("webhook", f"case-{cid}"):
        left.append("case index")
    return left


async def test_erase_one_conversation(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    letter = await closed_handover_with_a_dead_letter(store, "c-er1", "385911")
    await closed_handover_with_a_dead_letter(store, "c-keep", "385911")
    answer = await stub.EraseData(session_pb2.EraseDataRequest(conversation_id="c-er1"))
    assert list(answer.conversation_ids) == ["c-er1"] and answer.dead_letters == 1
    assert await stored_about(store, "c-er1") == []
    assert await store.get_dead_letter(letter) is None
    assert await store.r.zscore(store.k_dlq, letter) is None
    assert await stored_about(store, "c-keep") != []  # someone else's data stays
    again = await stub.EraseData(session_pb2.EraseDataRequest(conversation_id="c-er1"))
    assert list(again.conversation_ids) == ["c-er1"] and again.dead_letters == 0


async def test_erase_an_end_user_everywhere(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    await closed_handover_with_a_dead_letter(store, "c-a", "385911")
    await closed_handover_with_a_dead_letter(store, "c-b", "385911")
    await closed_handover_with_a_dead_letter(store, "c-other", "44700")
    # A dead letter whose handover already expired is found by its message.
    orphan = await closed_handover_with_a_dead_letter(store, "c-gone", "385911")
    await store.r.delete(store.k_h("c-gone"), store.k_ext("webhook", "case-c-gone"))
    await store.r.zrem(store.k_state("CLOSED"), "c-gone")

    answer = await stub.EraseData(session_pb2.EraseDataRequest(end_user="385911"))

    assert sorted(answer.conversation_ids) == ["c-a", "c-b", "c-gone"]
    assert answer.dead_letters == 3
    for cid in ("c-a", "c-b", "c-gone"):
        assert await stored_about(store, cid) == []
    assert await store.get_dead_letter(orphan) is None
    assert await stored_about(store, "c-other") != []


async def test_open_handovers_are_refused_and_nothing_is_erased(session_api: Api) -> None:
    running, stub = session_api
    store = running.parts.store
    await closed_handover_with_a_dead_letter(store, "c-closed", "385922")
    await store.create("c-open", [], {})
    await store.ingest([message("c-open", "c-open-1", "385922")])
    await store._index("c-open", "OPENING", None, 1, due=())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.EraseData(session_pb2.EraseDataRequest(end_user="385922"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "c-open is OPENING" in (err.value.details() or "")
    assert await stored_about(store, "c-closed") != []
    assert await stored_about(store, "c-open") != []
    for bad in (session_pb2.EraseDataRequest(), session_pb2.EraseDataRequest(end_user="  ")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EraseData(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_cli_asks_for_yes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(["erase", "end-user", "385911", "--session", "127.0.0.1:9"])
    assert done.value.code == 2
    assert "--yes" in capsys.readouterr().err
