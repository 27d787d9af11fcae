"""One nesting limit on every JSON route (services/runtime/json_depth.py): bodies nested
deeper than MAX_JSON_DEPTH answer 400 JSON, never a 5xx, and reach no peer."""

from __future__ import annotations

import httpx
import orjson
import pytest

from ccbridge.services.runtime.json_depth import MAX_JSON_DEPTH
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, assert_error, sign_hex
from tests.gateway.test_escalations import AUTH
from tests.gateway.test_infobip_events import URL as EVENTS_URL
from tests.gateway.test_infobip_events import inbound_event
from tests.gateway.test_infobip_legacy import infobip_message

DEPTHS = [MAX_JSON_DEPTH + 1, 300, 2_000]


def nested(levels: int) -> bytes:
    """``levels`` nested arrays (``[]`` is one level)."""
    return b"[" * levels + b"]" * levels


def bodies(levels: int) -> dict[str, bytes]:
    """Per route, a body whose deepest point is ``levels`` levels down."""
    # Each document nests "@" some levels down; the nested arrays there make up the rest.
    escalation = orjson.dumps({"conversationId": "c-1", "extra": "@"})
    legacy = orjson.dumps({"results": [infobip_message("m1", content={"x": "@"})]})
    event = orjson.dumps([inbound_event("m1", content={"x": "@"})])
    return {
        "top": nested(levels),
        "escalation": escalation.replace(b'"@"', nested(levels - 1)),
        "legacy": legacy.replace(b'"@"', nested(levels - 4)),
        "event": event.replace(b'"@"', nested(levels - 5)),
    }


async def post(client: httpx.AsyncClient, route: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if route == "escalation":
        return await client.post("/v1/escalations", content=body, headers={**headers, **AUTH})
    if route == "legacy":
        return await client.post(
            f"/webhooks/infobip/{WEBHOOK_TOKEN}", content=body, headers=headers
        )
    signature = {"X-Hub-Signature-256": "sha256=" + sign_hex(body)}
    return await client.post(EVENTS_URL, content=body, headers={**headers, **signature})


@pytest.mark.parametrize("levels", DEPTHS)
async def test_deep_bodies_are_400(gateway: httpx.AsyncClient, peers: Peers, levels: int) -> None:
    for name, body in bodies(levels).items():
        routes = ["escalation", "legacy", "event"] if name == "top" else [name]
        for route in routes:
            response = await post(gateway, route, body)
            assert_error(response, 400, "invalid_json")
    assert peers.session.calls == []


async def test_the_limit_itself_is_accepted(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open("b9263ee4-93b9-4352-912a-3b558f751276")
    for route, body in bodies(MAX_JSON_DEPTH).items():
        if route == "top":
            continue
        response = await post(gateway, route, body)
        assert response.status_code < 300, (route, response.text)


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00", b"\\udc00\\ud800", b"x\\ud83d"])
async def test_lone_surrogates_are_400(
    gateway: httpx.AsyncClient, peers: Peers, escape: bytes
) -> None:
    # A lone surrogate cannot be encoded to UTF-8 further on (Redis, gRPC, Infobip).
    text = b'"' + escape + b'"'
    documents = {
        "escalation": orjson.dumps({"conversationId": "c-1", "tags": ["@"]}),
        "legacy": orjson.dumps({"results": [infobip_message("m1", content={"text": "@"})]}),
        "event": orjson.dumps([inbound_event("m1", content={"text": "@"})]),
    }
    for route, doc in documents.items():
        response = await post(gateway, route, doc.replace(b'"@"', text))
        assert_error(response, 400, "invalid_json")
    assert peers.session.calls == []
