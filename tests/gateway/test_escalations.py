"""POST /v1/escalations and GET /v1/handovers/{id}: bearer auth, validation, mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from ccbridge.services.runtime.errors import FailedPrecondition, Unavailable
from ccbridge.session.v1 import session_pb2
from tests.gateway.conftest import ESCALATION_TOKEN, Peers, assert_error, running_gateway

AUTH = {"Authorization": f"Bearer {ESCALATION_TOKEN}"}


async def test_escalation_without_token_is_401(gateway: httpx.AsyncClient, peers: Peers) -> None:
    response = await gateway.post("/v1/escalations", json={"conversationId": "c-1"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert peers.session.calls == []


async def test_escalation_with_wrong_token_is_401(gateway: httpx.AsyncClient, peers: Peers) -> None:
    for header in (
        f"Bearer {ESCALATION_TOKEN}x",
        "Bearer ",
        f"Basic {ESCALATION_TOKEN}",
        ESCALATION_TOKEN,
        "Bearer ünïcode",
    ):
        response = await gateway.post(
            "/v1/escalations",
            json={"conversationId": "c-1"},
            headers={b"Authorization": header.encode("latin-1")},
        )
        assert_error(response, 401, "unauthorized")
    assert peers.session.calls == []


async def test_escalation_with_right_token_calls_escalate(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    body = {
        "conversationId": "4461ea29-c09e-4ba8-a751-df86cf0a0eb9",
        "tags": ["billing", "vip"],
        "metadata": {"language": "en", "score": 1.5, "count": 3, "vip": True, "unset": None},
        "unknownField": {"ignored": True},
    }
    response = await gateway.post(
        "/v1/escalations", json=body, headers={**AUTH, "X-Request-Id": "req-123"}
    )
    assert response.status_code == 202
    assert response.json() == {
        "conversationId": body["conversationId"],
        "state": "OPENING",
        "created": True,
    }
    assert response.headers["x-request-id"] == "req-123"
    [call] = peers.session.rpc_calls("Escalate")
    request = call.request
    assert isinstance(request, session_pb2.EscalateRequest)
    assert request.conversation_id == body["conversationId"]
    assert list(request.tags) == ["billing", "vip"]
    assert dict(request.metadata) == {"language": "en", "score": "1.5", "count": "3", "vip": "true"}
    assert call.request_id == "req-123"

    again = await gateway.post(
        "/v1/escalations", json={"conversationId": body["conversationId"]}, headers=AUTH
    )
    assert again.status_code == 202
    assert again.json()["created"] is False


async def test_escalation_validation_errors(gateway: httpx.AsyncClient, peers: Peers) -> None:
    cases: list[tuple[object, str]] = [
        ({}, "invalid_conversation_id"),
        ({"conversationId": ""}, "invalid_conversation_id"),
        ({"conversationId": "x" * 129}, "invalid_conversation_id"),
        ({"conversationId": "has space"}, "invalid_conversation_id"),
        ({"conversationId": "a/b"}, "invalid_conversation_id"),
        ({"conversationId": 42}, "invalid_conversation_id"),
        ({"conversationId": "c", "tags": "billing"}, "invalid_tags"),
        ({"conversationId": "c", "tags": [1]}, "invalid_tags"),
        ({"conversationId": "c", "tags": [""]}, "invalid_tags"),
        ({"conversationId": "c", "metadata": {"a": {"nested": 1}}}, "invalid_metadata"),
        ({"conversationId": "c", "metadata": {"a": [1]}}, "invalid_metadata"),
        ({"conversationId": "c", "metadata": ["a"]}, "invalid_metadata"),
        ([{"conversationId": "c"}], "invalid_body"),
        ("c", "invalid_body"),
    ]
    for body, code in cases:
        response = await gateway.post("/v1/escalations", json=body, headers=AUTH)
        assert_error(response, 400, code)
    assert peers.session.calls == []


async def test_escalation_invalid_json_is_400(gateway: httpx.AsyncClient) -> None:
    for raw in (b"{", b"", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'{"conversationId": NaN}'):
        response = await gateway.post(
            "/v1/escalations", content=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "invalid_json")


async def test_escalation_needs_json_content_type(gateway: httpx.AsyncClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = await gateway.post(
            "/v1/escalations",
            content=b'{"conversationId": "c"}',
            headers={**AUTH, "Content-Type": content_type},
        )
        assert_error(response, 415, "unsupported_media_type")
    ok = await gateway.post(
        "/v1/escalations",
        content=b'{"conversationId": "c"}',
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 202


async def test_escalation_body_limit_413(peers: Peers) -> None:
    env = peers.env(CCBRIDGE_MAX_BODY_BYTES="2048")
    async with running_gateway(env) as (client, _app):
        big = b'{"conversationId": "c", "metadata": {"a": "' + b"x" * 3000 + b'"}}'
        response = await client.post(
            "/v1/escalations", content=big, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[
            bytes
        ]:  # no Content-Length: the limit applies while streaming
            for _ in range(10):
                yield b" " * 512

        streamed = await client.post(
            "/v1/escalations",
            content=chunks(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "payload_too_large")
    assert peers.session.calls == []


async def test_escalation_maps_session_errors(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.error = FailedPrecondition("handover is FAILED")
    response = await gateway.post("/v1/escalations", json={"conversationId": "c"}, headers=AUTH)
    assert_error(response, 409, "failed_precondition")
    assert response.json()["error"]["message"] == "handover is FAILED"

    peers.session.error = Unavailable("redis down: secret detail")
    response = await gateway.post("/v1/escalations", json={"conversationId": "c"}, headers=AUTH)
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert "secret detail" not in response.text


async def test_escalation_deadline_is_504(peers: Peers) -> None:
    peers.session.delay_s = 1.0
    async with running_gateway(peers.env(CCBRIDGE_GRPC_TIMEOUT_S="0.2")) as (client, _app):
        response = await client.post("/v1/escalations", json={"conversationId": "c"}, headers=AUTH)
    assert_error(response, 504, "deadline_exceeded")


async def test_get_handover(gateway: httpx.AsyncClient, peers: Peers) -> None:
    missing = await gateway.get("/v1/handovers/nope", headers=AUTH)
    assert_error(missing, 404, "handover_not_found")
    assert_error(await gateway.get("/v1/handovers/conv-1"), 401, "unauthorized")
    assert_error(
        await gateway.get("/v1/handovers/bad%20id", headers=AUTH), 400, "invalid_conversation_id"
    )

    peers.session.open("conv-1")
    response = await gateway.get("/v1/handovers/conv-1", headers=AUTH)
    assert response.status_code == 200
    doc = response.json()
    assert doc["conversationId"] == "conv-1"
    assert doc["state"] == "ACTIVE"
    assert doc["connector"] == "webhook"
    assert doc["externalId"] == "case-1"
    assert doc["closedBy"] is None


async def test_unknown_route_and_method_answer_json(gateway: httpx.AsyncClient) -> None:
    assert_error(await gateway.get("/nope"), 404, "not_found")
    response = await gateway.get("/v1/escalations")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
