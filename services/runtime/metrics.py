"""Prometheus metrics every gRPC component shares, and the endpoint that serves them.

Each component has its own ``CollectorRegistry`` (services/runtime/component.py); this
module puts the shared series into it (:class:`RuntimeMetrics`: gRPC server and client
calls, Redis round trips, far-side HTTP calls, process metrics) and serves it on a
plaintext HTTP listener of its own (:func:`start_metrics_server`): ``GET /metrics``,
nothing else, on ``CCBRIDGE_<COMPONENT>_METRICS_PORT`` (services/runtime/ports.py).

The hooks find the component's :class:`RuntimeMetrics` without being handed it: while a
component is built (:func:`collecting`, around ``build`` in component.py), the clients
created there — gRPC channels (:func:`ccbridge.services.runtime.channels.create_channel`),
Redis batches, far-side HTTP clients — take it from a context variable. Outside a build
(the CLI, the gateway's media proxy, tests that create clients directly) they record
nothing.

Labels have low cardinality only: gRPC service and method names, status codes, far-side
system and operation names, never a conversation id or a message's data. Label children
are cached: the hooks run on hot paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"

# Redis round trips are sub-millisecond on a healthy server: finer low buckets.
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Refresh = Callable[[], Awaitable[None]]

_current: ContextVar[RuntimeMetrics | None] = ContextVar("ccbridge_metrics", default=None)

__all__ = [
    "CONTENT_TYPE",
    "METRICS_PATH",
    "ClientCallMetrics",
    "MetricsServer",
    "RuntimeMetrics",
    "add_process_collectors",
    "collecting",
    "current",
    "start_metrics_server",
]


def add_process_collectors(registry: CollectorRegistry) -> None:
    """``process_*`` (CPU, memory, file descriptors), ``python_info`` and
    ``python_gc_*`` in ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def current() -> RuntimeMetrics | None:
    """The metrics of the component being built, or None outside a build."""
    return _current.get()


@contextlib.contextmanager
def collecting(metrics: RuntimeMetrics) -> Iterator[None]:
    """Clients created inside the block record into ``metrics``."""
    token = _current.set(metrics)
    try:
        yield
    finally:
        _current.reset(token)


def _code_name(code: object) -> str:
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else "UNKNOWN"


class RuntimeMetrics:
    """The shared series of one component, in its registry."""

    def __init__(self, registry: CollectorRegistry, component: str = "") -> None:
        self.registry = registry
        # The ``component`` label of the Redis histogram: set once the component is
        # built (its name comes from ``build``), before it serves.
        self.component = component
        add_process_collectors(registry)
        self.grpc_server_handled = Counter(
            "ccbridge_grpc_server_handled_total",
            "gRPC calls this server completed, by service, method and status code.",
            ("service", "method", "code"),
            registry=registry,
        )
        self.grpc_server_seconds = Histogram(
            "ccbridge_grpc_server_handling_seconds",
            "Time this server took to handle a gRPC call (for streams: the whole stream).",
            ("service", "method"),
            registry=registry,
        )
        self.grpc_client_handled = Counter(
            "ccbridge_grpc_client_handled_total",
            "gRPC calls this process made to its peers, by service, method and status code.",
            ("service", "method", "code"),
            registry=registry,
        )
        self.redis_seconds = Histogram(
            "ccbridge_redis_command_duration_seconds",
            "Redis round trips of the batched paths (one pipeline of commands each).",
            ("component",),
            buckets=REDIS_BUCKETS,
            registry=registry,
        )
        self.farside_requests = Counter(
            "ccbridge_farside_requests_total",
            "HTTP calls to far sides (Infobip, each connector's CCaaS), by system, "
            "operation and HTTP status (or error/timeout).",
            ("system", "operation", "status"),
            registry=registry,
        )
        self.farside_seconds = Histogram(
            "ccbridge_farside_request_duration_seconds",
            "Latency of HTTP calls to far sides, by system and operation.",
            ("system", "operation"),
            registry=registry,
        )
        self.lease_takeovers = Counter(
            "ccbridge_lease_takeovers_total",
            "Leases taken over from a replica that is gone (before their TTL ran out), "
            "by kind (inbox, outbox, reconcile, poll).",
            ("kind",),
            registry=registry,
        )
        self._redis: Callable[[float], None] | None = None
        self._server: dict[str, Callable[[object, float], None]] = {}
        self._client_codes: dict[tuple[str, str], Callable[[], None]] = {}
        self._farside_hist: dict[tuple[str, str], Callable[[float], None]] = {}
        self._farside_count: dict[tuple[str, str, str], Callable[[], None]] = {}

    # -- gRPC ------------------------------------------------------------------------------
    def grpc_server_call(self, full_method: str) -> Callable[[object, float], None]:
        """The recorder of one server method (``/pkg.Service/Method``), cached: call it
        with the status code (a ``grpc.StatusCode``) and the seconds the call took."""
        record = self._server.get(full_method)
        if record is None:
            record = self._server[full_method] = self._server_recorder(full_method)
        return record

    def _server_recorder(self, full_method: str) -> Callable[[object, float], None]:
        service, method = _split(full_method)
        observe = self.grpc_server_seconds.labels(service, method).observe
        counts: dict[object, Callable[[], None]] = {}

        def record(code: object, seconds: float) -> None:
            inc = counts.get(code)
            if inc is None:
                inc = counts[code] = self.grpc_server_handled.labels(
                    service, method, _code_name(code)
                ).inc
            inc()
            observe(seconds)

        return record

    def grpc_client_done(self, full_method: str, code: object) -> None:
        name = _code_name(code)
        inc = self._client_codes.get((full_method, name))
        if inc is None:
            service, method = _split(full_method)
            inc = self._client_codes[(full_method, name)] = self.grpc_client_handled.labels(
                service, method, name
            ).inc
        inc()

    # -- Redis -----------------------------------------------------------------------------
    def observe_redis(self, seconds: float) -> None:
        observe = self._redis
        if observe is None:
            observe = self._redis = self.redis_seconds.labels(self.component or "unknown").observe
        observe(seconds)

    def lease_kind(self, kind: str) -> None:
        """Shows the kind's counter at 0 before its first takeover (rates need it)."""
        self.lease_takeovers.labels(kind)

    def lease_taken_over(self, kind: str) -> None:
        self.lease_takeovers.labels(kind).inc()  # rare: no cached child

    # -- far sides -------------------------------------------------------------------------
    def observe_farside(self, system: str, operation: str, status: str, seconds: float) -> None:
        hist = self._farside_hist.get((system, operation))
        if hist is None:
            hist = self._farside_hist[(system, operation)] = self.farside_seconds.labels(
                system, operation
            ).observe
        hist(seconds)
        inc = self._farside_count.get((system, operation, status))
        if inc is None:
            inc = self._farside_count[(system, operation, status)] = self.farside_requests.labels(
                system, operation, status
            ).inc
        inc()


def _split(full_method: str) -> tuple[str, str]:
    """``/ccbridge.session.v1.SessionService/Ingest`` → (service, method)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


class MetricsServer:
    """A plaintext HTTP listener that serves ``GET /metrics`` of one registry and
    nothing else. ``refresh`` hooks run before each scrape (gauges read from Redis)."""

    def __init__(self, runner: web.AppRunner, port: int, refresh: Sequence[Refresh] = ()) -> None:
        self.runner = runner
        self.port = port
        self.refresh = refresh

    async def stop(self) -> None:
        await self.runner.cleanup()


# Bounds one scrape's refresh (a slow Redis must not hold the scrape past Prometheus's
# own timeout, 10 s by default): the gauges keep their previous values.
REFRESH_TIMEOUT_S = 5.0


async def start_metrics_server(
    host: str, port: int, registry: CollectorRegistry, refresh: Sequence[Refresh] = ()
) -> MetricsServer:
    """Binds ``host:port`` (0: any free port) and serves ``registry`` at /metrics."""
    lock = asyncio.Lock()

    async def metrics(request: web.Request) -> web.Response:
        async with lock:  # concurrent scrapes share one refresh at a time
            for hook in refresh:
                try:
                    await asyncio.wait_for(hook(), REFRESH_TIMEOUT_S)
                except Exception:  # a failed refresh keeps the last values; the scrape goes on
                    log.warning("metrics refresh failed", exc_info=True)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(client_max_size=4096)
    app.router.add_get(METRICS_PATH, metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot bind the metrics listener to {host}:{port}: {exc}") from exc
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return MetricsServer(runner, bound, refresh)


class ClientCallMetrics(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Counts every call of a channel by its final status code
    (``ccbridge_grpc_client_handled_total``). Calls with one response are counted when
    they end, before the caller sees the answer; streams of responses by a small task
    that waits for their end."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics
        self._waiting: set[asyncio.Task[None]] = set()

    @staticmethod
    def _method(details: grpc.aio.ClientCallDetails) -> str:
        method = details.method
        return method.decode() if isinstance(method, bytes) else str(method)

    async def _count(self, method: str, call: grpc.aio.Call) -> None:
        self._metrics.grpc_client_done(method, await call.code())

    def _count_later(self, method: str, call: grpc.aio.Call) -> None:
        task = asyncio.get_running_loop().create_task(self._count(method, call))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        await self._count(self._method(client_call_details), call)
        return call

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        self._count_later(self._method(client_call_details), call)
        return call

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        self._count_later(self._method(client_call_details), call)
        return call

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        self._count_later(self._method(client_call_details), call)
        return call
