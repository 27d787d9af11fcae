"""The one shape of a ccbridge gRPC service and the one way it starts and stops.

A service's ``__main__`` only says what it is made of: an async ``build(settings, metrics)``
returns a :class:`Component` (servicers, readiness check, background jobs, drain hooks,
closers, and its own service-specific ``parts``). :func:`start` turns it into a running
server and is called by tests (settings with port 0 on ``127.0.0.1``) exactly as by
production; :func:`serve` is ``start`` + wait for SIGTERM/SIGINT + :meth:`Running.stop`;
:func:`run_service` is the process entry point. The stop order is written once, in
:meth:`Running.stop`: health NOT_SERVING → drain delay → drain hooks → ``server.stop(grace)``
→ background jobs stopped in reverse order → closers in reverse order of creation.

Metrics: every component gets its own ``prometheus_client.CollectorRegistry`` (passed to
``build``, kept as ``Component.metrics`` and ``Running.metrics``). Components register
their collectors there, never in the global default registry, so in-process tests and
``ccbridge up`` don't mix them. :func:`start` adds the shared series
(:class:`~ccbridge.services.runtime.metrics.RuntimeMetrics`; the clients created by
``build`` record into them) and, when the settings name a metrics port, serves the registry
on its own plaintext listener (``GET /metrics`` only; ``Component.scrape`` hooks refresh
gauges first). It starts with the gRPC server and stops after it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from ccbridge.services.runtime.entry import run_component
from ccbridge.services.runtime.metrics import (
    MetricsServer,
    Refresh,
    RuntimeMetrics,
    collecting,
    start_metrics_server,
)
from ccbridge.services.runtime.server import (
    ReadyCheck,
    ServiceHealth,
    create_health_server,
    create_server,
)
from ccbridge.services.runtime.settings import CommonSettings

log = logging.getLogger(__name__)

P = TypeVar("P")
Closer = Callable[[], Awaitable[object]]


class ServiceSettings(Protocol):
    """What the runtime reads from a service's settings."""

    @property
    def common(self) -> CommonSettings: ...

    @property
    def address(self) -> str: ...


S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


@dataclass(frozen=True)
class Servicer(Generic[T]):
    """One gRPC servicer: the generated ``add_<Service>Servicer_to_server`` function, the
    servicer object and the service's full name (health and reflection use it)."""

    add: Callable[[T, grpc.aio.Server], None]
    servicer: T
    name: str


@dataclass(frozen=True)
class Background:
    """A long-running job of a component (delivery worker, poller, file watch): started
    once the server serves, stopped after the server has stopped."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], Awaitable[None]]


@dataclass
class Component(Generic[P]):
    """A service as the runtime sees it. ``closers`` are listed in order of creation and
    run in reverse; ``drain`` hooks run after the drain delay, before the server stops
    (e.g. ending long-lived streams so their callers reconnect elsewhere)."""

    name: str
    servicers: Sequence[Servicer[Any]]
    metrics: CollectorRegistry
    parts: P
    ready: ReadyCheck | None = None
    background: Sequence[Background] = ()
    drain: Sequence[Callable[[], None]] = ()
    closers: Sequence[Closer] = ()
    # Run before each scrape of the metrics endpoint (gauges read from Redis).
    scrape: Sequence[Refresh] = ()

    async def close(self) -> None:
        """Runs every closer in reverse order; one failing does not skip the others."""
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", self.name)


Build = Callable[[S, CollectorRegistry], Awaitable[Component[P]]]


@dataclass
class Running(Generic[P]):
    """A started component: its server, bound port and health keeper (and the plaintext
    health-only server, when ``CCBRIDGE_GRPC_HEALTH_PORT`` is set)."""

    component: Component[P]
    server: grpc.aio.Server
    port: int
    health: ServiceHealth
    grace_s: float
    drain_delay_s: float
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    metrics_server: MetricsServer | None = None
    _stopping: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def parts(self) -> P:
        return self.component.parts

    @property
    def metrics(self) -> CollectorRegistry:
        return self.component.metrics

    @property
    def address(self) -> str:
        """Loopback address of the server (what tests and local peers dial)."""
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int:
        """The bound port of the metrics listener (0: none)."""
        return self.metrics_server.port if self.metrics_server is not None else 0

    async def stop(self) -> None:
        """The one stop order (idempotent; a second call waits for the first)."""
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        try:
            await self.health.enter_shutdown()
            if self.drain_delay_s > 0:
                await asyncio.sleep(self.drain_delay_s)
            for hook in self.component.drain:
                try:
                    hook()
                except Exception:
                    log.exception("draining %s failed", self.component.name)
            await self.server.stop(self.grace_s)
            if self.health_server is not None:
                await self.health_server.stop(0)
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            for job in reversed(self.component.background):
                try:
                    await job.stop()
                except Exception:
                    log.exception("stopping %s failed", job.name)
            await self.component.close()
        finally:
            self._stopping.set_result(None)
            log.info("%s stopped after %.2fs", self.component.name, time.monotonic() - started)


async def start(build: Build[S, P], settings: S) -> Running[P]:
    """Builds the component (its clients are created in the running loop), binds
    ``settings.address``, starts the server, then readiness, then background jobs."""
    registry = CollectorRegistry(auto_describe=True)
    runtime_metrics = RuntimeMetrics(registry)
    with collecting(runtime_metrics):
        component = await build(settings, registry)
    runtime_metrics.component = component.name
    started: list[Background] = []
    server: grpc.aio.Server | None = None
    health_server: grpc.aio.Server | None = None
    metrics_server: MetricsServer | None = None
    health_port = 0
    health: ServiceHealth | None = None
    common = settings.common
    try:
        servicers = component.servicers

        def register(server: grpc.aio.Server) -> list[str]:
            for item in servicers:
                item.add(item.servicer, server)
            return [item.name for item in servicers]

        server, port, health = create_server(
            settings.address,
            register,
            component.ready,
            tls=common.mesh_tls,
            reflection=common.grpc_reflection,
            keepalive_ms=common.grpc_keepalive_ms,
            metrics=runtime_metrics,
        )
        await server.start()
        if common.grpc_health_port:
            health_server, health_port = create_health_server(
                f"{settings.address.rpartition(':')[0]}:{common.grpc_health_port}", health
            )
            await health_server.start()
        if common.metrics_port:
            metrics_server = await start_metrics_server(
                settings.address.rpartition(":")[0].strip("[]") or "0.0.0.0",
                common.metrics_port,
                registry,
                component.scrape,
            )
        await health.start()
        for job in component.background:
            job.start()
            started.append(job)
    except BaseException:
        if health is not None:
            await health.enter_shutdown()
        if server is not None:
            await server.stop(0)
        if health_server is not None:
            await health_server.stop(0)
        if metrics_server is not None:
            await metrics_server.stop()
        for job in reversed(started):
            await job.stop()
        await component.close()
        raise
    log.info("%s serving on port %d", component.name, port)
    if metrics_server is not None:
        log.info("%s metrics on port %d at /metrics", component.name, metrics_server.port)
    return Running(
        component,
        server,
        port,
        health,
        grace_s=common.shutdown_grace_s,
        drain_delay_s=common.drain_delay_s,
        health_server=health_server,
        health_port=health_port,
        metrics_server=metrics_server,
    )


async def serve(build: Build[S, P], settings: S) -> None:
    """Production: :func:`start`, run until SIGTERM/SIGINT, then :meth:`Running.stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(build, settings)
    try:
        await stop.wait()
        log.info("shutdown requested; draining")
    finally:
        await running.stop()


def run_service(
    name: str,
    load: Callable[[Mapping[str, str]], S],
    build: Build[S, Any],
    *,
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """The process entry point of a service (see :func:`run_component`)."""

    def run(settings: S) -> Coroutine[Any, Any, None]:
        return serve(build, settings)

    run_component(name, load, run, fatal=fatal)
