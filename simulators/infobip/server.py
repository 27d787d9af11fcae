"""Runs the Infobip simulator on real loopback HTTP inside the current event loop
(uvicorn), for tests and tools that need a URL rather than an ASGI transport."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvicorn

from ccbridge.simulators.infobip.app import create_app
from ccbridge.simulators.infobip.state import InfobipSimState


@dataclass
class SimServer:
    """A running simulator; ``url`` is its base URL (``http://127.0.0.1:<port>``)."""

    url: str
    port: int
    state: InfobipSimState
    _server: uvicorn.Server
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stops serving (the app's lifespan closes the state's webhook client)."""
        self._server.should_exit = True
        await self._task


async def start_server(
    state: InfobipSimState | None = None,
    *,
    api_key: str = "sim-key",
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> SimServer:
    """Starts the simulator on ``host:port`` (0 = a free port) and waits until it
    listens."""
    sim = state if state is not None else InfobipSimState()
    config = uvicorn.Config(
        create_app(sim, api_key=api_key),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("the simulator exited during startup")
                await asyncio.sleep(0.01)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        raise
    bound = server.servers[0].sockets[0].getsockname()[1]
    return SimServer(f"http://{host}:{bound}", int(bound), sim, server, task)
