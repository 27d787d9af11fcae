"""POST /webhooks/infobip/{token}: Infobip's legacy account-configuration webhook."""

from __future__ import annotations

import json
import random
import time

import httpx
import orjson
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.errors import Unavailable
from ccbridge.session.v1 import session_pb2
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, assert_error, running_gateway
from tests.support.redis_server import free_port

URL = f"/webhooks/infobip/{WEBHOOK_TOKEN}"
CONV = "4461ea29-c09e-4ba8-a751-df86cf0a0eb9"


def infobip_message(
    message_id: str, conversation_id: str = CONV, **extra: object
) -> dict[str, object]:
    """A message shaped like an Infobip Get Messages item."""
    doc: dict[str, object] = {
        "id": message_id,
        "channel": "WHATSAPP",
        "from": "385981234567",
        "to": "447492263897",
        "direction": "INBOUND",
        "conversationId": conversation_id,
        "createdAt": "2025-03-21T13:12:06.495+00:00",
        "updatedAt": "2025-03-21T13:12:06.495+00:00",
        "contentType": "TEXT",
        "content": {"text": "I need help"},
    }
    doc.update(extra)
    return doc


def ingested(peers: Peers) -> list[common_pb2.Message]:
    messages: list[common_pb2.Message] = []
    for call in peers.session.rpc_calls("Ingest"):
        assert isinstance(call.request, session_pb2.IngestRequest)
        messages.extend(call.request.messages)
    return messages


async def test_bad_token_is_401(gateway: httpx.AsyncClient, peers: Peers) -> None:
    for token in ("wrong-token-wrong-token", WEBHOOK_TOKEN + "x", WEBHOOK_TOKEN[:-1], "%C3%BC"):
        response = await gateway.post(f"/webhooks/infobip/{token}", json=infobip_message("m1"))
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


async def test_token_rotation_accepts_old_and_new(peers: Peers) -> None:
    new = "rotated-webhook-token-9876543210"
    env = peers.env(CCBRIDGE_WEBHOOK_TOKEN=f"{new},{WEBHOOK_TOKEN}")
    async with running_gateway(env) as (client, _app):
        for token in (new, WEBHOOK_TOKEN):
            response = await client.post(f"/webhooks/infobip/{token}", json=infobip_message("r"))
            assert response.status_code == 200
        bad = await client.post("/webhooks/infobip/not-a-configured-token-x", json={})
        assert_error(bad, 401, "unauthorized")


def test_every_rotated_token_must_be_long_enough() -> None:
    from ccbridge.gateway.settings import GatewaySettings
    from ccbridge.services.runtime.settings import SettingsError

    with pytest.raises(SettingsError, match="CCBRIDGE_WEBHOOK_TOKEN: each secret"):
        GatewaySettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_ESCALATION_TOKEN": "x" * 16,
                "CCBRIDGE_WEBHOOK_TOKEN": f"{WEBHOOK_TOKEN},short",
            }
        )


async def test_single_message_is_ingested(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    body = infobip_message("m1", singleSendMessage={"opaque": True}, authorType="CUSTOMER")
    response = await gateway.post(URL, json=body)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
    [message] = ingested(peers)
    assert message.id == "m1"
    assert message.conversation_id == CONV
    assert message.direction == common_pb2.DIRECTION_INBOUND
    assert message.channel == "WHATSAPP"
    assert getattr(message, "from") == "385981234567"
    assert message.to == "447492263897"
    assert message.author_type == "CUSTOMER"
    assert message.content_type == "TEXT"
    assert json.loads(message.content_json) == {"text": "I need help"}
    assert message.created_at.ToJsonString() == "2025-03-21T13:12:06.495Z"

    again = await gateway.post(URL, json=body)
    assert again.json() == {"accepted": 0, "duplicates": 1, "ignored": 0}


async def test_every_body_shape_makes_one_ingest_call_in_order(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    a = [infobip_message("a1"), infobip_message("a2"), infobip_message("a3")]
    b = [infobip_message("b1"), infobip_message("b2")]
    c = [infobip_message("c1"), infobip_message("c2")]
    shapes: list[tuple[object, list[dict[str, object]]]] = [
        (a, a),
        ({"messages": b}, b),
        ({"results": c, "pagination": {}}, c),
    ]
    for body, expected in shapes:
        peers.session.calls.clear()
        response = await gateway.post(URL, json=body)
        assert response.status_code == 200, response.text
        [call] = peers.session.rpc_calls("Ingest")
        assert isinstance(call.request, session_pb2.IngestRequest)
        assert [m.id for m in call.request.messages] == [m["id"] for m in expected]
        assert response.json()["accepted"] == len(expected)


async def test_outbound_is_skipped_and_unknown_conversation_ignored(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    body = [
        infobip_message("in-1"),
        infobip_message("out-1", direction="OUTBOUND"),
        infobip_message("other-1", conversation_id="bot-owned"),
    ]
    response = await gateway.post(URL, json=body)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "ignored": 2}
    assert [m.id for m in ingested(peers)] == ["in-1", "other-1"]

    peers.session.calls.clear()
    only_outbound = await gateway.post(URL, json=infobip_message("out-2", direction="OUTBOUND"))
    assert only_outbound.json() == {"accepted": 0, "duplicates": 0, "ignored": 1}
    assert peers.session.calls == []  # nothing to store: no gRPC call at all


async def test_typing_indicators_go_to_session_at_once_never_to_ingest(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    typing = infobip_message("t1", contentType="TYPING_INDICATOR", content={})
    response = await gateway.post(URL, json=[typing, infobip_message("m1")])
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "ignored": 1}
    assert [m.id for m in ingested(peers)] == ["m1"]
    (call,) = peers.session.rpc_calls("ReportEndUserTyping")
    assert isinstance(call.request, session_pb2.ReportEndUserTypingRequest)
    assert (call.request.conversation_id, call.request.typing) == (CONV, True)
    assert call.request.at.ToJsonString() == "2025-03-21T13:12:06.495Z"
    # Session failing drops the indicator: never a 5xx that makes Infobip send it later.
    peers.session.reset()
    peers.session.error = Unavailable("down")
    response = await gateway.post(URL, json=typing)
    assert response.status_code == 200 and response.json()["ignored"] == 1


async def test_lenient_fields(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    body = [
        infobip_message("t1", createdAt="2025-03-21T13:12:06.495+0000"),
        infobip_message("t2", createdAt="2025-03-21T13:12:06Z"),
        infobip_message("t3", createdAt="not a date"),
        {
            "id": "t4",
            "conversationId": CONV,
            "from": 385981234567,
            "content": {"url": "https://x/y.pdf"},
        },
        {"id": "t5", "conversationId": CONV},
    ]
    before = int(time.time())
    response = await gateway.post(URL, json=body)
    after = int(time.time())
    assert response.status_code == 200
    messages = ingested(peers)
    assert messages[0].created_at.ToJsonString() == "2025-03-21T13:12:06.495Z"
    assert messages[1].created_at.ToJsonString() == "2025-03-21T13:12:06Z"
    assert before <= messages[2].created_at.seconds <= after  # unreadable → now
    assert getattr(messages[3], "from") == "385981234567"
    assert messages[3].content_type == ""  # none given: read from Infobip, never guessed
    assert messages[4].content_json == "{}"
    assert before <= messages[4].created_at.seconds <= after  # missing → now


async def test_invalid_items_are_400_naming_the_index(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    single = await gateway.post(URL, json={"channel": "WHATSAPP", "conversationId": CONV})
    assert_error(single, 400, "invalid_message")
    assert "id is required" in single.json()["error"]["message"]
    no_conv = await gateway.post(URL, json={"id": "m1"})
    assert_error(no_conv, 400, "invalid_message")

    batch = await gateway.post(URL, json=[infobip_message("ok"), {"id": "m2"}])
    assert_error(batch, 400, "invalid_message")
    assert "messages[1]" in batch.json()["error"]["message"]
    not_object = await gateway.post(URL, json={"messages": [infobip_message("ok"), 7]})
    assert "messages[1]" in not_object.json()["error"]["message"]
    assert peers.session.calls == []  # a rejected request has no partial effect


async def test_invalid_json_is_400(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        URL, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")
    wrong_type = await gateway.post(URL, content=b"{}", headers={"Content-Type": "text/plain"})
    assert_error(wrong_type, 415, "unsupported_media_type")


async def test_garbage_never_5xx(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open(CONV)
    rng = random.Random(1234)
    bodies: list[bytes] = [
        b"",
        b" ",
        b"null",
        b"true",
        b"1",
        b"-0",
        b"1e999",
        b'"text"',
        b"[]",
        b"{}",
        b"[[]]",
        b"[null]",
        b'{"messages": null}',
        b'{"messages": {}}',
        b'{"results": "x"}',
        b'{"id": {}, "conversationId": "c"}',
        b'{"id": "m", "conversationId": []}',
        b'{"id": "m", "conversationId": "' + b"c" * 300 + b'"}',
        b'{"id": "", "conversationId": "c"}',
        b'{"id": "m", "conversationId": "c", "createdAt": 1e300}',
        b'{"id": "m", "conversationId": "c", "createdAt": "9999-99-99"}',
        b'{"id": "m", "conversationId": "c", "createdAt": -99999999999999999}',
        b'{"id": "m", "conversationId": "c", "content": "\\ud800"}',
        b'{"id": "m", "conversationId": "c", "direction": 5, "channel": {"x": 1}}',
        b"\x00\x01\x02",
        b"\xef\xbb\xbf{}",
        b"{" * 2000,
        b"[" * 2000 + b"]" * 2000,
        b'{"id": 12345678901234567890123, "conversationId": 1}',
    ]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(40)]
    bodies += [
        orjson.dumps(rng.choice([[1, "a"], {"id": rng.random()}, {"messages": [None]}]))
        for _ in range(10)
    ]
    for body in bodies:
        response = await gateway.post(
            URL, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert_error(response, response.status_code)


async def test_session_unavailable_is_503_with_retry_after(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.error = Unavailable("redis down")
    response = await gateway.post(URL, json=infobip_message("m1"))
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"


async def test_session_unreachable_or_slow_is_503(peers: Peers) -> None:
    env = peers.env(SESSION_ADDR=f"127.0.0.1:{free_port()}", CCBRIDGE_GRPC_TIMEOUT_S="2")
    async with running_gateway(env) as (client, _app):
        response = await client.post(URL, json=infobip_message("m1"))
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"

    peers.session.delay_s = 1.0
    async with running_gateway(peers.env(CCBRIDGE_GRPC_TIMEOUT_S="0.2")) as (client, _app):
        response = await client.post(URL, json=infobip_message("m1"))
        assert_error(response, 503, "unavailable")  # deadline: retryable for Infobip
        assert response.headers["retry-after"] == "1"


async def test_ip_allow_list(peers: Peers) -> None:
    env = peers.env(CCBRIDGE_INFOBIP_ALLOWED_IPS="10.0.0.0/8, 192.0.2.7")
    async with running_gateway(env, client_addr=("203.0.113.9", 5555)) as (client, _app):
        response = await client.post(URL, json=infobip_message("m1"))
        assert_error(response, 403, "forbidden")
    async with running_gateway(env, client_addr=("10.1.2.3", 5555)) as (client, _app):
        response = await client.post(URL, json=infobip_message("m1"))
        assert response.status_code == 200
    async with running_gateway(env, client_addr=("192.0.2.7", 5555)) as (client, _app):
        response = await client.post(URL, json=infobip_message("m2"))
        assert response.status_code == 200
