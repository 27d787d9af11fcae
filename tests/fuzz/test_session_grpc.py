"""Hypothesis over the request fields of every Session RPC: sequences of random
(well-formed) protobuf requests sent to the real Session server (port 0, the test
Redis), so that later calls meet the state earlier ones made (escalated handovers,
ingested messages, closes, dead letters).

Invariant: every call succeeds or fails with a status that names the caller's problem
or the state (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...): never INTERNAL or
UNKNOWN (an exception the servicer did not map), never a hang past the deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from ccbridge.services.runtime.component import start
from ccbridge.services.session.__main__ import build
from ccbridge.session.v1 import session_pb2
from tests.fuzz.conftest import fuzz_examples, fuzz_settings
from tests.fuzz.strategies import proto_message
from tests.services.session.conftest import session_settings

pytestmark = pytest.mark.fuzz

SERVICE = session_pb2.DESCRIPTOR.services_by_name["SessionService"]
METHODS = list(SERVICE.methods)
DEADLINE_S = 15.0
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


def _call(method: MethodDescriptor) -> st.SearchStrategy[tuple[MethodDescriptor, Any]]:
    request = proto_message(method.input_type)
    if method.client_streaming:
        return st.tuples(st.just(method), st.lists(request, min_size=1, max_size=3))
    return st.tuples(st.just(method), request)


CALLS = st.lists(st.one_of([_call(method) for method in METHODS]), min_size=1, max_size=4)


@pytest.fixture
async def session_channel(redis_url: str, redis_client: object) -> AsyncIterator[grpc.aio.Channel]:
    running = await start(build, session_settings(redis_url))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield channel
    finally:
        await channel.close()
        await running.stop()


async def invoke(channel: grpc.aio.Channel, method: MethodDescriptor, request: Any) -> None:
    path = f"/{SERVICE.full_name}/{method.name}"
    response_cls = message_factory.GetMessageClass(method.output_type)

    def serialize(message: Message) -> bytes:
        return message.SerializeToString()

    if method.client_streaming:
        stream = channel.stream_stream(
            path, request_serializer=serialize, response_deserializer=response_cls.FromString
        )
        async for _ in stream(iter(request), timeout=DEADLINE_S):
            pass
        return
    unary = channel.unary_unary(
        path, request_serializer=serialize, response_deserializer=response_cls.FromString
    )
    await unary(request, timeout=DEADLINE_S)


@given(calls=CALLS)
@fuzz_settings(fuzz_examples(120))
async def test_random_requests_never_internal(
    session_channel: grpc.aio.Channel, calls: list[tuple[MethodDescriptor, Any]]
) -> None:
    for method, request in calls:
        try:
            await invoke(session_channel, method, request)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() not in REFUSED, (method.name, exc.code(), exc.details())


def _mutated(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """A valid request's bytes with a few bytes changed, cut short or extended."""

    def mutate(raw: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(raw)
        for position, value in flips:
            if data:
                data[position % len(data)] = value
        return bytes(data[: max(0, len(data) - cut)]) + tail

    return st.builds(
        mutate,
        proto_message(method.input_type).map(lambda message: message.SerializeToString()),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
        st.integers(0, 3),
        st.binary(max_size=4),
    )


UNARY = [method for method in METHODS if not method.client_streaming]
RAW_CALLS = st.one_of([st.tuples(st.just(m), st.binary(max_size=64) | _mutated(m)) for m in UNARY])


@given(call=RAW_CALLS)
@fuzz_settings(fuzz_examples(100))
async def test_undecodable_requests_are_invalid_argument(
    session_channel: grpc.aio.Channel, call: tuple[MethodDescriptor, bytes]
) -> None:
    """Bytes that may not parse (bad UTF-8 in a string, truncated fields): the answer
    names the caller's problem, never INTERNAL."""
    method, raw = call
    unary = session_channel.unary_unary(
        f"/{SERVICE.full_name}/{method.name}",
        request_serializer=lambda body: body,
        response_deserializer=lambda body: body,
    )
    try:
        await unary(raw, timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() not in REFUSED, (method.name, exc.code(), exc.details())
