"""Entry point: ``python -m ccbridge.gateway`` serves the gateway with uvicorn (uvloop and
httptools when installed) on CCBRIDGE_BIND_HOST:CCBRIDGE_HTTP_PORT.

uvicorn is used through its documented API only: ``uvicorn.Config`` +
``uvicorn.Server.serve(sockets=...)``, ``started``, ``should_exit``/``force_exit`` and the
app's lifespan. Shutdown on SIGTERM/SIGINT (:meth:`RunningGateway.stop`, the same call
tests make): readiness turns false (/readyz answers 503), the server keeps answering for
CCBRIDGE_DRAIN_DELAY_S (load balancers notice), then ``should_exit`` starts uvicorn's
graceful shutdown: it stops accepting connections, lets in-flight requests finish for up
to CCBRIDGE_SHUTDOWN_GRACE_S, and the lifespan closes the gRPC channels; exit 0. A second
signal skips the rest of the drain; a third forces the exit. Access logs are off: webhook
URLs carry a secret token.

Signals: ``Server.serve`` installs uvicorn's own handlers while it runs (they would stop
at once, and re-raise the signal afterwards: exit 143). Once the server has started,
``serve`` installs the loop's handlers in their place; uvicorn then has captured nothing
and restores the previous handlers when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from dataclasses import dataclass

import uvicorn

from ccbridge.gateway.app import create_app
from ccbridge.gateway.backends import Backends
from ccbridge.gateway.console import create_console_app
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.entry import run_component

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so port 0 is known before the server starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class RunningGateway:
    """A started gateway: its port, readiness flag (``backends.draining``) and the one
    stop order."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    backends: Backends
    drain_delay_s: float
    # The operator console's listener (gateway/console.py), when it is on.
    admin: _Listener | None = None

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin else None

    async def stop(self) -> None:
        """Readiness false → drain delay (cut short if the server ends) → graceful stop
        (the console's listener stops after the public one)."""
        if not self.backends.draining:
            self.backends.draining = True
            log.info("shutdown requested; draining for %.1fs", self.drain_delay_s)
            if self.drain_delay_s > 0:
                await asyncio.wait([self.task], timeout=self.drain_delay_s)
        self.server.should_exit = True
        try:
            await self.task
        finally:
            if self.admin is not None:
                self.admin.server.should_exit = True
                await self.admin.task


@dataclass
class _Listener:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int


async def _listen(config: uvicorn.Config, host: str, port: int, name: str) -> _Listener:
    """Starts one uvicorn server on its own socket; returns once it serves."""
    sock = _bind(host, port)
    bound = int(sock.getsockname()[1])
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    try:
        while not server.started:
            if task.done():
                await task  # raises the startup error, if any
                raise RuntimeError(f"{name} exited during startup")
            await asyncio.sleep(0.01)
    except BaseException:
        sock.close()  # once serving, uvicorn closes it on shutdown
        raise
    return _Listener(server, task, bound)


async def _start_console(settings: GatewaySettings) -> _Listener | None:
    """The operator console on its own listener (never the webhook port), when on."""
    console = settings.console
    if console is None:
        return None
    config = uvicorn.Config(
        create_console_app(settings),
        host=console.bind_host,
        port=console.port,
        http="auto",
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.common.shutdown_grace_s),
    )
    listener = await _listen(config, console.bind_host, console.port, "gateway-console")
    log.info("operator console listening on %s:%d", console.bind_host, listener.port)
    return listener


async def start(settings: GatewaySettings) -> RunningGateway:
    """Starts the gateway in the running loop (port 0 picks a free port) and returns once
    it serves; production (:func:`serve`) and tests both start it here."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.http_port,
        http="auto",  # httptools when installed
        ws="none",  # no WebSocket routes: keep that parser off the edge
        lifespan="on",
        access_log=False,
        log_config=None,  # logging is configured once by configure_logging
        server_header=False,
        # X-Forwarded-For is trusted only from the proxies the operator names (none by
        # default: a sidecar on 127.0.0.1 may pass a client's forged header through).
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=math.ceil(settings.common.shutdown_grace_s),
        timeout_keep_alive=75,  # above typical load-balancer idle timeouts (60 s)
    )
    main = await _listen(config, settings.bind_host, settings.http_port, "gateway")
    backends: Backends = app.state.backends
    running = RunningGateway(
        main.server, main.task, main.port, backends, settings.common.drain_delay_s
    )
    try:
        running.admin = await _start_console(settings)
    except BaseException:
        main.server.should_exit = True
        await main.task
        raise
    return running


async def serve(settings: GatewaySettings) -> None:
    """Serves until SIGTERM/SIGINT, then shuts down gracefully (see the module docstring)."""
    running = await start(settings)
    log.info("gateway listening on %s:%d", settings.bind_host, running.port)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not stopping:
            stopping.append(loop.create_task(running.stop(), name="gateway-stop"))
        elif not running.server.should_exit:
            running.server.should_exit = True
        else:
            running.server.force_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await running.task
        for task in stopping:
            await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main() -> None:
    # A port in use ends the process with exit 2 and one line, as bad settings do.
    run_component("gateway", GatewaySettings.from_env, serve, fatal=(OSError,))


if __name__ == "__main__":
    main()
