"""/healthz, /readyz, /metrics, /openapi.json, the request id and settings."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from ccbridge.gateway.app import create_app
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.errors import Unavailable
from ccbridge.services.runtime.settings import MIN_SECRET_CHARS, SettingsError
from tests.gateway.conftest import (
    ESCALATION_TOKEN,
    WEBHOOK_TOKEN,
    Peers,
    RecordingSession,
    assert_error,
    running_gateway,
    start_session_peer,
)
from tests.support.redis_server import free_port


async def test_healthz(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_peers_serve(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readyz_peer_down_is_503(peers: Peers) -> None:
    async with running_gateway(peers.env(CONNECTOR_ADDR=f"127.0.0.1:{free_port()}")) as (
        client,
        _app,
    ):
        assert_error(await client.get("/readyz"), 503, "not_ready")
        assert (await client.get("/healthz")).status_code == 200  # liveness is unaffected


async def test_readyz_follows_peer_health_and_draining(peers: Peers) -> None:
    session = RecordingSession()  # type: ignore[abstract]
    peer = await start_session_peer(session)
    try:
        async with running_gateway(peers.env(SESSION_ADDR=peer.addr)) as (client, app):
            assert (await client.get("/readyz")).status_code == 200
            app.state.backends.draining = True  # what SIGTERM does first
            assert_error(await client.get("/readyz"), 503, "not_ready")
            app.state.backends.draining = False
            await peer.health.enter_shutdown()  # peer says NOT_SERVING
            assert_error(await client.get("/readyz"), 503, "not_ready")
    finally:
        await peer.stop()


async def test_metrics(gateway: httpx.AsyncClient, peers: Peers) -> None:
    peers.session.open("conv-m")
    await gateway.post(
        f"/webhooks/infobip/{WEBHOOK_TOKEN}",
        json={"id": "m1", "conversationId": "conv-m", "content": {"text": "x"}},
    )
    await gateway.post("/v1/escalations", json={"conversationId": "c"})
    peers.session.error = Unavailable("down")
    await gateway.post(
        "/v1/escalations",
        json={"conversationId": "c"},
        headers={"Authorization": f"Bearer {ESCALATION_TOKEN}"},
    )
    await gateway.get("/no/such/route")
    response = await gateway.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'ccbridge_gateway_requests_total{method="POST",route="/webhooks/infobip/{token}",'
        'status="200"} 1.0'
    ) in text
    assert (
        'ccbridge_gateway_requests_total{method="POST",route="/v1/escalations",status="401"} 1.0'
    ) in text
    assert 'route="unmatched"' in text
    assert 'ccbridge_gateway_request_duration_seconds_count{route="/v1/escalations"} 2.0' in text
    assert 'ccbridge_gateway_ingest_messages_total{outcome="accepted",source="legacy"} 1.0' in text
    assert 'ccbridge_gateway_grpc_errors_total{code="UNAVAILABLE",rpc="Escalate"} 1.0' in text
    assert WEBHOOK_TOKEN not in text


async def test_openapi_lists_every_route(gateway: httpx.AsyncClient, peers: Peers) -> None:
    response = await gateway.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    async with running_gateway(peers.env()) as (_client, app):
        routes = [route for route in app.routes if isinstance(route, Route)]
    assert routes
    for route in routes:
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][route.path], (route.path, method)
    assert set(doc["paths"]) == {route.path for route in routes}
    schemes = doc["components"]["securitySchemes"]
    assert {"escalationBearer", "infobipHmac", "infobipBasic"} <= set(schemes)


async def test_request_id_is_echoed_or_generated(gateway: httpx.AsyncClient) -> None:
    echoed = await gateway.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await gateway.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = await gateway.get("/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 200})
    assert unsafe.headers["x-request-id"] != "a b\tc" + "x" * 200
    error = await gateway.get("/nope", headers={"X-Request-Id": "err-1"})
    assert error.headers["x-request-id"] == "err-1"


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_WEBHOOK_TOKEN": "short",
                "CCBRIDGE_INFOBIP_ALLOWED_IPS": "10.0.0.0/8,not-an-ip",
                "CCBRIDGE_MAX_BODY_BYTES": "lots",
                "INFOBIP_WEBHOOK_BASIC_USER": "only-user",
            }
        )
    message = str(info.value)
    for key in (
        "CCBRIDGE_ESCALATION_TOKEN",
        "CCBRIDGE_WEBHOOK_TOKEN",
        "not-an-ip",
        "CCBRIDGE_MAX_BODY_BYTES",
        "INFOBIP_WEBHOOK_BASIC_PASSWORD",
    ):
        assert key in message
    assert "'short'" not in message  # the secret value itself is never echoed


def test_settings_defaults_and_secret_repr() -> None:
    settings = GatewaySettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_ESCALATION_TOKEN": ESCALATION_TOKEN,
            "CCBRIDGE_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "INFOBIP_WEBHOOK_SECRET": " a-0123456789abcdef , b-0123456789abcdef ,",
        }
    )
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.grpc_timeout_s == 5.0
    assert settings.http_port == 8000
    assert settings.session_addr == "127.0.0.1:50051"
    assert settings.connector_addr == "127.0.0.1:50054"
    assert [s.value for s in settings.infobip_webhook_secrets] == [
        "a-0123456789abcdef",
        "b-0123456789abcdef",
    ]
    assert not settings.events_basic_enabled
    assert ESCALATION_TOKEN not in repr(settings) and WEBHOOK_TOKEN not in repr(settings)


async def test_unexpected_errors_answer_generic_500(peers: Peers) -> None:
    # Without the lifespan the backends are not open: an internal error, not bad input.
    app = create_app(GatewaySettings.from_env(peers.env()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(
            "/v1/escalations",
            json={"conversationId": "c"},
            headers={"Authorization": f"Bearer {ESCALATION_TOKEN}", "X-Request-Id": "r-500"},
        )
    assert_error(response, 500, "internal")
    assert response.json()["error"]["message"] == "internal error"
    assert response.headers["x-request-id"] == "r-500"
    assert_error(await client_get_readyz(app), 503, "not_ready")


async def client_get_readyz(app: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get("/readyz")


@pytest.mark.parametrize(
    "key",
    [
        "CCBRIDGE_ESCALATION_TOKEN",
        "CCBRIDGE_WEBHOOK_TOKEN",
        "INFOBIP_WEBHOOK_SECRET",
        "INFOBIP_WEBHOOK_BASIC_PASSWORD",
    ],
)
def test_weak_secrets_fail_start_up(key: str) -> None:
    env = {
        "CCBRIDGE_ESCALATION_TOKEN": ESCALATION_TOKEN,
        "CCBRIDGE_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "INFOBIP_WEBHOOK_SECRET": "s" * MIN_SECRET_CHARS,
        "INFOBIP_WEBHOOK_BASIC_USER": "u",  # a user name is not a secret
        "INFOBIP_WEBHOOK_BASIC_PASSWORD": "p" * MIN_SECRET_CHARS,
    }
    GatewaySettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", **env}
    )  # the minimum itself is fine
    for weak in ("e", "x" * (MIN_SECRET_CHARS - 1), f"{'y' * MIN_SECRET_CHARS},short"):
        if "," in weak and key in ("CCBRIDGE_ESCALATION_TOKEN", "INFOBIP_WEBHOOK_BASIC_PASSWORD"):
            continue  # not lists
        with pytest.raises(SettingsError) as info:
            GatewaySettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **env, key: weak})
        message = str(info.value)
        assert key in message and f"at least {MIN_SECRET_CHARS} characters" in message
        assert repr(weak) not in message  # the value itself is never echoed
