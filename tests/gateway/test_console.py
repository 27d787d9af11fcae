"""The operator console (gateway/console.py): login, session cookie, CSRF, redaction and
the separate listener, in-process (httpx ASGITransport) against the real Session server
and Redis. The browser test is tests/e2e/test_console_browser.py."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from ccbridge.common.v1 import common_pb2
from ccbridge.gateway.__main__ import start
from ccbridge.gateway.app import create_app
from ccbridge.gateway.console import create_console_app
from ccbridge.gateway.console_auth import (
    LOGIN_FAILURES_BURST,
    SESSION_COOKIE,
    LoginThrottle,
    SessionSigner,
)
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.component import start as start_component
from ccbridge.services.runtime.settings import Secret, SettingsError
from ccbridge.services.session.__main__ import RunningSession, build
from ccbridge.services.session.store import Lane
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.services.session.conftest import session_settings

ADMIN_TOKEN = "admin-token-0123456789abcdef"
SECRET_TEXT = "my card number is 4111"


def gateway_env(session_addr: str, **extra: str) -> dict[str, str]:
    return {
        "CCBRIDGE_MESH_INSECURE": "true",
        "CCBRIDGE_ESCALATION_TOKEN": "escalation-secret-token",
        "CCBRIDGE_WEBHOOK_TOKEN": "webhook-path-token-0123456789",
        "INFOBIP_WEBHOOK_SECRET": "hmac-secret-one-0123456789",
        "SESSION_ADDR": session_addr,
        "CONNECTOR_ADDR": "127.0.0.1:9",
        "ROUTING_ADDR": "127.0.0.1:9",
        "CCBRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "CCBRIDGE_ADMIN_PORT": "0",
        # httpx sends no Secure cookie over http://; browsers do to 127.0.0.1.
        "CCBRIDGE_ADMIN_COOKIE_SECURE": "false",
        "CCBRIDGE_HTTP_PORT": "0",
        "CCBRIDGE_DRAIN_DELAY_S": "0",
        **extra,
    }


@pytest.fixture
async def session_server(redis_url: str, redis_client: object) -> AsyncIterator[RunningSession]:
    running = await start_component(build, session_settings(redis_url))
    try:
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def console_client(session_addr: str) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    app = create_console_app(GatewaySettings.from_env(gateway_env(session_addr)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield client, app


def csrf_of(html: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    form = await client.get("/login")
    return await client.post("/login", data={"csrf": csrf_of(form.text), "token": token})


async def seed_dead_letter(running: RunningSession, cid: str) -> str:
    """A handover with one end-user message moved to the dead letters (as the worker
    does after its attempts); returns the letter's id."""
    store = running.parts.store
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = session_pb2_grpc.SessionServiceStub(channel)
    try:
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id=cid))
        message = common_pb2.Message(
            id=f"{cid}-m1",
            conversation_id=cid,
            direction=common_pb2.DIRECTION_INBOUND,
            channel="WHATSAPP",
            content_type="TEXT",
            content_json=json.dumps({"text": SECRET_TEXT}),
        )
        await stub.Ingest(session_pb2.IngestRequest(messages=[message]))
    finally:
        await channel.close()
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    (head,) = await store.peek(store.k_in(cid), 1)
    assert await store.dead_letter(Lane.INBOX, cid, token, head, "CCaaS said 400", 5)
    await store.release_lease(Lane.INBOX, cid, token)
    letters, _ = await store.list_dead_letters(cid, 0, 10)
    return letters[0].id


async def test_pages_need_a_login_and_a_wrong_token_is_refused(
    session_server: RunningSession,
) -> None:
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        for path in ("/handovers", "/dead-letters", "/explain", "/handovers/c-1"):
            answer = await client.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/login"
        refused = await login(client, "x" * len(ADMIN_TOKEN))
        assert refused.status_code == 401
        assert SESSION_COOKIE not in refused.cookies
        ok = await login(client)
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = await client.get("/handovers")
        assert page.status_code == 200
        assert "script-src" not in page.headers["content-security-policy"]
        assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_login_itself_needs_the_forms_csrf_nonce(session_server: RunningSession) -> None:
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        await client.get("/login")
        forged = await client.post("/login", data={"csrf": "guessed", "token": ADMIN_TOKEN})
        assert forged.status_code == 403
        assert SESSION_COOKIE not in client.cookies


async def test_guessing_the_token_is_throttled(session_server: RunningSession) -> None:
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        for _ in range(LOGIN_FAILURES_BURST):
            assert (await login(client, "y" * len(ADMIN_TOKEN))).status_code == 401
        # The budget is spent: even the right token is not compared, and nothing is issued.
        refused = await login(client)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert SESSION_COOKIE not in refused.cookies


def test_the_login_throttle_gives_tries_back_over_time() -> None:
    now = [0.0]
    throttle = LoginThrottle(burst=2, refill_s=5.0, clock=lambda: now[0])
    assert throttle.allowed()
    throttle.failed()
    throttle.failed()
    assert not throttle.allowed()
    assert throttle.retry_after_s() == 5
    now[0] = 4.0
    assert not throttle.allowed() and throttle.retry_after_s() == 1
    now[0] = 5.0
    assert throttle.allowed()
    now[0] = 1000.0  # refills up to the burst, not beyond
    for _ in range(2):
        assert throttle.allowed()
        throttle.failed()
    assert not throttle.allowed()


async def test_posts_without_the_sessions_csrf_token_are_refused(
    session_server: RunningSession,
) -> None:
    dl_id = await seed_dead_letter(session_server, "con-csrf")
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        await login(client)
        page = await client.get("/dead-letters")
        csrf = csrf_of(page.text)
        path = f"/dead-letters/{dl_id}/discard"
        for data, headers in (
            ({}, {}),
            ({"csrf": "not-the-token"}, {}),
            ({"csrf": csrf}, {"origin": "https://evil.example"}),
        ):
            refused = await client.post(path, data=data, headers=headers)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        assert await session_server.parts.store.get_dead_letter(dl_id) is not None
        done = await client.post(path, data={"csrf": csrf, "back": "//evil.example/x"})
        assert done.status_code == 303
        assert done.headers["location"] == "/dead-letters?notice=discarded"
        assert await session_server.parts.store.get_dead_letter(dl_id) is None


async def test_message_text_is_hidden_until_asked_and_the_ask_is_logged(
    session_server: RunningSession, caplog: pytest.LogCaptureFixture
) -> None:
    dl_id = await seed_dead_letter(session_server, "con-text")
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        await login(client)
        listing = await client.get("/dead-letters")
        assert "con-text" in listing.text and "CCaaS said 400" in listing.text
        assert SECRET_TEXT not in listing.text
        detail = await client.get("/handovers/con-text")
        assert detail.status_code == 200
        assert SECRET_TEXT not in detail.text
        # The timeline, newest first: message events and the state changes kept in the
        # handover's hash, merged.
        timeline = detail.text.split("Timeline (newest first)", 1)[1]
        assert "dead-lettered" in timeline
        assert 0 < timeline.index("dead-lettered") < timeline.index("stored")
        assert timeline.index("stored") < timeline.index("OPENING")
        caplog.set_level("INFO", logger="ccbridge.gateway.console")
        shown = await client.post(
            f"/dead-letters/{dl_id}/text",
            data={"csrf": csrf_of(listing.text), "conversation_id": "con-text"},
        )
        assert shown.status_code == 200
        assert SECRET_TEXT in shown.text
        revealed = [r for r in caplog.records if "revealed" in r.getMessage()]
        assert len(revealed) == 1 and dl_id in revealed[0].getMessage()
        assert all(SECRET_TEXT not in r.getMessage() for r in caplog.records)


async def test_unknown_handover_and_bad_state_are_4xx(session_server: RunningSession) -> None:
    async with console_client(f"127.0.0.1:{session_server.port}") as (client, _):
        await login(client)
        assert (await client.get("/handovers/nope")).status_code == 404
        assert (await client.get("/handovers?state=BOGUS")).status_code == 400


def test_session_cookies_are_signed_and_expire() -> None:
    signer = SessionSigner(Secret(ADMIN_TOKEN), ttl_s=60)
    value, session = signer.issue(now=1000)
    assert signer.verify(value, now=1030) == session
    assert signer.verify(value, now=1060) is None  # expired
    expires, csrf, signature = value.split(".")
    assert signer.verify(f"{int(expires) + 3600}.{csrf}.{signature}", now=1030) is None
    other = SessionSigner(Secret("another-admin-token-0123456789"))
    assert other.verify(value, now=1030) is None  # a rotated token ends every session
    assert signer.verify("", now=1030) is None and signer.verify("ä.b.c", now=1030) is None


def test_settings_of_the_console() -> None:
    env = gateway_env("127.0.0.1:9")
    on = GatewaySettings.from_env(env)
    assert on.console is not None and on.console.bind_host == "127.0.0.1"
    off = GatewaySettings.from_env({k: v for k, v in env.items() if "ADMIN" not in k})
    assert off.console is None
    for bad, says in (
        ({"CCBRIDGE_ADMIN_TOKEN": "short"}, "at least 16"),
        ({"CCBRIDGE_ADMIN_PORT": "8000", "CCBRIDGE_HTTP_PORT": "8000"}, "must differ"),
        ({"CCBRIDGE_ADMIN_TOKEN": "", "CCBRIDGE_ADMIN_PORT": "9000"}, "only with its token"),
    ):
        with pytest.raises(SettingsError, match=says):
            GatewaySettings.from_env({**env, **bad})
    secure = {k: v for k, v in env.items() if k != "CCBRIDGE_MESH_INSECURE"}
    with pytest.raises(SettingsError, match="CCBRIDGE_ADMIN_TLS_CERT is required"):
        GatewaySettings.from_env(secure)


async def test_the_public_app_does_not_serve_the_console(session_server: RunningSession) -> None:
    settings = GatewaySettings.from_env(gateway_env(f"127.0.0.1:{session_server.port}"))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for path in ("/login", "/handovers", "/dead-letters", "/explain", "/"):
                assert (await client.get(path)).status_code == 404
            assert (await client.post("/login", data={"token": ADMIN_TOKEN})).status_code in (
                404,
                405,
            )
    # And the served gateway: two listeners, the console only on its own port.
    running = await start(settings)
    try:
        assert running.admin_port and running.admin_port != running.port
        async with httpx.AsyncClient() as client:
            public = await client.get(f"http://127.0.0.1:{running.port}/login")
            admin = await client.get(f"http://127.0.0.1:{running.admin_port}/login")
        assert public.status_code == 404
        assert admin.status_code == 200 and "Admin token" in admin.text
    finally:
        await running.stop()
