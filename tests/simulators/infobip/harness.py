"""Helpers shared by the tests that use the Infobip simulator: in-process for its control
API, and served on loopback HTTP for the Infobip client (the client production runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.settings import Secret
from ccbridge.simulators.infobip import InfobipSimState, create_app
from ccbridge.simulators.infobip.server import start_server

API_KEY = "test-key"
BASE_URL = "http://infobip.test"


@dataclass
class Sim:
    """A simulator: its state, app, and an httpx client on its control API (in-process:
    a test tool, not the product's far-side path)."""

    state: InfobipSimState
    app: Starlette
    http: httpx.AsyncClient
    # Set by served_sim(): the same state served over loopback HTTP.
    url: str | None = None

    def client(self, **kwargs: Any) -> InfobipClient:
        """An Infobip client of the served simulator."""
        if self.url is None:
            raise RuntimeError("the Infobip client needs served_sim(), not running_sim()")
        kwargs.setdefault("backoff_base_s", 0.01)
        return InfobipClient(self.url, Secret(API_KEY), **kwargs)


@asynccontextmanager
async def running_sim(**state_kwargs: Any) -> AsyncIterator[Sim]:
    """The simulator in-process (its control API only)."""
    state = InfobipSimState(seed=7, **state_kwargs)
    app = create_app(state, api_key=API_KEY)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    try:
        yield Sim(state, app, http)
    finally:
        await http.aclose()
        await state.aclose()


@asynccontextmanager
async def served_sim(**state_kwargs: Any) -> AsyncIterator[Sim]:
    """The simulator served on a free loopback port (``Sim.url``), for Infobip clients."""
    async with running_sim(**state_kwargs) as sim:
        server = await start_server(sim.state, api_key=API_KEY)
        try:
            yield replace(sim, url=server.url)
        finally:
            await server.stop()


@dataclass
class Receiver:
    """A webhook receiver app that records every request (and answers ``status``)."""

    status: int = 200
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def record(request: Request) -> Response:
            self.requests.append((request.url.path, dict(request.headers), await request.body()))
            return JSONResponse({"ok": True}, status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", record, methods=["POST"])])
