"""POST /webhooks/infobip/events: Infobip Subscriptions webhook (HMAC or Basic)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.errors import Unavailable
from ccbridge.session.v1 import session_pb2
from tests.gateway.conftest import (
    HMAC_SECRETS,
    Peers,
    assert_error,
    basic,
    running_gateway,
    sign_b64,
    sign_hex,
)

URL = "/webhooks/infobip/events"


def fresh(seconds_ago: float = 0.0) -> str:
    """An event timestamp in Infobip's format, ``seconds_ago`` before now."""
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return at.isoformat(timespec="milliseconds")


CONV = "b9263ee4-93b9-4352-912a-3b558f751276"


def inbound_event(
    message_id: str = "f74f3515", conversation_id: str = CONV, content: object = None
) -> dict[str, object]:
    """An INBOUND_MESSAGE event as the Infobip spec's field examples assemble it."""
    return {
        "type": "INBOUND_MESSAGE",
        "timestamp": fresh(),
        "payload": {
            "id": conversation_id,
            "shortId": "100",
            "status": "OPEN",
            "priority": "NORMAL",
            "channel": "WHATSAPP",
            "direction": "INBOUND",
            "queue": {"id": "q", "name": "Support"},
            "tags": [{"id": "t", "name": "billing"}],
            "invoker": {"type": "SYSTEM", "id": None, "name": None},
            "message": {
                "id": message_id,
                "messageId": "ABGGFlA5FpafAgo6EhpVdL",
                "channel": "WHATSAPP",
                "from": "385981234567",
                "to": "447492263897",
                "conversationId": conversation_id,
                "createdAt": "2025-03-21T13:12:06.495+00:00",
                "content": {"text": "I need help"} if content is None else content,
            },
        },
    }


def status_event(status: str, conversation_id: str = CONV) -> dict[str, object]:
    return {
        "type": "CONVERSATION_STATUS_UPDATED",
        "timestamp": fresh(),
        "payload": {
            "id": conversation_id,
            "status": status,
            "priority": "NORMAL",
            "lastMessage": {"direction": "OUTBOUND", "channel": "WHATSAPP"},
        },
    }


async def post_signed(
    client: httpx.AsyncClient,
    doc: object,
    *,
    header: str = "X-Hub-Signature-256",
    value: str | None = None,
) -> httpx.Response:
    body = orjson.dumps(doc)
    signature = value if value is not None else "sha256=" + sign_hex(body)
    return await client.post(
        URL, content=body, headers={"Content-Type": "application/json", header: signature}
    )


async def test_hmac_good_in_the_configured_header_and_encoding(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    body = orjson.dumps(inbound_event())
    variants = [
        ("X-Hub-Signature-256", "sha256=" + sign_hex(body)),
        ("x-hub-signature-256", sign_hex(body)),
        ("X-Hub-Signature-256", sign_hex(body, HMAC_SECRETS[1]).upper()),  # rotated secret
    ]
    for header, value in variants:
        response = await gateway.post(
            URL, content=body, headers={"Content-Type": "application/json", header: value}
        )
        assert response.status_code == 200, (header, value, response.text)
    assert len(peers.session.rpc_calls("Ingest")) == len(variants)


async def test_hmac_header_algorithm_and_encoding_are_settings(peers: Peers) -> None:
    peers.session.open(CONV)
    body = orjson.dumps(inbound_event())
    digest = hmac.new(HMAC_SECRETS[0].encode(), body, hashlib.sha512).digest()
    env = peers.env(
        INFOBIP_WEBHOOK_HMAC_HEADER="X-Infobip-Signature",
        INFOBIP_WEBHOOK_HMAC_ALGORITHM="HMAC_SHA_512",
        INFOBIP_WEBHOOK_HMAC_ENCODING="base64",
    )
    async with running_gateway(env) as (client, _app):
        for header, value in (
            ("X-Infobip-Signature", base64.b64encode(digest).decode()),
            ("X-Infobip-Signature", base64.urlsafe_b64encode(digest).decode().rstrip("=")),
        ):
            response = await client.post(
                URL, content=body, headers={"Content-Type": "application/json", header: value}
            )
            assert response.status_code == 200, (header, value, response.text)
        for header, value in (
            ("X-Infobip-Signature", digest.hex()),  # not the configured encoding
            ("X-Hub-Signature-256", base64.b64encode(digest).decode()),  # not the header
            ("X-Infobip-Signature", sign_b64(body)),  # SHA-256, not the algorithm
        ):
            response = await client.post(
                URL, content=body, headers={"Content-Type": "application/json", header: value}
            )
            assert_error(response, 401, "unauthorized")
    assert len(peers.session.rpc_calls("Ingest")) == 2


async def test_hmac_bad_or_missing_is_401(gateway: httpx.AsyncClient, peers: Peers) -> None:
    body = orjson.dumps(inbound_event())
    bad = [
        {},
        {"X-Hub-Signature-256": "sha256=" + sign_hex(body, "wrong-secret")},
        {"X-Hub-Signature-256": "sha256=" + sign_hex(body + b" ")},
        {"X-Hub-Signature-256": "not a signature"},
        {"X-Hub-Signature-256": "sha256="},
        {"X-Hub-Signature-256": sign_b64(body)},  # base64 while hex is configured
        {"X-Signature": sign_hex(body)},  # another header than the configured one
        {"Authorization": basic(password="wrong")},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer " + sign_hex(body)},
    ]
    for headers in bad:
        response = await gateway.post(
            URL, content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


async def test_basic_auth(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    response = await gateway.post(URL, json=inbound_event(), headers={"Authorization": basic()})
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "closed": 0,
        "rejected": 0,
    }


async def test_basic_only_and_hmac_only_configurations(peers: Peers) -> None:
    peers.session.open(CONV)
    basic_only = peers.env(INFOBIP_WEBHOOK_SECRET="")
    async with running_gateway(basic_only) as (client, _app):
        assert (
            await client.post(URL, json=inbound_event(), headers={"Authorization": basic()})
        ).status_code == 200
        response = await post_signed(client, inbound_event())
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Basic")
    hmac_only = peers.env(INFOBIP_WEBHOOK_BASIC_USER="", INFOBIP_WEBHOOK_BASIC_PASSWORD="")
    async with running_gateway(hmac_only) as (client, _app):
        assert (await post_signed(client, inbound_event())).status_code == 200
        response = await client.post(URL, json=inbound_event(), headers={"Authorization": basic()})
        assert_error(response, 401, "unauthorized")


async def test_no_auth_configured_refuses_everything(peers: Peers) -> None:
    env = peers.env(
        INFOBIP_WEBHOOK_SECRET="", INFOBIP_WEBHOOK_BASIC_USER="", INFOBIP_WEBHOOK_BASIC_PASSWORD=""
    )
    async with running_gateway(env) as (client, _app):
        response = await client.post(URL, json=inbound_event())
        assert_error(response, 401, "webhook_auth_not_configured")
    assert peers.session.calls == []


async def test_inbound_message_is_ingested(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    response = await post_signed(gateway, inbound_event())
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "closed": 0,
        "rejected": 0,
    }
    [call] = peers.session.rpc_calls("Ingest")
    assert isinstance(call.request, session_pb2.IngestRequest)
    [message] = call.request.messages
    assert message.id == "f74f3515"
    assert message.conversation_id == CONV
    assert message.direction == common_pb2.DIRECTION_INBOUND
    assert (message.channel, getattr(message, "from"), message.to) == (
        "WHATSAPP",
        "385981234567",
        "447492263897",
    )
    assert message.content_type == ""  # the event has none: Session reads it from Infobip
    assert json.loads(message.content_json) == {"text": "I need help"}
    assert message.created_at.ToJsonString() == "2025-03-21T13:12:06.495Z"


async def test_content_type_is_never_guessed(gateway: httpx.AsyncClient, peers: Peers) -> None:
    """Events carry no contentType: it stays empty (Session reads it from Infobip), whatever
    the content looks like; one the event does carry is passed through untouched."""
    peers.session.open(CONV)
    contents: list[dict[str, object]] = [
        {"text": "hi"},
        {"url": "https://cdn.example.com/a/photo.JPG?sig=1", "caption": "x"},
        {"url": "https://cdn.example.com/a/blob"},
        {"latitude": 51.1, "longitude": -1.8},
        {"type": "BOT_BLOCKED"},
    ]
    events = [inbound_event(f"m{i}", content=content) for i, content in enumerate(contents)]
    typed = inbound_event("m9", content={"sticker": "like_heart"})
    typed["payload"]["message"]["contentType"] = "INSTAGRAM_STICKER"  # type: ignore[index]
    response = await post_signed(gateway, [*events, typed])
    assert response.status_code == 200
    [call] = peers.session.rpc_calls("Ingest")  # one call for the whole array
    assert isinstance(call.request, session_pb2.IngestRequest)
    assert [m.content_type for m in call.request.messages] == [""] * 5 + ["INSTAGRAM_STICKER"]
    assert [json.loads(m.content_json) for m in call.request.messages] == [
        *contents,
        {"sticker": "like_heart"},
    ]


async def test_conversation_id_falls_back_to_payload_id(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    event = inbound_event()
    del event["payload"]["message"]["conversationId"]  # type: ignore[index]
    assert (await post_signed(gateway, event)).status_code == 200
    [call] = peers.session.rpc_calls("Ingest")
    assert isinstance(call.request, session_pb2.IngestRequest)
    assert call.request.messages[0].conversation_id == CONV


async def test_conversation_closed_closes_handover(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    response = await post_signed(gateway, status_event("CLOSED"))
    assert response.status_code == 200
    assert response.json()["closed"] == 1
    [call] = peers.session.rpc_calls("CloseHandover")
    assert isinstance(call.request, session_pb2.CloseHandoverRequest)
    assert call.request.conversation_id == CONV
    assert call.request.initiator == session_pb2.CLOSE_INITIATOR_INFOBIP
    assert call.request.reason == "infobip_closed"


async def test_closed_without_handover_is_fine(gateway: httpx.AsyncClient, peers: Peers) -> None:
    response = await post_signed(gateway, status_event("CLOSED", "bot-owned"))
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicates": 0,
        "ignored": 1,
        "closed": 0,
        "rejected": 0,
    }


async def test_other_events_are_ignored(gateway: httpx.AsyncClient, peers: Peers) -> None:
    for doc in (
        status_event("OPEN"),
        status_event("SOLVED"),
        {"type": "CONVERSATION_TAG_ADDED", "timestamp": fresh(), "payload": {"id": CONV}},
        {"type": "OUTBOUND_MESSAGE", "timestamp": fresh(), "payload": {"message": {"id": "x"}}},
    ):
        response = await post_signed(gateway, doc)
        assert response.status_code == 200
        assert response.json()["ignored"] == 1
    assert peers.session.calls == []


async def test_array_keeps_event_order(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    events = [
        inbound_event("m1"),
        inbound_event("m2"),
        status_event("CLOSED"),
        {"type": "CONVERSATION_PRIORITY_UPDATED", "timestamp": fresh(), "payload": {}},
    ]
    response = await post_signed(gateway, events)
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "ignored": 1,
        "closed": 1,
        "rejected": 0,
    }
    assert [c.rpc for c in peers.session.calls] == ["Ingest", "CloseHandover"]


async def test_invalid_events_are_400(gateway: httpx.AsyncClient, peers: Peers) -> None:
    bad_message = inbound_event()
    del bad_message["payload"]["message"]["id"]  # type: ignore[index]
    cases: list[tuple[object, str]] = [
        ({"timestamp": "x"}, "invalid_event"),
        ({"type": "INBOUND_MESSAGE"}, "invalid_event"),
        ({"type": "INBOUND_MESSAGE", "payload": {"id": CONV}}, "invalid_event"),
        (bad_message, "invalid_message"),
        ({"type": "CONVERSATION_STATUS_UPDATED", "payload": {"status": "CLOSED"}}, "invalid_event"),
        ([inbound_event(), 3], "invalid_event"),
        ("text", "invalid_body"),
    ]
    for doc, code in cases:
        response = await post_signed(gateway, doc)
        assert_error(response, 400, code)
    array = await post_signed(gateway, [inbound_event(), {"payload": {}}])
    assert "events[1]" in array.json()["error"]["message"]
    assert peers.session.calls == []


async def test_signed_garbage_never_5xx(gateway: httpx.AsyncClient) -> None:
    rng = random.Random(99)
    bodies = [
        b"",
        b"null",
        b"[null]",
        b"{}",
        b"[{}]",
        b"{" * 3000,
        b'{"type": 1}',
        b'{"type": "INBOUND_MESSAGE", "payload": []}',
        b'{"type": "INBOUND_MESSAGE", "payload": {"message": {"id": "m", "content": 1}}}',
        b'{"type": "CONVERSATION_STATUS_UPDATED", "payload": {"id": {}, "status": "CLOSED"}}',
    ]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 48))) for _ in range(30)]
    for body in bodies:
        response = await gateway.post(
            URL,
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign_hex(body)},
        )
        assert response.status_code < 500, (body, response.text)
        assert_error(response, response.status_code)


async def test_session_unavailable_is_503(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.error = Unavailable("down")
    for doc in (inbound_event(), status_event("CLOSED")):
        response = await post_signed(gateway, doc)
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"


async def test_wrong_content_type_is_415(gateway: httpx.AsyncClient) -> None:
    body = orjson.dumps(inbound_event())
    response = await gateway.post(
        URL,
        content=body,
        headers={"Content-Type": "text/plain", "X-Hub-Signature-256": sign_hex(body)},
    )
    assert_error(response, 415, "unsupported_media_type")
