"""Unauthenticated callers cost almost nothing (issue 12 B.4): the events route refuses
a request without valid Basic credentials or a well-formed signature header before it
reads a byte of the body — through the real uvicorn server, with a body that never
finishes arriving."""

from __future__ import annotations

import asyncio
import base64

import pytest

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from tests.gateway.conftest import BASIC_PASSWORD, BASIC_USER, Peers


async def status_of_a_body_that_never_ends(port: int, headers: dict[str, str]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(
        (
            "POST /webhooks/infobip/events HTTP/1.1\r\nHost: gw\r\n"
            "Content-Type: application/json\r\nContent-Length: 900000\r\n"
            f"{lines}\r\n"
        ).encode()
        + b"["
    )
    await writer.drain()
    try:
        # The body timeout is 30 s: an answer within 5 s was given without the body.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    except TimeoutError:
        head = b"(no answer while the body was pending)"
    writer.close()
    await writer.wait_closed()
    return head.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # nothing
        {"X-Hub-Signature-256": "sha256=not-hex"},  # not a signature at all
        {"X-Hub-Signature-256": "sha256=" + "ab" * 8},  # too short for SHA-256
        {"Authorization": "Basic " + base64.b64encode(b"infobip:wrong").decode()},
        {"Authorization": "Bearer something"},
    ],
)
async def test_refused_before_reading_the_body(peers: Peers, headers: dict[str, str]) -> None:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="0", CCBRIDGE_BODY_TIMEOUT_S="30")
    )
    running = await start(settings)
    try:
        status = await status_of_a_body_that_never_ends(running.port, headers)
    finally:
        await running.stop()
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert peers.session.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Hub-Signature-256": "sha256=" + "ab" * 32},  # well-formed: judged on the body
        {
            "Authorization": "Basic "
            + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
        },
    ],
)
async def test_plausible_credentials_wait_for_the_body(
    peers: Peers, headers: dict[str, str]
) -> None:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="0", CCBRIDGE_BODY_TIMEOUT_S="30")
    )
    running = await start(settings)
    try:
        status = await status_of_a_body_that_never_ends(running.port, headers)
    finally:
        await running.stop()
    assert status == b"(no answer while the body was pending)"
