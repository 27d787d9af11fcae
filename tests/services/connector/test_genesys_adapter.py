"""The genesys adapter against the Genesys simulator served on loopback (real HTTP, real
Redis): OAuth token caching and renewal, inbound open messages that fit the SDK's
models, once per message id, the transcript, the close both ways, and the outbound
notification's signature and parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from google.protobuf import timestamp_pb2

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.genesys import (
    GenesysAdapter,
    id_type,
    is_closed,
    parse_notification,
    transcript_chunks,
)
from ccbridge.services.connector.adapters.genesys_settings import GenesysSettings
from ccbridge.services.connector.base import (
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    CaseToOpen,
)
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.settings import SettingsError
from ccbridge.simulators.genesys.app import create_app, hub_signature
from ccbridge.simulators.genesys.models import validate
from ccbridge.simulators.genesys.state import GenesysState
from tests.simulators.ccaas.support import serve_app

INTEGRATION = "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5"
WEBHOOK_SECRET = "outbound-secret-0123456789"
ENV = {
    "CCBRIDGE_GENESYS_CLIENT_ID": "client-1",
    "CCBRIDGE_GENESYS_CLIENT_SECRET": "client-secret-1",
    "CCBRIDGE_GENESYS_INTEGRATION_ID": INTEGRATION,
    "CCBRIDGE_GENESYS_WEBHOOK_SECRET": WEBHOOK_SECRET,
}


@dataclass
class Far:
    state: GenesysState
    adapter: GenesysAdapter
    store: ConnectorStore

    def conversation(self, external_id: str) -> Any:
        (found,) = [c for c in self.state.find(from_id=external_id) if not c.ended] or [None]
        return found

    def inbound_texts(self, external_id: str) -> list[str]:
        return [
            m["text"]
            for c in self.state.find(from_id=external_id)
            for m in c.messages
            if ":transcript:" not in m["messageId"]
        ]


@pytest.fixture
async def far(redis_client: aioredis.Redis) -> AsyncIterator[Far]:
    state = GenesysState(
        integration_id=INTEGRATION,
        client_id="client-1",
        client_secret="client-secret-1",
        token_ttl_s=3600,
    )
    app = create_app(state, webhook_secret=WEBHOOK_SECRET, bridge_webhook_url=None)
    async with serve_app(app) as url:
        settings = GenesysSettings.from_env({**ENV, "CCBRIDGE_GENESYS_BASE_URL": url})
        store = ConnectorStore(redis_client, prefix="t")
        adapter = GenesysAdapter(settings, store)
        try:
            yield Far(state, adapter, store)
        finally:
            await adapter.aclose()
            assert [r for r in state.records if r.get("errors")] == []


def _case(end_user: str, transcript: int = 3, channel: str = "WHATSAPP") -> CaseToOpen:
    cid = str(uuid.uuid4())
    return CaseToOpen(
        conversation_id=cid,
        channel=channel,
        end_user=end_user,
        queue="Support",
        priority=2,
        skills=("en",),
        rule="vip",
        tags=("vip",),
        metadata={"plan": "gold"},
        transcript=[_message(cid, f"history {i}", i) for i in range(transcript)],
        transcript_truncated=False,
        idempotency_key=cid,
    )


def _message(cid: str, text: str, i: int = 0, **extra: Any) -> common_pb2.Message:
    return common_pb2.Message(
        id=f"m-{uuid.uuid4().hex[:12]}",
        conversation_id=cid,
        direction=common_pb2.DIRECTION_INBOUND if i % 2 == 0 else common_pb2.DIRECTION_OUTBOUND,
        content_type=extra.pop("content_type", "TEXT"),
        content_json=orjson.dumps(extra.pop("content", {"text": text})).decode(),
        created_at=timestamp_pb2.Timestamp(seconds=1_767_000_000 + i),
        **extra,
    )


def _user() -> str:
    return f"3859{uuid.uuid4().int % 10**8:08d}"


# -- settings ---------------------------------------------------------------------------------


def test_region_gives_the_api_and_login_hosts() -> None:
    settings = GenesysSettings.from_env({**ENV, "CCBRIDGE_GENESYS_REGION": "mypurecloud.de"})
    assert settings.api_url == "https://api.mypurecloud.de"
    assert settings.login_url == "https://login.mypurecloud.de"
    assert "client-secret-1" not in repr(settings)


def test_bad_settings_are_named_together() -> None:
    with pytest.raises(SettingsError) as info:
        GenesysSettings.from_env(
            {
                "CCBRIDGE_GENESYS_REGION": "not a region",
                "CCBRIDGE_GENESYS_WEBHOOK_SECRET": "short",
                "CCBRIDGE_GENESYS_BASE_URL": "ftp://x",
            }
        )
    message = str(info.value)
    for key in (
        "CCBRIDGE_GENESYS_REGION",
        "CCBRIDGE_GENESYS_CLIENT_ID",
        "CCBRIDGE_GENESYS_CLIENT_SECRET",
        "CCBRIDGE_GENESYS_INTEGRATION_ID",
        "CCBRIDGE_GENESYS_WEBHOOK_SECRET",
        "CCBRIDGE_GENESYS_BASE_URL",
    ):
        assert key in message


# -- the SDK models ------------------------------------------------------------------------


def test_the_models_refuse_unknown_fields_wrong_types_and_enum_values() -> None:
    good = {
        "channel": {
            "from": {"id": "385981234567", "idType": "Phone"},
            "messageId": "m-1",
            "time": "2026-01-01T10:00:00.000Z",
        },
        "text": "hello",
        "metadata": {"a": "b"},
    }
    assert validate("OpenInboundNormalizedMessage", good) == []
    bad = {
        "channel": {"from": {"id": 5, "idType": "Fax"}, "time": "yesterday", "extra": 1},
        "text": ["x"],
        "metadata": {"a": 1},
    }
    errors = validate("OpenInboundNormalizedMessage", bad)
    assert any("extra: not a field" in e for e in errors), errors
    assert any("from.id: must be a str" in e for e in errors), errors
    assert any("'Fax' is not a value" in e for e in errors), errors
    assert any("time: must be an ISO-8601" in e for e in errors), errors
    assert any("$.text: must be a str" in e for e in errors), errors
    assert any("metadata.a: must be a str" in e for e in errors), errors
    assert validate("OpenInboundNormalizedMessage", {"text": "no channel"}) == [
        "$.channel: required (OpenInboundNormalizedMessage)"
    ]


# -- OAuth ------------------------------------------------------------------------------------


async def test_the_token_is_cached_and_renewed_once_on_a_401(far: Far) -> None:
    case = _case(_user())
    opened = await far.adapter.open_case(case)
    message = _message(case.conversation_id, "one")
    await far.adapter.post_customer_message(opened.external_id, case.conversation_id, message, "")
    assert far.state.tokens_issued == 1  # one token for every call so far
    assert far.state.expire_tokens() == 1  # Genesys revokes it: the next call gets a 401
    second = _message(case.conversation_id, "two")
    await far.adapter.post_customer_message(opened.external_id, case.conversation_id, second, "")
    assert far.state.tokens_issued == 2
    assert far.inbound_texts(opened.external_id) == ["one", "two"]


async def test_a_token_is_renewed_before_it_expires(far: Far) -> None:
    now = [1000.0]
    adapter = GenesysAdapter(far.adapter.settings, far.store, monotonic=lambda: now[0])
    tokens = adapter.tokens
    first = await tokens.get()
    now[0] += 3600 - 300 - 1  # expires_in 3600, renewed 300 s before
    assert await tokens.get() == first
    now[0] += 2
    assert await tokens.get() != first
    assert tokens.fetches == 2
    await adapter.aclose()


async def test_a_fresh_token_refused_again_fails_retryably(far: Far) -> None:
    far.state.token_ttl_s = 0  # every token the simulator issues is refused at once
    with pytest.raises(FarSideError) as info:
        await far.adapter.open_case(_case(_user()))
    assert info.value.retryable and info.value.status == 401
    assert far.state.tokens_issued == 2  # the first token, and one renewal after its 401


async def test_wrong_client_credentials_fail_retryably(far: Far) -> None:
    far.state.client_secret = "rotated-elsewhere"
    with pytest.raises(FarSideError) as info:
        await far.adapter.open_case(_case(_user()))
    assert info.value.retryable and info.value.status == 401


# -- bridge → Genesys -----------------------------------------------------------------------


async def test_open_sends_the_transcript_first_and_carries_routing(far: Far) -> None:
    user = _user()
    case = _case(user, transcript=5)
    opened = await far.adapter.open_case(case)
    assert opened.external_id == user and not opened.existing
    conversation = far.conversation(user)
    first = conversation.messages[0]
    assert first["text"].startswith("Transcript (times UTC, oldest first) (part 1/1)")
    assert "] customer: history 0" in first["text"] and "] bot: history 1" in first["text"]
    assert first["metadata"]["ccbridge.conversationId"] == case.conversation_id
    assert first["metadata"]["ccbridge.queue"] == "Support"
    assert first["metadata"]["infobip.plan"] == "gold"
    assert conversation.id_type == "Phone"
    again = await far.adapter.open_case(case)
    assert again.existing and len(conversation.messages) == 1


async def test_a_retried_opening_sends_only_the_missing_parts(far: Far) -> None:
    adapter = GenesysAdapter(replace(far.adapter.settings, transcript_chunk_chars=300), far.store)
    user = _user()
    case = _case(user, transcript=20)
    far.state.failures += [(0, None), (503, None)]  # the second part fails once
    with pytest.raises(FarSideError):
        await adapter.open_case(case)
    opened = await adapter.open_case(case)
    await adapter.aclose()
    assert opened.existing
    parts = [m["messageId"] for m in far.conversation(user).messages]
    assert len(parts) > 2
    assert parts == [f"{case.conversation_id}:transcript:{i}" for i in range(1, len(parts) + 1)]
    posted = [
        r["body"]["channel"]["messageId"]
        for r in far.state.records
        if str(r.get("path", "")).endswith("/inbound/open/message")
    ]
    assert posted == parts  # part 1 was not posted again (part 2 failed before Genesys)


def test_a_long_transcript_is_cut_into_parts_of_the_limit() -> None:
    case = _case("u", transcript=300)
    chunks = transcript_chunks(case, 1000)
    assert len(chunks) > 1 and all(len(c) <= 1000 for c in chunks)
    lines = [line for c in chunks for line in c.split("\n")[1:]]
    assert len(lines) == 300


async def test_a_message_is_posted_once_per_id(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    message = _message(case.conversation_id, "only once")
    first = await far.adapter.post_customer_message(user, case.conversation_id, message, message.id)
    again = await far.adapter.post_customer_message(user, case.conversation_id, message, message.id)
    assert first and again == first
    assert far.inbound_texts(user) == ["only once"]


async def test_media_goes_as_an_attachment_and_other_types_as_marked_text(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    image = _message(
        case.conversation_id,
        "",
        content_type="IMAGE",
        content={"url": "https://media.example/i.png", "caption": "the lid"},
    )
    place = _message(
        case.conversation_id,
        "",
        content_type="LOCATION",
        content={"latitude": 1.5, "longitude": 2.5, "locationName": "Here"},
    )
    for message in (image, place):
        await far.adapter.post_customer_message(user, case.conversation_id, message, message.id)
    messages = [m for m in far.conversation(user).messages if ":transcript:" not in m["messageId"]]
    assert messages[0]["content"] == [
        {"attachment": {"mediaType": "Image", "url": "https://media.example/i.png"}}
    ]
    assert messages[0]["text"].startswith("[image] https://media.example/i.png the lid")
    assert messages[1]["text"] == "[location] 1.5,2.5 Here"


async def test_a_429_is_retryable_with_its_retry_after(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    far.state.failures.append((429, 7))
    with pytest.raises(FarSideError) as info:
        await far.adapter.post_customer_message(
            user, case.conversation_id, _message(case.conversation_id, "x"), ""
        )
    assert info.value.retryable and info.value.retry_after == 7


async def test_an_undelivered_reply_is_marked_failed_and_explained(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    conversation = far.conversation(user)
    reply = far.state.add_agent_message(conversation, "Here is the link")
    for _ in range(2):  # a retried report has one notice
        await far.adapter.report_message_failed(
            user, case.conversation_id, reply, "blocked", f"failed:{reply}"
        )
    agent = [m for m in conversation.messages if m["direction"] == "Outbound"]
    assert agent[0]["status"] == "Failed"
    assert agent[0]["reasons"] == [{"code": "GeneralError", "message": "blocked"}]
    notices = [m for m in conversation.messages if (m.get("metadata") or {}).get("ccbridge.notice")]
    assert len(notices) == 1
    assert f"{reply} was NOT delivered to the customer: blocked" in notices[0]["text"]


async def test_typing_goes_as_an_open_event(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    assert await far.adapter.post_typing(user, case.conversation_id, True)
    assert far.conversation(user).typing_at


# -- close ----------------------------------------------------------------------------------


async def test_the_agent_disconnecting_is_polled_as_a_close(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    assert await far.adapter.poll() == []
    conversation = far.conversation(user)
    far.state.end_participant(conversation, "agent")
    events = await far.adapter.poll()
    assert events == [
        CaseClosedEvent(user, f"genesys-end:{conversation.id}", "the Genesys conversation ended")
    ]
    await far.adapter.commit_poll(events)
    assert await far.adapter.poll() == []


async def test_an_infobip_close_disconnects_the_customer(far: Far) -> None:
    user = _user()
    case = _case(user)
    await far.adapter.open_case(case)
    conversation = far.conversation(user)
    assert await far.adapter.close_case(user, case.conversation_id, "done", "k") is False
    assert conversation.participant("customer")["state"] == "disconnected"
    assert await far.adapter.close_case(user, case.conversation_id, "done", "k") is True
    assert await far.adapter.poll() == []


async def test_a_second_conversation_of_the_same_user_waits_for_the_first(far: Far) -> None:
    user = _user()
    await far.adapter.open_case(_case(user))
    with pytest.raises(FarSideError) as info:
        await far.adapter.open_case(_case(user))
    assert info.value.retryable
    far.state.end_participant(far.conversation(user), "agent")
    assert (await far.adapter.open_case(_case(user))).external_id == user


def test_is_closed_follows_the_participants() -> None:
    def conv(*states: tuple[str, str]) -> dict[str, Any]:
        return {"participants": [{"purpose": p, "state": s} for p, s in states]}

    assert is_closed(None)
    assert not is_closed(conv(("customer", "connected"), ("acd", "connected")))
    assert not is_closed(conv(("customer", "connected"), ("agent", "connected")))
    assert is_closed(conv(("customer", "connected"), ("agent", "disconnected")))
    # A transfer: the first agent left, the next one is being offered the conversation.
    assert not is_closed(
        conv(("customer", "connected"), ("agent", "disconnected"), ("agent", "alerting"))
    )
    assert is_closed(conv(("customer", "disconnected"), ("acd", "connected")))
    # Participants from long before the case's opening do not count.
    old = {"purpose": "agent", "state": "disconnected", "startTime": "2020-01-01T00:00:00.000Z"}
    assert not is_closed({"participants": [old]}, since=1_767_000_000)
    assert is_closed({"participants": [old]})


# -- Genesys → bridge ------------------------------------------------------------------------


def _notification(**overrides: Any) -> dict[str, Any]:
    doc = {
        "id": "g-msg-1",
        "channel": {
            "id": INTEGRATION,
            "platform": "Open",
            "type": "Private",
            "messageId": "g-msg-1",
            "to": {"id": "385981234567", "idType": "Phone"},
            "from": {"id": INTEGRATION, "idType": "Opaque", "nickname": "Alice"},
            "time": "2026-01-01T10:00:00.000Z",
        },
        "type": "Text",
        "text": "Hello from Alice",
        "direction": "Outbound",
    }
    doc.update(overrides)
    return doc


def test_the_signature_is_base64_hmac_sha256_of_the_raw_body(far: Far) -> None:
    body = orjson.dumps(_notification())
    expected = (
        "sha256="
        + base64.b64encode(
            hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()
        ).decode()
    )
    assert hub_signature(WEBHOOK_SECRET, body) == expected
    batch = far.adapter.parse_webhook_batch({"X-Hub-Signature-256": expected}, body)
    assert batch.events == [
        AgentMessage(
            external_id="385981234567",
            event_id="g-msg-1",
            message_id="g-msg-1",
            text="Hello from Alice",
            agent_name="Alice",
        )
    ]
    for headers in ({}, {"x-hub-signature-256": "sha256=" + "A" * 44}):
        with pytest.raises(Unauthenticated):
            far.adapter.parse_webhook_batch(headers, body)
    with pytest.raises(Unauthenticated):  # a changed body
        far.adapter.parse_webhook_batch({"x-hub-signature-256": expected}, body + b" ")


def test_attachments_typing_and_receipts() -> None:
    attachment = {
        "mediaType": "Image",
        "url": "https://files.example/a.png",
        "mime": "image/png",
        "filename": "a.png",
    }
    doc = _notification(text="", content=[{"contentType": "Attachment", "attachment": attachment}])
    assert validate("OpenNormalizedMessage", doc) == []
    (event,) = parse_notification(orjson.dumps(doc)).events
    assert isinstance(event, AgentMessage)
    assert [(a.content_type, a.url, a.name) for a in event.attachments] == [
        ("IMAGE", "https://files.example/a.png", "a.png")
    ]
    typing = _notification(type="Event", events=[{"eventType": "Typing", "typing": {"type": "On"}}])
    del typing["text"], typing["direction"]
    assert validate("OpenEventNormalizedMessage", typing) == []
    (indicator,) = parse_notification(orjson.dumps(typing)).events
    assert isinstance(indicator, AgentTyping) and indicator.typing
    receipt = _notification(type="Receipt", status="Delivered")
    del receipt["text"]
    batch = parse_notification(orjson.dumps(receipt))
    assert (batch.events, batch.ignored) == ([], 1)
    for bad in (b"[]", b"{", orjson.dumps({"channel": {}})):
        with pytest.raises(InvalidArgument):
            parse_notification(bad)


def test_id_types_per_channel() -> None:
    assert id_type("WHATSAPP", "385981234567") == "Phone"
    assert id_type("EMAIL", "a@example.com") == "Email"
    assert id_type("LINE", "U123") == "Opaque"


def test_the_settings_dataclass_replace_keeps_secrets_hidden() -> None:
    settings = replace(GenesysSettings.from_env(ENV), timeout_s=1.0)
    assert WEBHOOK_SECRET not in repr(settings)


# -- ccbridge genesys setup ---------------------------------------------------------------


async def test_setup_checks_and_points_the_webhook_once(
    far: Far, capsys: pytest.CaptureFixture[str]
) -> None:
    from ccbridge.services.connector.genesys_cli import setup

    url = "https://bridge.example/webhooks/ccaas/genesys"
    settings = far.adapter.settings
    assert await setup(settings, None, False) == 0
    assert await setup(settings, url, False) == 0
    assert await setup(settings, url, False) == 0  # already matching: no second update
    patches = [r for r in far.state.records if str(r.get("path", "")).startswith("PATCH")]
    assert len(patches) == 1
    assert patches[0]["body"] == {
        "outboundNotificationWebhookUrl": url,
        "outboundNotificationWebhookSignatureSecretToken": WEBHOOK_SECRET,
    }
    shown = capsys.readouterr()
    assert WEBHOOK_SECRET not in shown.out + shown.err
    assert validate("OpenIntegration", orjson.loads(shown.out.split("\n}\n")[-2] + "\n}")) == []
    wrong = replace(settings, integration_id="not-there")
    assert await setup(wrong, url, False) == 1
