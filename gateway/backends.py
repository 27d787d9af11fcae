"""The gateway's gRPC peers: Session and Connector channels, stubs and readiness.

Channels and stubs are created once per app in the lifespan (inside the running loop)
and shared by every request; ``call`` adds the deadline and the request id metadata and
counts failures. Readiness asks each peer's gRPC health service (``grpc.health.v1``)
with a 1 s deadline and caches the answer for about a second so that probes and load
balancers cannot turn into a health-check storm.

Webhook messages go to Session through :class:`IngestBatcher`, which coalesces the
messages of concurrent requests into few batches (one gRPC call per webhook was the
gateway's and Session's largest cost under load), sent over long-lived ``IngestStream``
calls (gateway/ingest_stream.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2_grpc
from ccbridge.gateway.ingest_stream import IngestStreams
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.logging import request_id_var
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

READY_CHECK_TIMEOUT_S = 1.0
# Ingest batching: batches in flight at once, and the most one batch carries. One: what
# arrives while a batch is out goes in the next, so batches grow with the load and there
# is less queueing; with two or three the closed-loop maximum was no higher and the relay
# p99 at half of it was higher (README, Performance).
INGEST_MAX_INFLIGHT = 1
INGEST_MAX_MESSAGES = 256
INGEST_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class _Waiting:
    messages: Sequence[common_pb2.Message]
    size: int
    future: asyncio.Future[list[session_pb2.IngestResult]]


class IngestBatcher:
    """Coalesces the messages of concurrent webhook requests into few Ingest calls.

    A request's messages are sent at the end of the current event-loop turn when fewer
    than ``max_inflight`` calls are running, so light traffic waits for nothing. Under
    load, requests queue while the calls run and then go out together: one call carries
    the messages of many requests, each request's messages contiguous and in arrival
    order (at most ``max_messages`` messages or ``max_bytes``; a larger request goes
    alone). Every request gets its own results only after Session answered for the whole
    call, i.e. after its messages are in Redis, so "durable before 200" holds as with one
    call per request. A failed call fails every request in it: each answers 503 and its
    sender retries, and Session's dedupe makes the retry of an already stored message a
    no-op.
    """

    def __init__(
        self,
        send: Callable[[list[common_pb2.Message]], Awaitable[Sequence[session_pb2.IngestResult]]],
        *,
        max_inflight: int = INGEST_MAX_INFLIGHT,
        max_messages: int = INGEST_MAX_MESSAGES,
        max_bytes: int = INGEST_MAX_BYTES,
    ) -> None:
        self._send = send
        self._max_inflight = max_inflight
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._queue: deque[_Waiting] = deque()
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def ingest(
        self, messages: Sequence[common_pb2.Message]
    ) -> list[session_pb2.IngestResult]:
        """Stores ``messages`` through Session; their results, in order. Raises the
        call's ``grpc.aio.AioRpcError`` when it failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[session_pb2.IngestResult]] = loop.create_future()
        size = sum(m.ByteSize() for m in messages)
        self._queue.append(_Waiting(messages, size, future))
        if not self._scheduled:
            # End of this loop turn: requests parsed in the same turn share a call.
            self._scheduled = True
            loop.call_soon(self._pump)
        return await future

    def _pump(self) -> None:
        self._scheduled = False
        while self._queue and self._inflight < self._max_inflight:
            batch = [self._queue.popleft()]
            count, size = len(batch[0].messages), batch[0].size
            while self._queue:
                head = self._queue[0]
                if (
                    count + len(head.messages) > self._max_messages
                    or size + head.size > self._max_bytes
                ):
                    break
                batch.append(self._queue.popleft())
                count += len(head.messages)
                size += head.size
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[_Waiting]) -> None:
        try:
            messages = [m for waiting in batch for m in waiting.messages]
            results = list(await self._send(messages))
            if len(results) != len(messages):
                raise RuntimeError("Session answered a different number of Ingest results")
            start = 0
            for waiting in batch:
                end = start + len(waiting.messages)
                if not waiting.future.done():
                    waiting.future.set_result(results[start:end])
                start = end
        except BaseException as exc:  # each waiting request sees the call's failure
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._inflight -= 1
            if self._queue and not self._scheduled:
                self._pump()


class BackendsNotOpen(RuntimeError):
    """A request arrived before the lifespan opened the channels (or after it closed)."""


class Backends:
    """Owns the channels to Session and Connector for one app instance."""

    def __init__(
        self, settings: GatewaySettings, metrics: GatewayMetrics, *, ready_cache_s: float = 1.0
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._timeout = settings.grpc_timeout_s
        self._ready_cache_s = ready_cache_s
        self._channels: list[grpc.aio.Channel] = []
        self._session: session_pb2_grpc.SessionServiceAsyncStub | None = None
        self._connector: connector_pb2_grpc.ConnectorServiceAsyncStub | None = None
        self._health: list[tuple[str, health_pb2_grpc.HealthStub]] = []
        self._ready_value = False
        self._ready_until = 0.0
        self._ready_lock = asyncio.Lock()
        self.draining = False
        self.ingest_batcher = IngestBatcher(self._ingest_call)
        self._ingest_streams: IngestStreams | None = None

    async def open(self) -> None:
        """Creates the channels; call inside the running loop (the app lifespan)."""
        common = self._settings.common
        session_channel = create_channel(
            self._settings.session_addr,
            common.mesh_tls,
            "session",
            keepalive_ms=common.grpc_keepalive_ms,
        )
        connector_channel = create_channel(
            self._settings.connector_addr,
            common.mesh_tls,
            "connector",
            keepalive_ms=common.grpc_keepalive_ms,
        )
        self._channels = [session_channel, connector_channel]
        self._session = session_pb2_grpc.SessionServiceStub(session_channel)
        self._connector = connector_pb2_grpc.ConnectorServiceStub(connector_channel)
        self._health = [
            ("session", health_pb2_grpc.HealthStub(session_channel)),
            ("connector", health_pb2_grpc.HealthStub(connector_channel)),
        ]
        self._ingest_streams = IngestStreams(
            lambda: self.session,
            self._ingest_unary,
            timeout_s=self._timeout,
            on_error=lambda code: self._metrics.count_grpc_error("IngestStream", code.name),
        )
        self.draining = False

    async def close(self) -> None:
        """Marks the gateway not ready and closes the channels (reverse order)."""
        self.draining = True
        streams, self._ingest_streams = self._ingest_streams, None
        if streams is not None:
            await streams.aclose()
        channels, self._channels = self._channels, []
        self._session = self._connector = None
        self._health = []
        for channel in reversed(channels):
            await channel.close()

    @property
    def session(self) -> session_pb2_grpc.SessionServiceAsyncStub:
        if self._session is None:
            raise BackendsNotOpen("gateway backends are not open")
        return self._session

    @property
    def connector(self) -> connector_pb2_grpc.ConnectorServiceAsyncStub:
        if self._connector is None:
            raise BackendsNotOpen("gateway backends are not open")
        return self._connector

    async def call(
        self, rpc: str, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req
    ) -> Resp:
        """Calls one unary RPC with the deadline and ``x-request-id`` metadata.

        Raises ``grpc.aio.AioRpcError`` on failure (counted by code); callers map it.
        """
        metadata = (("x-request-id", request_id_var.get()),)
        try:
            return await method(request, timeout=self._timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            self._metrics.count_grpc_error(rpc, exc.code().name)
            log.warning("%s failed: %s", rpc, exc.code().name)
            raise

    async def ingest(
        self, messages: Sequence[common_pb2.Message]
    ) -> list[session_pb2.IngestResult]:
        """Session.Ingest for one request's messages, batched with concurrent requests
        (see :class:`IngestBatcher`); raises ``grpc.aio.AioRpcError`` on failure."""
        return await self.ingest_batcher.ingest(messages)

    async def _ingest_call(
        self, messages: list[common_pb2.Message]
    ) -> Sequence[session_pb2.IngestResult]:
        if self._ingest_streams is None:
            raise BackendsNotOpen("gateway backends are not open")
        return await self._ingest_streams.send(messages)

    async def _ingest_unary(
        self, messages: list[common_pb2.Message]
    ) -> Sequence[session_pb2.IngestResult]:
        response = await self.call(
            "Ingest", self.session.Ingest, session_pb2.IngestRequest(messages=messages)
        )
        results: Sequence[session_pb2.IngestResult] = response.results
        return results

    async def ready(self) -> bool:
        """True when both peers answer SERVING (cached ~1 s); False while draining."""
        if self.draining or not self._health:
            return False
        if time.monotonic() < self._ready_until:
            return self._ready_value
        async with self._ready_lock:
            # Another request may have refreshed the cache while this one waited.
            if time.monotonic() < self._ready_until:
                return self._ready_value
            results = await asyncio.gather(
                *(self._check(name, stub) for name, stub in self._health)
            )
            self._ready_value = all(results)
            self._ready_until = time.monotonic() + self._ready_cache_s
            return self._ready_value

    async def _check(self, name: str, stub: health_pb2_grpc.HealthStub) -> bool:
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=READY_CHECK_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            log.info("peer %s not ready: %s", name, exc.code().name)
            return False
        serving = bool(response.status == health_pb2.HealthCheckResponse.SERVING)
        if not serving:
            log.info("peer %s not serving", name)
        return serving
