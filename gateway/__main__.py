"""Entry point: ``python -m ccbridge.gateway`` serves the gateway with uvicorn (uvloop and
httptools when installed) on CCBRIDGE_BIND_HOST:CCBRIDGE_HTTP_PORT.

Shutdown on SIGTERM/SIGINT: /readyz turns 503 at once, the server keeps answering for
a short drain delay (load balancers notice), then stops accepting connections, lets
in-flight requests finish for up to CCBRIDGE_SHUTDOWN_GRACE_S, closes the gRPC channels
and exits 0. A second signal skips the drain; a third forces the exit. Access logs are
off: webhook URLs carry a secret token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn

from ccbridge.gateway.app import create_app
from ccbridge.gateway.backends import Backends
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.gc_tuning import settle_after_startup
from ccbridge.services.runtime.logging import configure_logging
from ccbridge.services.runtime.settings import SettingsError

log = logging.getLogger(__name__)

DRAIN_DELAY_S = 1.0


class GatewayServer(uvicorn.Server):
    """uvicorn server that reports not-ready before it stops accepting connections."""

    def __init__(
        self,
        config: uvicorn.Config,
        backends: Backends,
        *,
        drain_delay_s: float = DRAIN_DELAY_S,
        install_signal_handlers: bool = True,
    ) -> None:
        super().__init__(config)
        self._backends = backends
        self._drain_delay_s = drain_delay_s
        self._install_signal_handlers = install_signal_handlers
        self._exit_at: float | None = None
        self._drain_logged = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._install_signal_handlers:
            yield
            return
        # Our own handlers (not uvicorn's): uvicorn re-raises the captured signal after
        # shutdown, which would end the process with 143 instead of 0.
        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only flip flags here (no logging, no awaits).
        if self._exit_at is None:
            self._backends.draining = True
            self._exit_at = time.monotonic() + self._drain_delay_s
        elif not self.should_exit:
            self.should_exit = True
        else:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None:
            if not self._drain_logged:
                self._drain_logged = True
                log.info("shutdown requested; draining for %.1fs", self._drain_delay_s)
            if time.monotonic() >= self._exit_at:
                self.should_exit = True
        return await super().on_tick(counter)


def build_server(
    settings: GatewaySettings,
    *,
    install_signal_handlers: bool = True,
    drain_delay_s: float = DRAIN_DELAY_S,
) -> GatewayServer:
    """The uvicorn server for ``settings`` (not started)."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.http_port,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        ws="none",  # no WebSocket routes: keep that parser off the edge
        lifespan="on",
        access_log=False,
        log_config=None,  # logging is configured once by configure_logging
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=math.ceil(settings.common.shutdown_grace_s),
        timeout_keep_alive=75,  # above typical load-balancer idle timeouts (60 s)
    )
    return GatewayServer(
        config,
        app.state.backends,
        drain_delay_s=drain_delay_s,
        install_signal_handlers=install_signal_handlers,
    )


@dataclass
class RunningGateway:
    """A gateway served in-process (tests, ``ccbridge up``): its port and how to stop it."""

    server: GatewayServer
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start(settings: GatewaySettings) -> RunningGateway:
    """Starts the gateway in the running loop (port 0 picks a free port); no signal
    handlers are installed and no drain delay applies on ``stop()``."""
    server = build_server(settings, install_signal_handlers=False, drain_delay_s=0.0)
    task = asyncio.create_task(server.serve(), name="gateway")
    while not server.started:
        if task.done():
            await task  # raises the startup error
            raise RuntimeError("gateway exited during startup")
        await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    return RunningGateway(server, task, port)


async def serve(settings: GatewaySettings) -> None:
    """Serves until SIGTERM/SIGINT, then shuts down gracefully."""
    await build_server(settings).serve()


def main() -> None:
    try:
        settings = GatewaySettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"ccbridge gateway: {exc}", file=sys.stderr)  # logging is not configured yet
        sys.exit(2)
    configure_logging("gateway", settings.common.log_level, settings.common.log_format)
    server = build_server(settings)
    settle_after_startup()
    log.info("gateway listening on %s:%d", settings.bind_host, settings.http_port)
    # uvicorn's runner picks the uvloop loop factory; it exits non-zero itself when
    # startup fails (port in use, lifespan error).
    server.run()


if __name__ == "__main__":
    main()
