"""Far sides for tests, all real servers on loopback (the far-side client under test is
the one production runs, services/runtime/http_client.py):

- :func:`far_side`: an HTTP server whose answers the test scripts (status, headers,
  body, a delay), recording every request — for what the simulators cannot be made to
  answer (odd results, oversized bodies, slow answers, any status and Retry-After);
- :class:`Recorder`: wraps an ASGI app (a simulator) to record the requests it gets;
- :func:`garbage_server`: answers every connection with bytes that are not HTTP;
- :func:`lossy_proxy`: a TCP proxy in front of a real server that forwards chosen
  requests and then loses their answers (the far side acted, the caller never learns);
- :func:`closed_port`: a loopback port nobody listens on.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.simulators.ccaas.support import serve_app

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Seen:
    """A request the far side received; header names are lower-case, ``path`` is
    percent-decoded and ``raw_path`` as sent."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What the far side answers; ``delay_s`` passes before it does. ``chunked`` sends
    the body in 1 KiB chunks without a Content-Length."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False

    @classmethod
    def json(
        cls,
        doc: object,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        delay_s: float = 0.0,
    ) -> Reply:
        return cls(
            status,
            json.dumps(doc).encode(),
            {"Content-Type": "application/json", **(headers or {})},
            delay_s,
        )


Script = Callable[[Seen], Reply]


class Recorder:
    """An ASGI app that records each HTTP request (``requests``) before ``app`` answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            Seen(
                scope["method"],
                scope["path"],
                scope["query_string"].decode(),
                headers,
                body,
                scope["raw_path"].decode(),
            )
        )
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class FarSide:
    """A running scripted far side: ``url`` is its base URL; set ``script`` at will."""

    url: str
    script: Script
    requests: list[Seen] = field(default_factory=list)


@asynccontextmanager
async def far_side(script: Script) -> AsyncIterator[FarSide]:
    """Serves ``script`` on a free loopback port; every request is recorded first."""
    stopping = asyncio.Event()
    far = FarSide("", script)

    async def answer(request: Request) -> Response:
        seen = Seen(
            request.method,
            request.url.path,
            request.url.query,
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
            request.scope["raw_path"].decode(),
        )
        far.requests.append(seen)
        reply = far.script(seen)
        if reply.delay_s:
            # Ends early when the server stops, so that teardown does not wait for it.
            try:
                await asyncio.wait_for(stopping.wait(), reply.delay_s)
            except TimeoutError:
                pass
        if reply.chunked:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(reply.body), 1024):
                    yield reply.body[start : start + 1024]

            return StreamingResponse(chunks(), reply.status, headers=dict(reply.headers))
        return Response(reply.body, reply.status, headers=dict(reply.headers))

    app = Starlette(routes=[Route("/{path:path}", answer, methods=METHODS)])
    async with serve_app(app) as url:
        far.url = url
        try:
            yield far
        finally:
            stopping.set()


@asynccontextmanager
async def garbage_server() -> AsyncIterator[str]:
    """A base URL whose server answers every request with bytes that are not HTTP."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port with no listener (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def lossy_proxy(
    upstream_host: str, upstream_port: int, lose: Callable[[str, str], bool]
) -> AsyncIterator[int]:
    """A TCP proxy on a free loopback port (yielded) in front of ``upstream``. A request
    for which ``lose(method, path)`` is true reaches upstream, but its connection is
    closed as soon as the answer starts to come back: the answer is lost. Requests on a
    connection follow each other (HTTP/1.1 without pipelining), so the request line
    seen last is the one the next answer belongs to."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(upstream_host, upstream_port)
        losing = False

        async def forward_requests() -> None:
            nonlocal losing
            while data := await client_r.read(65536):
                line = data.split(b"\r\n", 1)[0].split(b" ")
                if len(line) == 3 and line[2].startswith(b"HTTP/"):
                    path = line[1].decode().split("?", 1)[0]
                    losing = lose(line[0].decode(), path)
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def forward_answers() -> None:
            while data := await up_r.read(65536):
                if losing:
                    break
                client_w.write(data)
                await client_w.drain()
            client_w.close()
            up_w.close()

        sender = asyncio.ensure_future(forward_requests())
        try:
            await forward_answers()
        except ConnectionError:
            pass
        finally:
            sender.cancel()
            client_w.close()
            up_w.close()

    def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(r, w))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
