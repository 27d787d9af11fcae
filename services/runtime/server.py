"""gRPC server bootstrap shared by every service, and the server side of the error policy.

``create_server`` builds a ``grpc.aio`` server with mutual TLS (services/runtime/mesh_tls.py),
the interceptor (per-caller authorization from services/runtime/authz.py, request context
and error mapping), health checking and, when enabled, reflection;
services/runtime/component.py starts it and stops it in the one stop order.

Error policy (every handler kind: unary-unary, unary-stream, stream-unary, stream-stream):
the ccbridge exception tree (services/runtime/errors.py) maps to its code (NOT_FOUND,
INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, UNAUTHENTICATED, ...); a failure
of the infrastructure that can heal (Redis unreachable, loading, read-only, out of memory,
cluster down, slot moved, try again; a peer or an ``asyncio`` timeout) maps to UNAVAILABLE
with the trailing metadata ``ccbridge-retry-after``; anything else is a bug: INTERNAL with
a generic message, logged with its traceback. A unary request that does not parse (a
string of bad UTF-8, such as an encoded lone surrogate) is INVALID_ARGUMENT.

Health: the overall service ("") and each registered service name follow *readiness*
(the ``ready`` callback, e.g. Redis answers, and not shutting down). The service name
``liveness`` only says the event loop is responsive, so a Redis outage drains traffic
instead of restarting pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as reflection_service

from ccbridge.services.runtime.authz import allowed
from ccbridge.services.runtime.channels import KEEPALIVE_MS
from ccbridge.services.runtime.errors import (
    RETRY_AFTER_METADATA,
    RETRYABLE_CODES,
    CcbridgeError,
    FarSideError,
    InvalidArgument,
    ResourceExhausted,
)
from ccbridge.services.runtime.logging import request_id_var, rpc_var
from ccbridge.services.runtime.mesh_tls import (
    INSECURE_WARNING,
    MeshTls,
    peer_identity,
    server_credentials,
)
from ccbridge.services.runtime.metrics import RuntimeMetrics
from ccbridge.services.runtime.tracing import bind_conversation

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
# Clients retry UNAVAILABLE from a restarting peer (services/runtime/channels.py); an
# answer a servicer chose (e.g. "the far side is down") must not be retried by the
# channel: the caller's own back-off, which honours Retry-After, decides.
_NO_CHANNEL_RETRY = ("grpc-retry-pushback-ms", "-1")
# What a caller should wait after an infrastructure failure (Redis restarts, failovers
# and peers' restarts take about that long).
INFRA_RETRY_AFTER_S = 1.0
# Redis error replies that mean "try later" (they reach us as a plain ResponseError
# when raised inside a script or read by the raw pipeline, services/runtime/redis.py).
# MOVED/ASK: a slot that moved (resharding, failover) while a client had the old map
# (the cluster client follows them itself; one that still reaches a handler).
_REDIS_TRANSIENT_REPLIES = (
    "LOADING",
    "READONLY",
    "OOM",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "BUSY ",
    "MOVED ",
    "ASK ",
)
ReadyCheck = Callable[[], Awaitable[bool]]
Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Status:
    """What a failed call answers: code, message for the caller, retry delay (seconds)."""

    code: grpc.StatusCode
    message: str
    retry_after: float | None = None


def _redis_transient(exc: BaseException) -> bool:
    # Looked up lazily: a process that never imported redis-py (history, routing) cannot
    # see its errors, and need not load it.
    errors = sys.modules.get("redis.exceptions")
    if errors is None:
        return False
    if isinstance(
        exc,
        errors.ConnectionError  # includes BusyLoadingError, MaxClientsReachedError
        | errors.TimeoutError
        | errors.ReadOnlyError
        | errors.OutOfMemoryError
        | errors.TryAgainError
        | errors.ClusterDownError  # includes MasterDownError
        | errors.AskError  # includes MovedError
        | errors.RedisClusterException,
    ):
        return True
    return isinstance(exc, errors.ResponseError) and str(exc).startswith(_REDIS_TRANSIENT_REPLIES)


def status_for(exc: BaseException) -> Status:
    """The one mapping of an exception to the status a servicer answers (see the module
    docstring); logs bugs with their traceback."""
    if isinstance(exc, FarSideError):
        return Status(exc.code, str(exc), exc.retry_after)
    if isinstance(exc, ResourceExhausted):
        return Status(exc.code, str(exc), exc.retry_after)
    if isinstance(exc, CcbridgeError):
        retry = INFRA_RETRY_AFTER_S if exc.code == grpc.StatusCode.UNAVAILABLE else None
        return Status(exc.code, str(exc), retry)
    if _redis_transient(exc):
        log.warning("state store unavailable: %s", type(exc).__name__)
        return Status(grpc.StatusCode.UNAVAILABLE, "state store unavailable", INFRA_RETRY_AFTER_S)
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE_CODES:
        log.warning("peer call failed: %s", exc.code().name)
        return Status(
            grpc.StatusCode.UNAVAILABLE, "a peer service is unavailable", INFRA_RETRY_AFTER_S
        )
    if isinstance(exc, TimeoutError):  # asyncio.timeout / wait_for on a peer
        log.warning("a dependency timed out")
        return Status(grpc.StatusCode.UNAVAILABLE, "a dependency timed out", INFRA_RETRY_AFTER_S)
    log.error("unhandled error", exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, "internal error")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    status = status_for(exc)
    trailers = [_NO_CHANNEL_RETRY]
    if status.retry_after is not None:
        trailers.append((RETRY_AFTER_METADATA, f"{status.retry_after}"))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(status.code, status.message)


@dataclass(frozen=True)
class _Undecodable:
    """A unary request that did not parse (a string field of bad UTF-8, such as a lone
    surrogate): answered INVALID_ARGUMENT rather than grpc's UNKNOWN."""

    problem: str


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            return _Undecodable("request is not a valid message (a string of bad UTF-8?)")

    return deserialize


async def _authorize(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    """UNAUTHENTICATED without a mesh identity, PERMISSION_DENIED for an identity the
    table (services/runtime/authz.py) does not list for the method."""
    identity = peer_identity(context)
    if identity is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "a mesh client certificate is required"
        )
    elif not allowed(method, identity):
        log.warning("refused %s to %s", method, identity)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{identity} may not call {method}")


class ContextAndErrorInterceptor(grpc.aio.ServerInterceptor):
    """Authorizes the caller (mutual TLS: ``authorize``), sets request context variables and
    applies the error policy, for every handler kind."""

    def __init__(self, *, authorize: bool, metrics: RuntimeMetrics | None = None) -> None:
        self._authorize = authorize
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rpc = method.rsplit("/", 1)[-1]
        authorize = self._authorize
        record = self._metrics.grpc_server_call(method) if self._metrics is not None else None
        request_id = dict(handler_call_details.invocation_metadata or ()).get("x-request-id")

        def enter(request: Any) -> None:
            request_id_var.set(str(request_id or uuid.uuid4().hex[:16]))
            rpc_var.set(rpc)
            cid = getattr(request, "conversation_id", "")
            bind_conversation(cid if isinstance(cid, str) else "")

        # The stubs type a handler's behaviour for the sync server; under grpc.aio it is a
        # coroutine or async generator function taking a grpc.aio.ServicerContext.
        own: Callable[..., Any] | None
        if handler.request_streaming and handler.response_streaming:
            own, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            own, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            own, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            own, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        assert own is not None  # grpc sets the behaviour of the handler's kind
        inner: Callable[..., Any] = own  # not narrowed back to the stubs' sync type
        # A streaming request has no single message to take the conversation id from.
        first = (lambda request: None) if handler.request_streaming else (lambda request: request)
        deserializer = handler.request_deserializer
        if deserializer is not None and not handler.request_streaming:
            deserializer = _lenient(deserializer)

        if handler.response_streaming and inspect.isasyncgenfunction(inner):

            async def streamed(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                code: object = grpc.StatusCode.UNKNOWN
                try:
                    if authorize:
                        await _authorize(context, method)
                    enter(first(request))
                    try:
                        if isinstance(request, _Undecodable):
                            raise InvalidArgument(request.problem)
                        async for item in inner(request, context):
                            yield item
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception as exc:
                        await _abort(context, exc)
                    code = context.code() or grpc.StatusCode.OK
                except (asyncio.CancelledError, GeneratorExit):
                    code = grpc.StatusCode.CANCELLED
                    raise
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    if record is not None:
                        record(code, time.perf_counter() - started)

            behaviour: Callable[..., Any] = streamed
        else:

            async def called(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                code: object = grpc.StatusCode.UNKNOWN
                try:
                    if authorize:
                        await _authorize(context, method)
                    enter(first(request))
                    try:
                        if isinstance(request, _Undecodable):
                            raise InvalidArgument(request.problem)
                        response = await inner(request, context)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception as exc:
                        await _abort(context, exc)
                        response = None  # not reached: abort raises
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    if record is not None:
                        record(code, time.perf_counter() - started)

            behaviour = called
        return make(
            behaviour,
            request_deserializer=deserializer,
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


def server_options(keepalive_ms: int) -> list[tuple[str, Any]]:
    """Server options; clients ping every ``keepalive_ms`` (services/runtime/channels.py)
    to notice a frozen replica, so pings that often (half of it, for timer jitter) are
    permitted rather than answered with GOAWAY ``too_many_pings``."""
    return [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        # Clients reconnect (and re-resolve DNS) so new replicas get traffic.
        ("grpc.max_connection_age_ms", 5 * 60 * 1000),
        ("grpc.max_connection_age_grace_ms", 30 * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", max(1, keepalive_ms // 2)),
    ]


def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    ready: ReadyCheck | None = None,
    *,
    tls: MeshTls,
    reflection: bool = False,
    keepalive_ms: int = KEEPALIVE_MS,
    metrics: RuntimeMetrics | None = None,
) -> tuple[grpc.aio.Server, int, ServiceHealth]:
    """Builds the server; ``register`` adds servicers and returns their full service names.

    ``tls``: mutual TLS with per-caller authorization, or (``tls.insecure``, development)
    plaintext that lets every caller in. ``reflection`` adds the reflection service
    (operators only). ``keepalive_ms``: the clients' ping interval to permit. Returns the
    server (not started), the bound port (use ``127.0.0.1:0`` in tests) and the health
    keeper (start it after the server starts). ``metrics``: where every call is counted
    and timed (``ccbridge_grpc_server_*``).
    """
    server = grpc.aio.server(
        interceptors=[ContextAndErrorInterceptor(authorize=not tls.insecure, metrics=metrics)],
        options=server_options(keepalive_ms),
    )
    names = tuple(register(server))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if reflection:
        reflection_service.enable_server_reflection(
            (
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection_service.SERVICE_NAME,
            ),
            server,
        )
    if tls.insecure:
        log.warning(INSECURE_WARNING)
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    return server, port, ServiceHealth(servicer, names, ready)


def create_health_server(address: str, keeper: ServiceHealth) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with only the health service of ``keeper`` (kubelet's gRPC probes
    present no client certificate). It serves nothing else, and takes small requests."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096)])
    health_pb2_grpc.add_HealthServicer_to_server(keeper.servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC health server to {address}")
    return server, port
