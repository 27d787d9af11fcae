"""Helpers shared by the tests that use the Infobip simulator in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.settings import Secret
from ccbridge.simulators.infobip import InfobipSimState, create_app

API_KEY = "test-key"
BASE_URL = "http://infobip.test"


@dataclass
class Sim:
    """An in-process simulator: its state, app, and an httpx client on its control API."""

    state: InfobipSimState
    app: Starlette
    http: httpx.AsyncClient
    # Set when the same state is also served over loopback HTTP: clients from
    # ``client()`` then go through the network stack the deployed client uses.
    url: str | None = None

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def client(self, **kwargs: Any) -> InfobipClient:
        kwargs.setdefault("backoff_base_s", 0.01)
        if self.url is not None:
            return InfobipClient(self.url, Secret(API_KEY), **kwargs)
        return InfobipClient(BASE_URL, Secret(API_KEY), transport=self.transport(), **kwargs)


@asynccontextmanager
async def running_sim(**state_kwargs: Any) -> AsyncIterator[Sim]:
    state = InfobipSimState(seed=7, **state_kwargs)
    app = create_app(state, api_key=API_KEY)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    try:
        yield Sim(state, app, http)
    finally:
        await http.aclose()
        await state.aclose()


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
