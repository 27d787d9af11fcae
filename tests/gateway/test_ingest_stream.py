"""The gateway's IngestStream client (gateway/ingest_stream.py) against real grpc.aio
servers: few long-lived streams, renewal by age, a batch sent again after its stream
broke, the deadline, and the unary fallback for a Session without the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import httpx
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.gateway.ingest_stream import IngestStreams
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers
from tests.gateway.test_infobip_legacy import CONV, infobip_message

URL = f"/webhooks/infobip/{WEBHOOK_TOKEN}"


async def test_webhooks_share_a_few_long_lived_streams(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    for i in range(20):
        answer = await gateway.post(URL, json=infobip_message(f"s{i}"))
        assert answer.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
    assert len(peers.session.rpc_calls("Ingest")) == 20
    assert 1 <= peers.session.streams_opened <= 2


async def test_an_older_session_without_the_stream_gets_unary_calls(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    peers.session.streams = False  # answers IngestStream with UNIMPLEMENTED
    for i in range(3):
        answer = await gateway.post(URL, json=infobip_message(f"u{i}"))
        assert answer.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
    assert [len(c.request.messages) for c in peers.session.rpc_calls("Ingest")] == [1, 1, 1]
    assert peers.session.streams_opened == 0


class ScriptedSession(session_pb2_grpc.SessionServiceServicer):
    """IngestStream only. ``break_first``: the first stream reads one batch and fails
    with UNAVAILABLE without answering (a Session dying mid-batch). ``silent``: batches
    are read and never answered."""

    def __init__(self) -> None:
        self.break_first = False
        self.silent = False
        self.streams = 0
        self.ended = 0
        self.batches: list[tuple[int, list[str]]] = []  # (stream number, message ids)

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[session_pb2.IngestStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[session_pb2.IngestStreamResponse]:
        self.streams += 1
        number = self.streams
        try:
            async for batch in request_iterator:
                self.batches.append((number, [m.id for m in batch.messages]))
                if self.break_first and number == 1:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
                if self.silent:
                    continue
                yield session_pb2.IngestStreamResponse(
                    batch_id=batch.batch_id,
                    results=[
                        session_pb2.IngestResult(
                            message_id=m.id, outcome=session_pb2.INGEST_OUTCOME_ACCEPTED
                        )
                        for m in batch.messages
                    ],
                )
        finally:
            self.ended += 1


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedSession, grpc.aio.Channel]]:
    servicer = ScriptedSession()
    server = grpc.aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        await channel.close()
        await server.stop(0)


def _streams(
    channel: grpc.aio.Channel, *, timeout_s: float = 5.0, max_age_s: float = 30.0
) -> tuple[IngestStreams, list[grpc.StatusCode], list[int]]:
    stub = session_pb2_grpc.SessionServiceStub(channel)
    errors: list[grpc.StatusCode] = []
    unary_calls: list[int] = []

    async def unary(messages: list[common_pb2.Message]) -> Sequence[session_pb2.IngestResult]:
        unary_calls.append(len(messages))
        raise AssertionError("the stream path was expected")

    streams = IngestStreams(
        lambda: stub,  # type: ignore[arg-type,return-value]
        unary,
        timeout_s=timeout_s,
        on_error=errors.append,
        max_age_s=max_age_s,
    )
    return streams, errors, unary_calls


def _batch(*ids: str) -> list[common_pb2.Message]:
    return [common_pb2.Message(id=i, conversation_id="c1") for i in ids]


async def test_old_streams_take_no_new_batches_and_are_closed(
    scripted: tuple[ScriptedSession, grpc.aio.Channel],
) -> None:
    servicer, channel = scripted
    streams, errors, _unary = _streams(channel, max_age_s=0.0)
    try:
        for i in range(4):
            results = await streams.send(_batch(f"a{i}", f"b{i}"))
            assert [r.message_id for r in results] == [f"a{i}", f"b{i}"]
        assert servicer.streams == 4  # every send found the previous stream too old
        for _ in range(100):  # half-closed: Session ends each retired one
            if servicer.ended >= 3:
                break
            await asyncio.sleep(0.01)
        assert servicer.ended >= 3
        assert errors == []
    finally:
        await streams.aclose()


async def test_a_batch_is_sent_again_when_its_stream_breaks(
    scripted: tuple[ScriptedSession, grpc.aio.Channel],
) -> None:
    servicer, channel = scripted
    servicer.break_first = True
    streams, errors, _unary = _streams(channel)
    try:
        results = await streams.send(_batch("m1", "m2"))
        assert [r.outcome for r in results] == [session_pb2.INGEST_OUTCOME_ACCEPTED] * 2
        assert servicer.batches == [(1, ["m1", "m2"]), (2, ["m1", "m2"])]
        assert errors == []
    finally:
        await streams.aclose()


async def test_an_unanswered_batch_fails_at_its_deadline_and_its_stream_is_dropped(
    scripted: tuple[ScriptedSession, grpc.aio.Channel],
) -> None:
    servicer, channel = scripted
    servicer.silent = True
    streams, errors, _unary = _streams(channel, timeout_s=0.3)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await streams.send(_batch("m1"))
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert errors == [grpc.StatusCode.DEADLINE_EXCEEDED]
        for _ in range(100):  # the stuck stream was cancelled: its handler ends
            if servicer.ended:
                break
            await asyncio.sleep(0.01)
        assert servicer.ended == 1
        servicer.silent = False
        results = await streams.send(_batch("m2"))
        assert [r.message_id for r in results] == ["m2"]
        assert servicer.batches[-1][0] != servicer.batches[0][0]  # on another stream
    finally:
        await streams.aclose()
