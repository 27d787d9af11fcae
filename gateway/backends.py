"""The gateway's gRPC peers: Session and Connector channels, stubs and readiness.

Channels and stubs are created once per app in the lifespan (inside the running loop)
and shared by every request; ``call`` adds the deadline and the request id metadata and
counts failures. Readiness asks each peer's gRPC health service (``grpc.health.v1``)
with a 1 s deadline and caches the answer for about a second so that probes and load
balancers cannot turn into a health-check storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from ccbridge.connector.v1 import connector_pb2_grpc
from ccbridge.session.v1 import session_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from services._runtime.channels import create_channel
from services._runtime.logging import request_id_var

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

READY_CHECK_TIMEOUT_S = 1.0


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

    async def open(self) -> None:
        """Creates the channels; call inside the running loop (the app lifespan)."""
        session_channel = create_channel(self._settings.session_addr)
        connector_channel = create_channel(self._settings.connector_addr)
        self._channels = [session_channel, connector_channel]
        self._session = session_pb2_grpc.SessionServiceStub(session_channel)  # type: ignore[assignment]
        self._connector = connector_pb2_grpc.ConnectorServiceStub(connector_channel)  # type: ignore[assignment]
        self._health = [
            ("session", health_pb2_grpc.HealthStub(session_channel)),
            ("connector", health_pb2_grpc.HealthStub(connector_channel)),
        ]
        self.draining = False

    async def close(self) -> None:
        """Marks the gateway not ready and closes the channels (reverse order)."""
        self.draining = True
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

    async def call(self, rpc: str, method: Callable[..., Awaitable[Resp]], request: Req) -> Resp:
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
