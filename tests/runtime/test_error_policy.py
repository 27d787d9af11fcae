"""The gRPC error policy: every handler kind maps errors the same way (a real grpc.aio
server on port 0), and a Redis outage answers UNAVAILABLE with retry information."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.errors import (
    RETRYABLE_CODES,
    AlreadyExists,
    FailedPrecondition,
    FarSideError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    retry_after_from,
)
from ccbridge.services.runtime.logging import request_id_var, rpc_var
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.server import create_server
from ccbridge.services.session.__main__ import build as build_session
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.services.session.conftest import session_settings
from tests.support.redis_server import free_port

SERVICE = "test.Errors"

REDIS_TRANSIENT: dict[str, Callable[[], Exception]] = {
    "moved": lambda: redis.exceptions.MovedError("3999 127.0.0.1:7001"),
    "ask": lambda: redis.exceptions.AskError("3999 127.0.0.1:7001"),
    "moved_reply": lambda: redis.exceptions.ResponseError("MOVED 3999 127.0.0.1:7001"),
    "ask_reply": lambda: redis.exceptions.ResponseError("ASK 3999 127.0.0.1:7001"),
    "readonly_reply": lambda: redis.exceptions.ResponseError("READONLY You can't write"),
    "oom": lambda: redis.exceptions.OutOfMemoryError("command not allowed when used memory"),
    "clusterdown": lambda: redis.exceptions.ClusterDownError("Hash slot not served"),
    "clusterdown_reply": lambda: redis.exceptions.ResponseError("CLUSTERDOWN Hash slot not"),
    "masterdown": lambda: redis.exceptions.MasterDownError("Link with MASTER is down"),
    "tryagain": lambda: redis.exceptions.TryAgainError("Multiple keys request during"),
    "tryagain_reply": lambda: redis.exceptions.ResponseError("TRYAGAIN Multiple keys"),
    "slot_not_covered": lambda: redis.exceptions.SlotNotCoveredError("slot 3999 not covered"),
}
KINDS = ("UnaryUnary", "UnaryStream", "UnaryStreamWrite", "StreamUnary", "StreamStream")

# What the servicer raises (by name in the request) → (code, retry-after trailer or None).
ERRORS: dict[str, tuple[Callable[[], Exception], grpc.StatusCode, str | None]] = {
    "not_found": (lambda: NotFound("no such handover"), grpc.StatusCode.NOT_FOUND, None),
    "invalid": (lambda: InvalidArgument("bad id"), grpc.StatusCode.INVALID_ARGUMENT, None),
    "precondition": (
        lambda: FailedPrecondition("closed"),
        grpc.StatusCode.FAILED_PRECONDITION,
        None,
    ),
    "exists": (lambda: AlreadyExists("twice"), grpc.StatusCode.ALREADY_EXISTS, None),
    "unauthenticated": (
        lambda: Unauthenticated("bad signature"),
        grpc.StatusCode.UNAUTHENTICATED,
        None,
    ),
    "unavailable": (lambda: Unavailable("peer down"), grpc.StatusCode.UNAVAILABLE, "1.0"),
    "far_side": (
        lambda: FarSideError("CCaaS 503", retryable=True, retry_after=7.5),
        grpc.StatusCode.UNAVAILABLE,
        "7.5",
    ),
    "far_side_refused": (
        lambda: FarSideError("CCaaS 400", retryable=False),
        grpc.StatusCode.FAILED_PRECONDITION,
        None,
    ),
    "redis_down": (
        lambda: redis.exceptions.ConnectionError("Connection refused"),
        grpc.StatusCode.UNAVAILABLE,
        "1.0",
    ),
    "redis_timeout": (
        lambda: redis.exceptions.TimeoutError("Timeout reading"),
        grpc.StatusCode.UNAVAILABLE,
        "1.0",
    ),
    "redis_loading": (
        lambda: redis.exceptions.BusyLoadingError("LOADING Redis is loading"),
        grpc.StatusCode.UNAVAILABLE,
        "1.0",
    ),
    "redis_readonly": (
        lambda: redis.exceptions.ReadOnlyError("READONLY You can't write"),
        grpc.StatusCode.UNAVAILABLE,
        "1.0",
    ),
    "redis_oom_in_script": (
        lambda: redis.exceptions.ResponseError("OOM command not allowed"),
        grpc.StatusCode.UNAVAILABLE,
        "1.0",
    ),
    # Redis replies other than connection loss (a failover, a full Redis, a cluster
    # resharding): redis-py's classes, and the plain ResponseError the raw pipeline and
    # scripts give for the same reply.
    **{
        f"redis_{name}": (error, grpc.StatusCode.UNAVAILABLE, "1.0")
        for name, error in REDIS_TRANSIENT.items()
    },
    "redis_crossslot_bug": (
        lambda: redis.exceptions.ClusterCrossSlotError("CROSSSLOT Keys don't hash to one slot"),
        grpc.StatusCode.INTERNAL,
        None,
    ),
    "peer_timeout": (lambda: TimeoutError(), grpc.StatusCode.UNAVAILABLE, "1.0"),
    "bug": (lambda: KeyError("oops"), grpc.StatusCode.INTERNAL, None),
    "redis_bug": (
        lambda: redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        grpc.StatusCode.INTERNAL,
        None,
    ),
}

seen_context: list[tuple[str, str]] = []


def _fail(request: bytes) -> None:
    seen_context.append((rpc_var.get(), request_id_var.get()))
    raise ERRORS[request.decode()][0]()


async def _unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    _fail(request)
    return b""


async def _unary_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    _fail(request)


async def _unary_stream_write(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.write(b"first")
    _fail(request)


async def _stream_unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    async for request in requests:
        _fail(request)
    return b""


async def _stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"first"
        _fail(request)


def _register(server: grpc.aio.Server) -> list[str]:
    handlers = {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(_unary_unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(_unary_stream),
        "UnaryStreamWrite": grpc.unary_stream_rpc_method_handler(_unary_stream_write),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(_stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(_stream_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return []


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, port, _health = create_server("127.0.0.1:0", _register, tls=INSECURE)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(0)


async def _call(channel: grpc.aio.Channel, kind: str, name: str) -> grpc.aio.AioRpcError:
    method = f"/{SERVICE}/{kind}"
    metadata = (("x-request-id", f"req-{kind}-{name}"),)
    body = name.encode()
    call: Any
    try:
        if kind == "UnaryUnary":
            await channel.unary_unary(method)(body, metadata=metadata, timeout=5)
        elif kind.startswith("UnaryStream"):
            call = channel.unary_stream(method)(body, metadata=metadata, timeout=5)
            assert [m async for m in call] == [b"first"]
        elif kind == "StreamUnary":
            await channel.stream_unary(method)(iter([body]), metadata=metadata, timeout=5)
        else:
            call = channel.stream_stream(method)(iter([body]), metadata=metadata, timeout=5)
            assert [m async for m in call] == [b"first"]
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_every_handler_kind_maps_every_error(
    channel: grpc.aio.Channel, kind: str, name: str
) -> None:
    seen_context.clear()
    error = await _call(channel, kind, name)
    _, code, retry_after = ERRORS[name]
    assert error.code() == code
    trailers = dict(error.trailing_metadata() or ())
    assert trailers.get("ccbridge-retry-after") == retry_after
    # Answers a servicer chose are never retried by the caller's channel.
    assert trailers.get("grpc-retry-pushback-ms") == "-1"
    if code == grpc.StatusCode.INTERNAL:
        assert error.details() == "internal error"  # no detail of a bug leaks
    assert seen_context == [(kind, f"req-{kind}-{name}")]


def test_internal_is_not_retryable_and_the_reader_reads_the_trailer() -> None:
    assert grpc.StatusCode.INTERNAL not in RETRYABLE_CODES
    assert grpc.StatusCode.UNKNOWN not in RETRYABLE_CODES
    assert grpc.StatusCode.UNAVAILABLE in RETRYABLE_CODES


async def test_redis_outage_on_unary_and_stream_rpcs_is_unavailable() -> None:
    """Session pointed at a Redis nobody listens on: the unary call answers UNAVAILABLE
    with retry information, the stream answers its batch UNAVAILABLE."""
    closed = free_port()
    running = await start(build_session, session_settings(f"redis://127.0.0.1:{closed}/0"))
    try:
        async with grpc.aio.insecure_channel(running.address) as ch:
            stub = session_pb2_grpc.SessionServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetHandover(
                    session_pb2.GetHandoverRequest(conversation_id="c-1"), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_after_from(caught.value) == 1.0

            call = stub.IngestStream(timeout=10)
            await call.write(
                session_pb2.IngestStreamRequest(
                    batch_id=1, messages=[common_pb2.Message(id="m-1", conversation_id="c-1")]
                )
            )
            await call.done_writing()
            answers = [answer async for answer in call]
            assert [(a.batch_id, a.error_code) for a in answers] == [
                (1, grpc.StatusCode.UNAVAILABLE.value[0])
            ]
    finally:
        await running.stop()


async def test_redis_outage_in_a_stream_handler_carries_retry_information() -> None:
    closed = free_port()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed}/0")

    async def streamed(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        await client.get("k")

    def register(server: grpc.aio.Server) -> list[str]:
        handler = grpc.unary_stream_rpc_method_handler(streamed)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Redis": handler}),)
        )
        return []

    server, port, _health = create_server("127.0.0.1:0", register, tls=INSECURE)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_stream(f"/{SERVICE}/Redis")(b"", timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_after_from(caught.value) == 1.0
    finally:
        await server.stop(0)
        await client.aclose()
