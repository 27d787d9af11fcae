"""CPU per far-side POST: httpx against aiohttp, against the same local server, same run.

``python -m bench.http_clients [--requests N] [--repeats R] [--concurrency C ...]``

The far-side client is on the relay path (the webhook connector posts every customer
message, Session posts every agent reply to Infobip), so its CPU per request bounds the
sustained rate on a small machine. This measures exactly that: the client's process CPU
(``time.process_time``) for N keep-alive POSTs of a ~600-byte JSON body, each answer read
in full, on uvloop as the services run. The server is a separate process (its CPU is not
counted): a bare asyncio HTTP/1.1 responder answering 200 with a small JSON body.

Three clients: httpx and bare aiohttp (each as a far-side caller would use it: one pooled
client, the body given as bytes, the answer read), and ccbridge's own far-side client
(``HttpClient``, aiohttp under services/runtime/http_client.py: what production runs).
Each is measured ``--repeats`` times, interleaved (httpx, aiohttp, HttpClient, httpx, ...)
so that machine noise hits all alike; the table gives the median and the spread of µs of
CPU per request, sequential (one request in flight) and concurrent. Figures and the
decision they led to: bench/README.md ("HTTP client").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

BODY = (
    b'{"type":"case.message","id":"evt_0123456789abcdef0123456789abcdef",'
    b'"conversationId":"c0ffee00-0000-4000-8000-000000000001","idempotencyKey":"m-1",'
    b'"timestamp":"2026-01-01T00:00:00.000Z","caseId":"C-1","message":{"id":"m-1",'
    b'"direction":"INBOUND","authorType":"END_USER","createdAt":"2026-01-01T00:00:00.000Z",'
    b'"contentType":"TEXT","content":{"text":"' + b"x" * 300 + b'"}}}'
)
ANSWER = b'{"messageId":"M-1"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)
HEADERS = {
    "Content-Type": "application/json",
    "X-Ccbridge-Timestamp": "1767225600",
    "X-Ccbridge-Signature": "v1=" + "0" * 64,
    "Idempotency-Key": "m-1",
}


class _Responder(asyncio.Protocol):
    """Answers every request with RESPONSE (keep-alive; bodies by Content-Length)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transport is not an asyncio.Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(RESPONSE)


def _serve(sock: socket.socket) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Responder, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


async def _httpx_client(url: str, concurrency: int) -> tuple[Callable[[], Awaitable[int]], Any]:
    import httpx

    client = httpx.AsyncClient(
        timeout=10.0, limits=httpx.Limits(max_connections=concurrency), follow_redirects=False
    )

    async def post() -> int:
        response = await client.post(url, content=BODY, headers=HEADERS)
        await response.aread()
        return response.status_code

    return post, client.aclose


async def _aiohttp_client(url: str, concurrency: int) -> tuple[Callable[[], Awaitable[int]], Any]:
    import aiohttp

    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10.0),
        connector=aiohttp.TCPConnector(limit=concurrency),
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def post() -> int:
        async with session.post(url, data=BODY, headers=HEADERS, allow_redirects=False) as r:
            await r.read()
            return r.status

    return post, session.close


async def _http_client(url: str, concurrency: int) -> tuple[Callable[[], Awaitable[int]], Any]:
    """ccbridge's far-side client (aiohttp under services/runtime/http_client.py)."""
    from ccbridge.services.runtime.http_client import HttpClient

    client = HttpClient(timeout_s=10.0, max_answer_bytes=1 << 20, max_connections=concurrency)

    async def post() -> int:
        return (await client.request("POST", url, body=BODY, headers=HEADERS)).status

    return post, client.aclose


CLIENTS = {"httpx": _httpx_client, "aiohttp": _aiohttp_client, "HttpClient": _http_client}


async def _measure(name: str, url: str, requests: int, concurrency: int) -> float:
    """µs of this process's CPU per request (after a warm-up that opens the pool)."""
    post, close = await CLIENTS[name](url, concurrency)
    try:

        async def worker(count: int) -> None:
            for _ in range(count):
                if await post() != 200:
                    raise RuntimeError("the server did not answer 200")

        await asyncio.gather(*(worker(20) for _ in range(concurrency)))  # warm-up
        share = requests // concurrency
        start = time.process_time()
        await asyncio.gather(*(worker(share) for _ in range(concurrency)))
        return (time.process_time() - start) / (share * concurrency) * 1e6
    finally:
        await close()


def run(requests: int, repeats: int, concurrencies: list[int]) -> dict[str, dict[int, list[float]]]:
    import uvloop

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/events"
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    sock.close()
    samples: dict[str, dict[int, list[float]]] = {
        n: {c: [] for c in concurrencies} for n in CLIENTS
    }
    try:
        for _ in range(repeats):
            for concurrency in concurrencies:
                for name in CLIENTS:
                    samples[name][concurrency].append(
                        uvloop.run(_measure(name, url, requests, concurrency))
                    )
    finally:
        server.terminate()
        server.join()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="POSTs per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per client")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16], help="requests in flight"
    )
    args = parser.parse_args(argv)
    samples = run(args.requests, args.repeats, args.concurrency)
    print(f"CPU per POST (µs), {args.requests} POSTs x {args.repeats} repeats, median [min-max]")
    for concurrency in args.concurrency:
        medians = {}
        for name in CLIENTS:
            values = samples[name][concurrency]
            medians[name] = statistics.median(values)
            print(
                f"  in flight {concurrency:>3}  {name:<10} {medians[name]:7.0f}"
                f"  [{min(values):.0f}-{max(values):.0f}]"
            )
        ratio = medians["httpx"] / medians["aiohttp"]
        print(f"  in flight {concurrency:>3}  httpx/aiohttp {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
