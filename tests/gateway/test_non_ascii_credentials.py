"""Every credential the gateway compares (bearer token, webhook path token, Infobip HMAC
and Basic headers) answers the normal 401 JSON when it carries non-ASCII bytes: a
``hmac.compare_digest`` on a non-ASCII str would raise TypeError (an unauthenticated 500).
"""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest

from tests.gateway.conftest import (
    ESCALATION_TOKEN,
    WEBHOOK_TOKEN,
    Peers,
    assert_error,
    basic,
    sign_hex,
)
from tests.gateway.test_infobip_events import URL, inbound_event

# Bytes >= 0x80 as a client may send them; Starlette decodes header values as latin-1.
NON_ASCII = ["\u00e9", "\u00ff\u00fe", "\u00e9" * 64]


@pytest.mark.parametrize("junk", NON_ASCII)
async def test_bearer_token(gateway: httpx.AsyncClient, peers: Peers, junk: str) -> None:
    for token in (junk, ESCALATION_TOKEN + junk, ESCALATION_TOKEN[:-1] + junk):
        response = await gateway.post(
            "/v1/escalations",
            json={"conversationId": "c-1"},
            headers={b"Authorization": f"Bearer {token}".encode("latin-1")},
        )
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


@pytest.mark.parametrize("junk", ["%C3%A9", "%FF%FE", "%E9", "\u00e9", "%ED%B0%80"])
async def test_webhook_path_token(gateway: httpx.AsyncClient, peers: Peers, junk: str) -> None:
    for token in (junk, WEBHOOK_TOKEN + junk, WEBHOOK_TOKEN[:-1] + junk):
        response = await gateway.post(f"/webhooks/infobip/{token}", json={"results": []})
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


@pytest.mark.parametrize("junk", NON_ASCII)
@pytest.mark.parametrize("header", ["X-Hub-Signature-256", "X-Signature"])
async def test_infobip_hmac_headers(
    gateway: httpx.AsyncClient, peers: Peers, header: str, junk: str
) -> None:
    body = orjson.dumps(inbound_event())
    good = sign_hex(body)
    for value in (junk, "sha256=" + good[:-1] + junk, good[:-2] + junk, good + junk):
        response = await gateway.post(
            URL,
            content=body,
            headers={"Content-Type": "application/json", header: value.encode("latin-1")},
        )
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


@pytest.mark.parametrize("junk", NON_ASCII)
async def test_infobip_basic_credentials(
    gateway: httpx.AsyncClient, peers: Peers, junk: str
) -> None:
    encoded = base64.b64encode(f"infobip{junk}:pässword{junk}".encode()).decode()
    for value in (
        "Basic " + junk,
        basic()[:-1] + junk,
        basic() + junk,
        "Basic " + encoded,
        junk + " " + basic().split(" ", 1)[1],
    ):
        response = await gateway.post(
            URL,
            json=inbound_event(),
            headers={b"Authorization": value.encode("latin-1")},
        )
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []
