"""The Genesys simulator answers as the API documents it: OAuth client credentials, 401
without a valid token, 404 for an unknown integration or conversation, 400 for a body
that does not fit the SDK's model, 429 with Retry-After, and one message per
``channel.messageId``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ccbridge.simulators.genesys.app import create_app
from ccbridge.simulators.genesys.models import validate
from ccbridge.simulators.genesys.state import GenesysState

INTEGRATION = "int-1"
PATH = f"/api/v2/conversations/messages/{INTEGRATION}/inbound/open/message"


def _message(message_id: str = "m-1", **extra: object) -> dict[str, object]:
    return {
        "channel": {
            "from": {"id": "385981234567", "idType": "Phone"},
            "messageId": message_id,
            "time": "2026-01-01T10:00:00.000Z",
        },
        "text": "hello",
        **extra,
    }


@pytest.fixture
async def sim() -> AsyncIterator[tuple[GenesysState, httpx.AsyncClient]]:
    state = GenesysState(
        integration_id=INTEGRATION, client_id="c", client_secret="s", token_ttl_s=60
    )
    app = create_app(state, webhook_secret="w" * 20, bridge_webhook_url=None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        yield state, client


async def _token(client: httpx.AsyncClient, secret: str = "s") -> httpx.Response:
    return await client.post(
        "/oauth/token",
        auth=("c", secret),
        content=b"grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )


async def test_oauth_client_credentials(sim: tuple[GenesysState, httpx.AsyncClient]) -> None:
    _state, client = sim
    assert (await _token(client, "wrong")).status_code == 401
    answer = await _token(client)
    assert answer.status_code == 200
    assert answer.json()["token_type"] == "bearer" and answer.json()["expires_in"] == 60


async def test_inbound_messages(sim: tuple[GenesysState, httpx.AsyncClient]) -> None:
    state, client = sim
    assert (await client.post(PATH, json=_message())).status_code == 401
    auth = {"Authorization": f"Bearer {(await _token(client)).json()['access_token']}"}
    unknown = await client.post(PATH.replace(INTEGRATION, "nope"), json=_message(), headers=auth)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not.found"
    bad = await client.post(PATH, json=_message(extra=1, text=5), headers=auth)
    assert bad.status_code == 400
    assert "$.extra: not a field" in bad.json()["message"]
    assert "$.text: must be a str" in bad.json()["message"]
    first = await client.post(
        PATH, json=_message(), headers=auth, params={"prefetchConversationId": "true"}
    )
    assert first.status_code == 200 and first.json()["conversationId"]
    assert validate("OpenMessageNormalizedMessage", first.json()) == []  # its answers fit too
    again = await client.post(PATH, json=_message(), headers=auth)
    assert again.json()["id"] == first.json()["id"] and "conversationId" not in again.json()
    (conversation,) = state.conversations.values()
    assert [m["text"] for m in conversation.messages] == ["hello"]
    looked_up = await client.get(f"/api/v2/conversations/messages/{conversation.id}", headers=auth)
    assert [p["purpose"] for p in looked_up.json()["participants"]] == ["customer", "agent"]
    assert validate("MessageConversation", looked_up.json()) == []
    missing = await client.get("/api/v2/conversations/messages/nope", headers=auth)
    assert missing.status_code == 404
    assert (await client.post("/_sim/fail", json={"status": 429, "retryAfter": 3})).is_success
    limited = await client.post(PATH, json=_message("m-2"), headers=auth)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert (await client.post("/_sim/down")).is_success
    assert (await client.post(PATH, json=_message("m-3"), headers=auth)).status_code == 503


async def test_control_calls_refuse_bad_bodies(
    sim: tuple[GenesysState, httpx.AsyncClient],
) -> None:
    _state, client = sim
    assert (await client.post("/_sim/fail", content=b"[")).status_code == 400
    assert (await client.post("/_sim/conversations/nope/reply", json={})).status_code == 404
