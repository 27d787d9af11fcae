"""POST /webhooks/ccaas/{connector}: forwarded to ConnectorService.HandleWebhook."""

from __future__ import annotations

import httpx

from ccbridge.connector.v1 import connector_pb2
from tests.gateway.conftest import Peers, assert_error, running_gateway


async def test_forwards_raw_body_and_lowercased_headers(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    body = b'{"event": "agent_message", "text": "hello"}\n  '
    response = await gateway.post(
        "/webhooks/ccaas/webhook",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-CCBridge-Signature": "t=1,v1=abc",
            "X-Request-Id": "rid-42",
        },
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 1, "ignored": 0}
    [call] = peers.connector.calls
    request = call.request
    assert isinstance(request, connector_pb2.HandleWebhookRequest)
    assert request.connector == "webhook"
    assert request.body == body  # byte for byte: signatures are computed over it
    headers = {h.name: h.value for h in request.headers}
    assert headers["x-ccbridge-signature"] == "t=1,v1=abc"
    assert headers["content-type"] == "application/json"
    assert all(h.name == h.name.lower() for h in request.headers)
    assert call.request_id == "rid-42"


async def test_any_content_type_and_empty_body(gateway: httpx.AsyncClient, peers: Peers) -> None:
    response = await gateway.post(
        "/webhooks/ccaas/rt",
        content=b"a=1&b=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert (await gateway.post("/webhooks/ccaas/rt")).status_code == 200
    assert [c.request.body for c in peers.connector.calls] == [b"a=1&b=2", b""]  # type: ignore[attr-defined]


async def test_maps_connector_errors(gateway: httpx.AsyncClient) -> None:
    cases = [
        ("reject", 401, "unauthenticated"),
        ("malformed", 400, "invalid_argument"),
        ("down", 503, "unavailable"),
        ("nosuch", 404, "not_found"),
    ]
    for connector, status, code in cases:
        response = await gateway.post(f"/webhooks/ccaas/{connector}", content=b"{}")
        assert_error(response, status, code)
    down = await gateway.post("/webhooks/ccaas/down", content=b"{}")
    assert down.headers["retry-after"] == "1"


async def test_bad_connector_name_and_size(peers: Peers) -> None:
    async with running_gateway(peers.env(CCBRIDGE_MAX_BODY_BYTES="1024")) as (client, _app):
        assert_error(
            await client.post("/webhooks/ccaas/bad.name", content=b"{}"), 404, "unknown_connector"
        )
        assert_error(
            await client.post("/webhooks/ccaas/webhook", content=b"x" * 1025),
            413,
            "payload_too_large",
        )
    assert peers.connector.calls == []
