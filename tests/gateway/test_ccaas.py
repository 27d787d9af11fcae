"""POST /webhooks/ccaas/{connector}: forwarded to ConnectorService.HandleWebhook."""

from __future__ import annotations

import time

import httpx

from ccbridge.connector.v1 import connector_pb2
from ccbridge.services.connector.adapters.webhook_signature import sign, signed_headers
from tests.gateway.conftest import Peers, assert_error, running_gateway


async def test_forwards_raw_body_and_lowercased_headers(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    body = b'{"event": "agent_message", "text": "hello"}\n  '
    signed = signed_headers("some-connector-secret-0123", body)
    response = await gateway.post(
        "/webhooks/ccaas/webhook",
        content=body,
        headers={"Content-Type": "application/json", "X-Request-Id": "rid-42", **signed},
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 1, "ignored": 0}
    [call] = peers.connector.calls
    request = call.request
    assert isinstance(request, connector_pb2.HandleWebhookRequest)
    assert request.connector == "webhook"
    assert request.body == body  # byte for byte: signatures are computed over it
    headers = {h.name: h.value for h in request.headers}
    assert headers["x-ccbridge-signature"] == signed["X-Ccbridge-Signature"]
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
            await client.post(
                "/webhooks/ccaas/webhook",
                content=b"x" * 1025,
                headers=signed_headers("some-connector-secret-0123", b"x"),
            ),
            413,
            "payload_too_large",
        )
    assert peers.connector.calls == []


async def test_unsigned_webhook_events_are_refused_before_reading(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    """The generic contract's signature headers are checked at the gateway before the
    body is read: missing, stale or malformed ones never reach the connector."""
    body = b'{"type": "agent.message"}'
    now = int(time.time())
    for headers in (
        {},
        {"X-Ccbridge-Timestamp": str(now)},
        {
            "X-Ccbridge-Timestamp": str(now - 3600),
            "X-Ccbridge-Signature": sign("k" * 16, now - 3600, body),
        },
        {"X-Ccbridge-Timestamp": str(now), "X-Ccbridge-Signature": "v1=nothex"},
        {"X-Ccbridge-Timestamp": "soon", "X-Ccbridge-Signature": sign("k" * 16, now, body)},
    ):
        assert_error(
            await gateway.post("/webhooks/ccaas/webhook", content=body, headers=headers),
            401,
            "unauthorized",
        )
    assert peers.connector.calls == []


async def test_with_the_secret_the_gateway_verifies_before_forwarding(peers: Peers) -> None:
    secret = "connector-secret-0123456789"
    env = peers.env(CCBRIDGE_WEBHOOK_CONNECTOR_SECRET=f"{secret},older-secret-0123456789")
    body = b'{"type": "agent.message"}'
    async with running_gateway(env) as (client, _app):
        wrong = signed_headers("not-the-secret-0123456789", body)
        assert_error(
            await client.post("/webhooks/ccaas/webhook", content=body, headers=wrong),
            401,
            "unauthorized",
        )
        assert peers.connector.calls == []
        for key in (secret, "older-secret-0123456789"):  # rotation: any verifies
            ok = await client.post(
                "/webhooks/ccaas/webhook", content=body, headers=signed_headers(key, body)
            )
            assert ok.status_code == 200
    assert len(peers.connector.calls) == 2
