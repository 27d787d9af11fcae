"""A client that sends part of a body and disconnects: no ERROR log, no traceback (a
flood of those would be cheap), counted as 499 — through the real uvicorn server."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.mesh_tls import INSECURE_WARNING
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers


async def test_disconnect_mid_body_is_not_an_error(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="0")
    )
    running = await start(settings)
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(20):
                _reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
                writer.write(
                    f"POST /webhooks/infobip/{WEBHOOK_TOKEN} HTTP/1.1\r\n"
                    "Host: gw\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100000\r\n\r\n".encode()
                    + b'{"id": "m1", "content": '
                )
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            # The server has seen every disconnect once its metrics count them.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
                for _ in range(500):
                    text = (await client.get("/metrics")).text
                    if 'status="499"' in text and _count_499(text) >= 20:
                        break
                    await asyncio.sleep(0.01)
            assert _count_499(text) == 20
    finally:
        await running.stop()
    # (The in-process peers are plaintext: the mesh's development warning is expected.)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warnings if r.getMessage() != INSECURE_WARNING]
    assert not [r for r in caplog.records if r.exc_info]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)
    assert peers.session.calls == []


def _count_499(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ccbridge_gateway_requests_total") and 'status="499"' in line
    )
