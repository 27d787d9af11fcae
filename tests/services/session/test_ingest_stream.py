"""SessionService.IngestStream on the real Session and Redis: batches stored and answered
in order, a bad batch answered with its error while the stream goes on, and draining
ends idle streams at once and busy ones after their batch."""

from __future__ import annotations

import asyncio

import grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.__main__ import RunningSession
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

ACCEPTED = session_pb2.INGEST_OUTCOME_ACCEPTED
DUPLICATE = session_pb2.INGEST_OUTCOME_DUPLICATE
IGNORED = session_pb2.INGEST_OUTCOME_IGNORED


def _batch(batch_id: int, *pairs: tuple[str, str]) -> session_pb2.IngestStreamRequest:
    return session_pb2.IngestStreamRequest(
        batch_id=batch_id,
        messages=[common_pb2.Message(id=mid, conversation_id=cid) for mid, cid in pairs],
    )


async def test_batches_are_stored_and_answered_in_order(
    session_api: tuple[RunningSession, session_pb2_grpc.SessionServiceStub],
) -> None:
    running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="s-1"))
    call = stub.IngestStream()
    await call.write(_batch(7, ("m1", "s-1"), ("m2", "bot")))
    await call.write(_batch(8, ("m1", "s-1"), ("m3", "s-1")))
    await call.write(_batch(9, ("", "s-1")))  # invalid: no message id
    await call.write(_batch(10, ("m4", "s-1")))
    await call.done_writing()
    answers = [answer async for answer in call]
    assert [a.batch_id for a in answers] == [7, 8, 9, 10]
    assert [r.outcome for r in answers[0].results] == [ACCEPTED, IGNORED]
    assert [r.outcome for r in answers[1].results] == [DUPLICATE, ACCEPTED]
    assert answers[2].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "id" in answers[2].error_message and not answers[2].results
    assert [r.message_id for r in answers[3].results] == ["m4"]
    assert await call.code() == grpc.StatusCode.OK
    queued = await running.parts.store.peek(running.parts.store.k_in("s-1"), 10)
    assert [common_pb2.Message.FromString(p).id for p in queued] == ["m1", "m3", "m4"]


async def test_draining_ends_idle_streams_and_busy_ones_after_their_batch(
    session_api: tuple[RunningSession, session_pb2_grpc.SessionServiceStub],
) -> None:
    running, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="s-2"))
    idle = stub.IngestStream()
    busy = stub.IngestStream()
    await idle.write(_batch(1, ("i1", "s-2")))
    assert (await idle.read()).batch_id == 1
    # The busy stream's next batch waits on a slow store while draining starts.
    store = running.parts.store
    original = store.ingest
    release = asyncio.Event()

    async def slow_ingest(messages: object) -> list[int]:
        await release.wait()
        return await original(messages)  # type: ignore[arg-type]

    store.ingest = slow_ingest  # type: ignore[method-assign]
    await busy.write(_batch(2, ("b1", "s-2")))
    await asyncio.sleep(0.1)
    running.parts.servicer.start_draining()
    assert await asyncio.wait_for(idle.code(), 5) == grpc.StatusCode.OK
    release.set()
    answer = await busy.read()
    assert answer.batch_id == 2 and [r.outcome for r in answer.results] == [ACCEPTED]
    assert await asyncio.wait_for(busy.code(), 5) == grpc.StatusCode.OK
