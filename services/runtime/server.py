"""gRPC server bootstrap shared by every service.

``create_server`` builds a ``grpc.aio`` server with the interceptor (request context and
error mapping), health checking and reflection. ``serve_until_signalled`` runs it until
SIGTERM/SIGINT and shuts down gracefully: health NOT_SERVING, short drain, stop(grace).

Health: the overall service ("") and each registered service name follow *readiness*
(the ``ready`` callback, e.g. Redis answers, and not shutting down). The service name
``liveness`` only says the event loop is responsive, so a Redis outage drains traffic
instead of restarting pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ccbridge.services.runtime.errors import RETRY_AFTER_METADATA, CcbridgeError, FarSideError
from ccbridge.services.runtime.logging import conversation_id_var, request_id_var, rpc_var

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
# Clients retry UNAVAILABLE from a restarting peer (services/runtime/channels.py); an
# answer a servicer chose (e.g. "the far side is down") must not be retried by the
# channel: the caller's own back-off, which honours Retry-After, decides.
_NO_CHANNEL_RETRY = ("grpc-retry-pushback-ms", "-1")
ReadyCheck = Callable[[], Awaitable[bool]]


class ContextAndErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Sets request context variables and maps ccbridge errors to gRPC status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        inner = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id_var.set(str(metadata.get("x-request-id") or uuid.uuid4().hex[:16]))
            rpc_var.set(method.rsplit("/", 1)[-1])
            cid = getattr(request, "conversation_id", "")
            conversation_id_var.set(cid if isinstance(cid, str) else "")
            try:
                return await inner(request, context)
            except FarSideError as exc:
                trailers = [_NO_CHANNEL_RETRY]
                if exc.retry_after is not None:
                    trailers.append((RETRY_AFTER_METADATA, f"{exc.retry_after}"))
                context.set_trailing_metadata(tuple(trailers))
                await context.abort(exc.code, str(exc))
            except CcbridgeError as exc:
                context.set_trailing_metadata((_NO_CHANNEL_RETRY,))
                await context.abort(exc.code, str(exc))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                context.set_trailing_metadata((_NO_CHANNEL_RETRY,))
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class ServiceHealth:
    """Keeps the health servicer in line with readiness and shutdown."""

    servicer: health.aio.HealthServicer
    service_names: tuple[str, ...]
    ready: ReadyCheck | None
    interval_s: float = 1.0
    shutting_down: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.servicer.set(name, status)

    async def check_once(self) -> bool:
        ok = False
        if not self.shutting_down:
            try:
                ok = True if self.ready is None else await asyncio.wait_for(self.ready(), 2.0)
            except Exception:  # readiness probe: any failure means not ready
                ok = False
        await self._set_all(
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return ok

    async def _loop(self) -> None:
        while not self.shutting_down:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        await self.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._loop(), name="health")

    async def enter_shutdown(self) -> None:
        self.shutting_down = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)


def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    ready: ReadyCheck | None = None,
) -> tuple[grpc.aio.Server, int, ServiceHealth]:
    """Builds the server; ``register`` adds servicers and returns their full service names.

    Returns the server (not started), the bound port (use ``127.0.0.1:0`` in tests) and
    the health keeper (start it after the server starts).
    """
    server = grpc.aio.server(
        interceptors=[ContextAndErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Clients reconnect (and re-resolve DNS) so new replicas get traffic.
            ("grpc.max_connection_age_ms", 5 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 30 * 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    names = tuple(register(server))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    return server, port, ServiceHealth(servicer, names, ready)


async def serve_until_signalled(
    server: grpc.aio.Server,
    keeper: ServiceHealth,
    *,
    grace_s: float,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    drain_delay_s: float = 1.0,
) -> None:
    """Starts the server and runs it until SIGTERM/SIGINT, then shuts down gracefully.

    Order: health NOT_SERVING (load balancers stop sending), wait ``drain_delay_s``,
    ``on_drain`` (stop background workers, finish in-flight deliveries), then
    ``server.stop(grace_s)`` so in-flight RPCs finish.
    """
    await server.start()
    await keeper.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    started = time.monotonic()
    log.info("shutdown requested; draining")
    await keeper.enter_shutdown()
    await asyncio.sleep(drain_delay_s)
    if on_drain is not None:
        await on_drain()
    await server.stop(grace_s)
    log.info("stopped after %.2fs", time.monotonic() - started)
