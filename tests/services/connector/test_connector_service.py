"""ConnectorService over real gRPC with the webhook adapter against the CCaaS simulator
(uvicorn on a free port), real Redis, and a SessionService test double."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.__main__ import RunningConnector, build
from ccbridge.services.connector.adapters.webhook import event_id
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.errors import RETRY_AFTER_METADATA
from ccbridge.services.runtime.settings import SettingsError
from ccbridge.session.v1 import session_pb2
from ccbridge.simulators.ccaas import CcaasState, create_app
from tests.services.connector.session_double import SessionDouble, running_session_double
from tests.simulators.ccaas.support import serve_app

SECRET = "current-secret-0123456789abcdef"
OLD_SECRET = "previous-secret-0123456789abcdef"


@dataclass
class Mesh:
    ccaas: CcaasState
    ccaas_url: str
    session: SessionDouble
    connector: RunningConnector
    stub: connector_pb2_grpc.ConnectorServiceStub
    channel: grpc.aio.Channel


@pytest.fixture
async def session_double() -> AsyncIterator[tuple[SessionDouble, int]]:
    # A test double of the session peer (see session_double.py for why).
    async with running_session_double() as running:
        yield running


@pytest.fixture
async def mesh(
    redis_url: str, redis_client: Any, session_double: tuple[SessionDouble, int]
) -> AsyncIterator[Mesh]:
    double, session_port = session_double
    state = CcaasState()
    app = create_app(state, secret=SECRET, bridge_webhook_url=None)
    async with serve_app(app) as url:
        settings = ConnectorSettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "REDIS_URL": redis_url,
                "CCBRIDGE_CONNECTOR_PORT": "0",
                "CCBRIDGE_DRAIN_DELAY_S": "0",
                "SESSION_ADDR": f"127.0.0.1:{session_port}",
                "CCBRIDGE_WEBHOOK_CONNECTOR_URL": f"{url}/webhook",
                "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": f"{SECRET},{OLD_SECRET}",
                "CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S": "3",
            }
        )
        connector = await start(build, settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{connector.port}") as channel:
                yield Mesh(
                    state,
                    url,
                    double,
                    connector,
                    connector_pb2_grpc.ConnectorServiceStub(channel),
                    channel,
                )
        finally:
            await connector.stop()


def transcript() -> list[common_pb2.Message]:
    first = common_pb2.Message(
        id="ib-1",
        conversation_id="conv-1",
        direction=common_pb2.DIRECTION_INBOUND,
        channel="WHATSAPP",
        author_type="CUSTOMER",
        content_type="TEXT",
        content_json='{"text":"I need help"}',
    )
    first.created_at.FromSeconds(1_735_725_600)
    second = common_pb2.Message(
        id="ib-2",
        conversation_id="conv-1",
        direction=common_pb2.DIRECTION_OUTBOUND,
        channel="WHATSAPP",
        author_type="BOT",
        content_type="IMAGE",
        content_json='{"url":"https://example.com/a.png"}',
    )
    return [first, second]


def open_request(conversation: str = "conv-1") -> connector_pb2.OpenCaseRequest:
    return connector_pb2.OpenCaseRequest(
        connector="webhook",
        idempotency_key=conversation,
        case=connector_pb2.CaseInfo(
            conversation_id=conversation,
            channel="WHATSAPP",
            end_user="447700900001",
            routing=common_pb2.RoutingDecision(
                connector="webhook", queue="vip", priority=5, skills=["german"], rule="vip-whatsapp"
            ),
            tags=["vip"],
            metadata={"tier": "gold"},
            transcript=transcript(),
            transcript_truncated=True,
        ),
    )


def customer_message(mid: str, text: str) -> connector_pb2.PostCustomerMessageRequest:
    return connector_pb2.PostCustomerMessageRequest(
        connector="webhook",
        external_id="CASE-00001",
        conversation_id="conv-1",
        idempotency_key=mid,
        message=common_pb2.Message(
            id=mid,
            conversation_id="conv-1",
            direction=common_pb2.DIRECTION_INBOUND,
            author_type="CUSTOMER",
            content_type="TEXT",
            content_json=json.dumps({"text": text}),
        ),
    )


def signed_webhook(
    doc: object, *, secret: str = SECRET, ts: int | None = None, body: bytes | None = None
) -> connector_pb2.HandleWebhookRequest:
    raw = json.dumps(doc).encode() if body is None else body
    stamp = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return connector_pb2.HandleWebhookRequest(
        connector="webhook",
        body=raw,
        headers=[
            connector_pb2.Header(name="content-type", value="application/json"),
            connector_pb2.Header(name="x-ccbridge-timestamp", value=str(stamp)),
            connector_pb2.Header(name="x-ccbridge-signature", value=f"v1={mac}"),
        ],
    )


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# --- OpenCase / PostCustomerMessage / CloseCase ----------------------------------------


async def test_open_case_is_idempotent_and_carries_the_contract(mesh: Mesh) -> None:
    first = await mesh.stub.OpenCase(open_request(), timeout=10)
    again = await mesh.stub.OpenCase(open_request(), timeout=10)
    assert (first.external_id, first.existing) == ("CASE-00001", False)
    assert (again.external_id, again.existing) == ("CASE-00001", True)
    assert len(mesh.ccaas.cases()) == 1

    case = mesh.ccaas.case("CASE-00001")
    assert case["routing"] == {
        "queue": "vip",
        "priority": 5,
        "skills": ["german"],
        "rule": "vip-whatsapp",
    }
    assert (case["channel"], case["endUser"], case["tags"], case["metadata"]) == (
        "WHATSAPP",
        "447700900001",
        ["vip"],
        {"tier": "gold"},
    )
    assert case["transcriptTruncated"] is True
    assert case["transcript"] == [
        {
            "id": "ib-1",
            "direction": "INBOUND",
            "authorType": "CUSTOMER",
            "createdAt": "2025-01-01T10:00:00.000Z",
            "contentType": "TEXT",
            "content": {"text": "I need help"},
        },
        {
            "id": "ib-2",
            "direction": "OUTBOUND",
            "authorType": "BOT",
            "createdAt": None,
            "contentType": "IMAGE",
            "content": {"url": "https://example.com/a.png"},
        },
    ]
    deliveries = mesh.ccaas.deliveries()
    assert [(d["type"], d["idempotencyKey"], d["eventId"], d["outcome"]) for d in deliveries] == [
        ("case.open", "conv-1", event_id("case.open", "conv-1"), "ok"),
        ("case.open", "conv-1", event_id("case.open", "conv-1"), "replayed"),
    ]


async def test_customer_messages_are_idempotent_and_ordered(mesh: Mesh) -> None:
    await mesh.stub.OpenCase(open_request(), timeout=10)
    first = await mesh.stub.PostCustomerMessage(customer_message("ib-3", "one"), timeout=10)
    await mesh.stub.PostCustomerMessage(customer_message("ib-4", "two"), timeout=10)
    again = await mesh.stub.PostCustomerMessage(customer_message("ib-3", "one"), timeout=10)
    assert first.external_message_id and first.external_message_id == again.external_message_id
    messages = mesh.ccaas.case("CASE-00001")["messages"]
    assert [(m["id"], m["content"]["text"]) for m in messages] == [("ib-3", "one"), ("ib-4", "two")]
    keys = [d["idempotencyKey"] for d in mesh.ccaas.deliveries() if d["type"] == "case.message"]
    assert keys == ["ib-3", "ib-4", "ib-3"]


async def test_close_case(mesh: Mesh) -> None:
    await mesh.stub.OpenCase(open_request(), timeout=10)
    request = connector_pb2.CloseCaseRequest(
        connector="webhook",
        external_id="CASE-00001",
        conversation_id="conv-1",
        reason="infobip_closed",
        idempotency_key="conv-1:close",
    )
    first = await mesh.stub.CloseCase(request, timeout=10)
    retried = await mesh.stub.CloseCase(request, timeout=10)
    assert first.already_closed is False
    assert retried.already_closed is False  # the same key replays the same answer
    request.idempotency_key = "operator-close"
    assert (await mesh.stub.CloseCase(request, timeout=10)).already_closed is True
    case = mesh.ccaas.case("CASE-00001")
    assert (case["status"], case["closeReason"]) == ("closed", "infobip_closed")


async def test_far_side_down_is_unavailable_with_retry_after(mesh: Mesh) -> None:
    mesh.ccaas.set_down(True)
    error = await rpc_error(mesh.stub.OpenCase(open_request(), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    trailing = dict(error.trailing_metadata() or ())
    assert float(trailing[RETRY_AFTER_METADATA]) == 1.0
    mesh.ccaas.set_down(False)
    assert (await mesh.stub.OpenCase(open_request(), timeout=10)).external_id == "CASE-00001"


async def test_far_side_unreachable_is_unavailable(mesh: Mesh) -> None:
    adapter: Any = mesh.connector.parts.adapters["webhook"]
    adapter.url = "http://127.0.0.1:9/webhook"  # discard port: connection refused
    error = await rpc_error(mesh.stub.OpenCase(open_request(), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_far_side_client_errors_are_failed_precondition(mesh: Mesh) -> None:
    mesh.ccaas.inject_failures(1, status=400, retry_after=None)
    error = await rpc_error(mesh.stub.OpenCase(open_request(), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert RETRY_AFTER_METADATA not in dict(error.trailing_metadata() or ())
    # A message for a case the CCaaS does not know: 404 → FAILED_PRECONDITION.
    error = await rpc_error(
        mesh.stub.PostCustomerMessage(customer_message("ib-9", "x"), timeout=10)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_requests_are_invalid_argument(mesh: Mesh) -> None:
    unknown = open_request()
    unknown.connector = "no-such-desk"
    assert (
        await rpc_error(mesh.stub.OpenCase(unknown, timeout=5))
    ).code() == grpc.StatusCode.INVALID_ARGUMENT
    no_case = connector_pb2.OpenCaseRequest(connector="webhook")
    assert (
        await rpc_error(mesh.stub.OpenCase(no_case, timeout=5))
    ).code() == grpc.StatusCode.INVALID_ARGUMENT
    no_key = customer_message("", "x")
    assert (
        await rpc_error(mesh.stub.PostCustomerMessage(no_key, timeout=5))
    ).code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_content = customer_message("ib-1", "x")
    bad_content.message.content_json = "not json"
    assert (
        await rpc_error(mesh.stub.PostCustomerMessage(bad_content, timeout=5))
    ).code() == grpc.StatusCode.INVALID_ARGUMENT
    webhook = signed_webhook([])
    webhook.connector = "nope"  # from the URL path: not found
    assert (
        await rpc_error(mesh.stub.HandleWebhook(webhook, timeout=5))
    ).code() == grpc.StatusCode.NOT_FOUND


# --- HandleWebhook -----------------------------------------------------------------------

AGENT_MESSAGE = {
    "type": "agent.message",
    "id": "evt-1",
    "caseId": "CASE-00001",
    "message": {"id": "agent-msg-1", "text": "Hi, Anna here", "agentName": "Anna"},
}
CASE_CLOSED = {"type": "case.closed", "id": "evt-2", "caseId": "CASE-00001", "reason": "resolved"}


async def test_webhook_events_reach_session(mesh: Mesh) -> None:
    doc = [AGENT_MESSAGE, {"type": "case.assigned", "id": "evt-x"}, CASE_CLOSED]
    response = await mesh.stub.HandleWebhook(signed_webhook(doc), timeout=10)
    assert (response.accepted, response.duplicates, response.ignored) == (2, 0, 1)
    assert len(mesh.session.requests) == 1
    events = list(mesh.session.requests[0].events)
    expected_message = common_pb2.Message(
        id="agent-msg-1",
        direction=common_pb2.DIRECTION_OUTBOUND,
        author_type="AGENT",
        content_type="TEXT",
        content_json=json.dumps({"text": "Hi, Anna here"}, separators=(",", ":")),
        author_name="Anna",
    )
    assert events == [
        session_pb2.CaseEvent(
            connector="webhook",
            external_id="CASE-00001",
            event_id="evt-1",
            agent_message=expected_message,
        ),
        session_pb2.CaseEvent(
            connector="webhook",
            external_id="CASE-00001",
            event_id="evt-2",
            case_closed=session_pb2.CaseClosed(reason="resolved"),
        ),
    ]
    # A redelivery is reported again; Session's answer says it was a duplicate.
    again = await mesh.stub.HandleWebhook(
        signed_webhook(AGENT_MESSAGE, secret=OLD_SECRET), timeout=10
    )
    assert (again.accepted, again.duplicates, again.ignored) == (0, 1, 0)


async def test_webhook_only_unknown_types_skips_session(mesh: Mesh) -> None:
    response = await mesh.stub.HandleWebhook(
        signed_webhook({"type": "agent.reaction", "caseId": "CASE-00001"}), timeout=10
    )
    assert (response.accepted, response.ignored) == (0, 1)
    assert mesh.session.requests == []


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong-secret",
        "stale",
        "future",
        "missing-signature",
        "missing-timestamp",
        "body",
        "non-ascii-signature",
        "non-ascii-timestamp",
    ],
)
async def test_webhook_authentication(mesh: Mesh, tamper: str) -> None:
    now = int(time.time())
    request = {
        "wrong-secret": lambda: signed_webhook(AGENT_MESSAGE, secret="guess"),
        "stale": lambda: signed_webhook(AGENT_MESSAGE, ts=now - 301),
        "future": lambda: signed_webhook(AGENT_MESSAGE, ts=now + 301),
        "missing-signature": lambda: signed_webhook(AGENT_MESSAGE),
        "missing-timestamp": lambda: signed_webhook(AGENT_MESSAGE),
        "body": lambda: signed_webhook(AGENT_MESSAGE),
        "non-ascii-signature": lambda: signed_webhook(AGENT_MESSAGE),
        "non-ascii-timestamp": lambda: signed_webhook(AGENT_MESSAGE),
    }[tamper]()
    if tamper.startswith("non-ascii-"):
        # A header byte >= 0x80 reaches the connector as a latin-1 character.
        name = "x-ccbridge-" + tamper.removeprefix("non-ascii-")
        for header in request.headers:
            if header.name == name:
                header.value += "\u00ff" if name.endswith("timestamp") else "\u00e9"
    if tamper.startswith("missing-"):
        name = "x-ccbridge-" + tamper.removeprefix("missing-")
        kept = [h for h in request.headers if h.name != name]
        del request.headers[:]
        request.headers.extend(kept)
    if tamper == "body":
        request.body = request.body.replace(b"Anna here", b"Eve here!")
    error = await rpc_error(mesh.stub.HandleWebhook(request, timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert mesh.session.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        # What orjson refuses (NaN, Infinity, a lone surrogate): a clear INVALID_ARGUMENT.
        b'{"type": "case.closed", "id": "e", "caseId": "c", "n": NaN}',
        b'{"type": "case.closed", "id": "e", "caseId": "c", "n": -Infinity}',
        b'{"type": "case.closed", "id": "e", "caseId": "\\udc00"}',
        json.dumps({"type": "agent.message", "id": "e", "message": {"id": "m", "text": "t"}}),
        json.dumps({"type": "agent.message", "caseId": "c", "message": {"id": "m", "text": "t"}}),
        json.dumps({"type": "agent.message", "id": "e", "caseId": "c", "message": {"text": "t"}}),
        json.dumps({"type": "agent.message", "id": "e", "caseId": "c", "message": {"id": "m"}}),
        json.dumps({"type": "case.closed", "id": "e"}),
        json.dumps({"id": "e", "caseId": "c"}),
        json.dumps([AGENT_MESSAGE, "oops"]),
        json.dumps("just a string"),
        # A lone surrogate in agent text (it could not be encoded for Infobip).
        *(
            b'{"type": "agent.message", "id": "e", "caseId": "c", "message": {"id": "m", '
            + b'"text": "'
            + text
            + b'"}}'
            for text in (b"\\ud800", b"a\\udfff")
        ),
        # Nested deeper than MAX_JSON_DEPTH (64): the top, and inside an agent message.
        *(b"[" * n + b"]" * n for n in (65, 300, 2_000)),
        *(
            json.dumps(
                {"type": "agent.message", "id": "e", "caseId": "c", "message": {"id": "m"}}
            ).encode()[:-2]
            + b', "text": "t", "extra": '
            + b"[" * n
            + b"]" * n
            + b"}}"
            for n in (63, 298, 1_998)
        ),
    ],
)
async def test_malformed_webhooks_are_invalid_argument(mesh: Mesh, body: bytes | str) -> None:
    raw = body if isinstance(body, bytes) else body.encode()
    error = await rpc_error(mesh.stub.HandleWebhook(signed_webhook(None, body=raw), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert mesh.session.requests == []


async def test_webhook_when_session_fails_is_unavailable(mesh: Mesh) -> None:
    mesh.session.fail_with = grpc.StatusCode.INTERNAL
    error = await rpc_error(mesh.stub.HandleWebhook(signed_webhook(AGENT_MESSAGE), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # the CCaaS will retry


async def test_agent_reply_from_simulator_end_to_end(mesh: Mesh) -> None:
    # Stand-in for the gateway's POST /webhooks/ccaas/{connector} route (owned elsewhere):
    # it forwards headers and raw body to HandleWebhook, as that route does.
    async def forward(request: Request) -> Response:
        call = connector_pb2.HandleWebhookRequest(
            connector=request.path_params["connector"],
            body=await request.body(),
            headers=[connector_pb2.Header(name=k, value=v) for k, v in request.headers.items()],
        )
        result = await mesh.stub.HandleWebhook(call, timeout=10)
        return JSONResponse(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "ignored": result.ignored,
            }
        )

    gateway = Starlette(routes=[Route("/webhooks/ccaas/{connector}", forward, methods=["POST"])])
    await mesh.stub.OpenCase(open_request(), timeout=10)
    async with serve_app(gateway) as url:
        import httpx

        async with httpx.AsyncClient(base_url=mesh.ccaas_url, timeout=10) as client:
            await client.post(
                "/_sim/config", json={"bridgeWebhookUrl": f"{url}/webhooks/ccaas/webhook"}
            )
            reply = (
                await client.post(
                    "/_sim/cases/CASE-00001/reply",
                    json={"text": "How can I help?", "agentName": "Bo"},
                )
            ).json()
            closed = (
                await client.post("/_sim/cases/CASE-00001/close", json={"reason": "resolved"})
            ).json()
    assert reply["bridgeStatus"] == 200 and reply["bridgeAnswer"]["accepted"] == 1
    assert closed["bridgeStatus"] == 200 and closed["bridgeAnswer"]["accepted"] == 1
    events = [e for r in mesh.session.requests for e in r.events]
    assert [e.WhichOneof("kind") for e in events] == ["agent_message", "case_closed"]
    assert json.loads(events[0].agent_message.content_json) == {"text": "How can I help?"}
    assert events[0].agent_message.author_name == "Bo"
    assert events[1].case_closed.reason == "resolved"


# --- ListConnectors, health, settings ----------------------------------------------------


async def test_list_connectors_and_health(mesh: Mesh) -> None:
    listed = await mesh.stub.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=5)
    assert [(c.name, c.mode) for c in listed.connectors] == [("webhook", "push")]
    health = health_pb2_grpc.HealthStub(mesh.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_settings_report_every_problem() -> None:
    with pytest.raises(SettingsError) as info:
        ConnectorSettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_CONNECTORS": "webhook,no-such-desk",
                "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "ftp://x",
                "CCBRIDGE_POLL_INTERVAL_S": "often",
            }
        )
    text = str(info.value)
    for fragment in (
        "unknown connector 'no-such-desk'",
        "CCBRIDGE_WEBHOOK_CONNECTOR_URL",
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET",
        "CCBRIDGE_POLL_INTERVAL_S",
    ):
        assert fragment in text
    pair = f"{SECRET},{OLD_SECRET}"
    settings = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://x/h",
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": pair,
        }
    )
    assert settings.connectors == ("webhook",)
    assert settings.webhook is not None and len(settings.webhook.secrets) == 2
    assert SECRET not in repr(settings.webhook.secrets) and "env=" not in repr(settings)


def test_settings_errors_of_every_enabled_connector_come_in_one_message() -> None:
    with pytest.raises(SettingsError) as info:
        ConnectorSettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_CONNECTORS": "webhook,rt",
                "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://x/h",
                "CCBRIDGE_RT_URL": "not a url",
                "CCBRIDGE_RT_POLL_PAGE": "500",
            }
        )
    text = str(info.value)
    assert text.count("invalid") == 1, text
    for fragment in (
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET",
        "CCBRIDGE_RT_URL",
        "CCBRIDGE_RT_TOKEN",
        "CCBRIDGE_RT_POLL_PAGE",
    ):
        assert fragment in text
    settings = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_CONNECTORS": "rt",
            "CCBRIDGE_RT_URL": "http://rt",
            "CCBRIDGE_RT_TOKEN": "t",
        }
    )
    assert list(settings.adapters) == ["rt"] and settings.webhook is None
    assert "'t'" not in repr(settings)


def test_a_weak_webhook_secret_fails_start_up() -> None:
    url = {"CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://x/h"}
    ConnectorSettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", **url, "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "s" * 16}
    )
    for weak in ("e", "s" * 15, f"{SECRET},short"):
        with pytest.raises(SettingsError) as info:
            ConnectorSettings.from_env(
                {"CCBRIDGE_MESH_INSECURE": "true", **url, "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": weak}
            )
        assert "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET: each secret must be at least 16" in str(
            info.value
        )
