"""Bounded under abuse, through the real uvicorn server: a body that trickles in is cut
off after CCBRIDGE_BODY_TIMEOUT_S (408), and beyond CCBRIDGE_MAX_CONCURRENT_REQUESTS
requests in progress the gateway answers 503 + Retry-After before reading a byte;
probes are never shed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers
from tests.gateway.test_infobip_legacy import infobip_message


@asynccontextmanager
async def gateway(peers: Peers, **env: str) -> AsyncIterator[tuple[int, httpx.AsyncClient]]:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="0", **env)
    )
    running = await start(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            yield running.port, client
    finally:
        await running.stop()


async def slow_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A webhook whose body never finishes arriving."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /webhooks/infobip/{WEBHOOK_TOKEN} HTTP/1.1\r\nHost: gw\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode()
    )
    await writer.drain()
    return reader, writer


async def test_a_trickling_body_gets_408(peers: Peers) -> None:
    async with gateway(peers, CCBRIDGE_BODY_TIMEOUT_S="0.3") as (port, _):
        reader, writer = await slow_body(port)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 408")
    assert b'"code":"request_timeout"' in body
    assert peers.session.calls == []


async def test_beyond_the_limit_requests_are_shed_with_retry_after(peers: Peers) -> None:
    env = {"CCBRIDGE_MAX_CONCURRENT_REQUESTS": "3", "CCBRIDGE_BODY_TIMEOUT_S": "30"}
    async with gateway(peers, **env) as (port, client):
        held = [await slow_body(port) for _ in range(3)]
        url = f"/webhooks/infobip/{WEBHOOK_TOKEN}"
        for _ in range(200):  # until the server has all three in progress
            shed = await client.post(url, json=infobip_message("m-shed"))
            if shed.status_code == 503:
                break
            await asyncio.sleep(0.01)
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"]["code"] == "overloaded"
        assert (await client.get("/healthz")).status_code == 200  # probes are never shed
        assert (await client.get("/metrics")).status_code == 200
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        for _ in range(500):  # the held slots free up as the server sees them go
            ok = await client.post(url, json=infobip_message("m-after"))
            if ok.status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert ok.status_code == 200
    shed_ids = [m.id for call in peers.session.calls for m in getattr(call.request, "messages", [])]
    assert "m-shed" not in shed_ids
