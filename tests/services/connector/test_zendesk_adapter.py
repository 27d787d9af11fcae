"""The zendesk adapter: webhook authentication (X-API-Key, constant time), parsing,
dedupe keys and echo skipping, and its calls against the Zendesk simulator (which
validates every request against the published OpenAPI document) with a real Redis."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters import zendesk
from ccbridge.services.connector.adapters.zendesk import (
    CONVERSATION_FIELD,
    ZendeskAdapter,
    conversation_metadata,
    parse_events,
    transcript_chunks,
    verify_api_key,
)
from ccbridge.services.connector.adapters.zendesk_settings import ZendeskSettings
from ccbridge.services.connector.base import (
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    CaseToOpen,
)
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.settings import SettingsError
from ccbridge.simulators.zendesk import contract
from ccbridge.simulators.zendesk.app import create_app
from tests.simulators.ccaas.support import serve_app

APP = "5d8cff3cd55b040010928b5b"
KEY_ID, KEY_SECRET = "app_1234", "key-secret-of-the-test"
HOOK_SECRET = "0123456789abcdef0123456789abcdef"
CONV = "aaaaaaaaaaaaaaaaaaaaaaaa"
OURS = {CONVERSATION_FIELD: "ib-conv-1"}


def _env(**extra: str) -> dict[str, str]:
    return {
        "CCBRIDGE_ZENDESK_BASE_URL": "https://example.zendesk.com/sc",
        "CCBRIDGE_ZENDESK_APP_ID": APP,
        "CCBRIDGE_ZENDESK_KEY_ID": KEY_ID,
        "CCBRIDGE_ZENDESK_KEY_SECRET": KEY_SECRET,
        "CCBRIDGE_ZENDESK_WEBHOOK_SECRET": HOOK_SECRET,
        **extra,
    }


def _event(kind: str, payload: dict[str, Any], event_id: str = "e" * 24) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": kind,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "payload": payload,
    }


def _body(*events: dict[str, Any]) -> bytes:
    return json.dumps(
        {"app": {"id": APP}, "webhook": {"id": "w" * 24, "version": "v2"}, "events": list(events)}
    ).encode()


def _conv(
    active: str | None = "zd-agentWorkspace", metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": CONV,
        "type": "personal",
        "metadata": OURS if metadata is None else metadata,
    }
    if active:
        doc["activeSwitchboardIntegration"] = {
            "id": "s" * 24,
            "name": active,
            "integrationId": "i" * 24,
            "integrationType": "x",
        }
    return doc


def _message(
    content: dict[str, Any], *, author: str = "business", mid: str = "m" * 24, **extra: Any
) -> dict[str, Any]:
    return _event(
        "conversation:message",
        {
            "conversation": _conv(),
            "message": {
                "id": mid,
                "received": "2026-01-01T00:00:00.000Z",
                "author": {"type": author, "displayName": "Alice"},
                "content": content,
                **extra,
            },
        },
    )


# -- settings -------------------------------------------------------------------------------


def test_settings_read_and_report_every_problem() -> None:
    settings = ZendeskSettings.from_env(_env())
    assert settings.api == f"https://example.zendesk.com/sc/v2/apps/{APP}"
    assert (settings.agent_integration, settings.bot_integration) == (
        "zd-agentWorkspace",
        "ccbridge",
    )
    with pytest.raises(SettingsError) as info:
        ZendeskSettings.from_env(
            _env(
                CCBRIDGE_ZENDESK_BASE_URL="ftp://x",
                CCBRIDGE_ZENDESK_WEBHOOK_SECRET="short",
                CCBRIDGE_ZENDESK_BOT_INTEGRATION="zd-agentWorkspace",
            )
        )
    text = str(info.value)
    for words in ("BASE_URL", "at least 16", "differ"):
        assert words in text
    assert "CCBRIDGE_ZENDESK_WEBHOOK_SECRET" not in str(
        ZendeskSettings.from_env(
            {k: v for k, v in _env().items() if "WEBHOOK" not in k}, need_webhook_secret=False
        )
    )


# -- webhook authentication ---------------------------------------------------------------


def test_api_key_must_match_one_of_the_secrets() -> None:
    secrets_ = (b"new-secret-0123456789", b"old-secret-0123456789")
    verify_api_key(secrets_, {"x-api-key": "new-secret-0123456789"})
    verify_api_key(secrets_, {"x-api-key": "old-secret-0123456789"})  # rotation
    for headers in (
        {},
        {"x-api-key": ""},
        {"x-api-key": "new-secret-012345678"},
        {"x-api-key": "wrong"},
    ):
        with pytest.raises(Unauthenticated):
            verify_api_key(secrets_, headers)


def test_api_key_is_compared_in_constant_time_with_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(zendesk.hmac, "compare_digest", spy)
    verify_api_key(
        (b"first-secret-0123456", b"second-secret-012345"), {"x-api-key": "first-secret-0123456"}
    )
    # Both secrets compared, even after the first matched: no early exit to time.
    assert [b for _, b in calls] == [b"first-secret-0123456", b"second-secret-012345"]


def test_adapter_refuses_a_wrong_key_before_parsing() -> None:
    settings = ZendeskSettings.from_env(_env())
    adapter = ZendeskAdapter(settings, ConnectorStore(aioredis.Redis()))
    with pytest.raises(Unauthenticated):
        adapter.parse_webhook_batch({"X-API-Key": "nope"}, b"not even json")
    batch = adapter.parse_webhook_batch(
        {"X-API-Key": HOOK_SECRET}, _body(_message({"type": "text", "text": "hi"}))
    )
    assert [type(e) for e in batch.events] == [AgentMessage]


# -- parsing ------------------------------------------------------------------------------


def test_agent_text_file_image_and_location() -> None:
    batch = parse_events(
        _body(
            _message({"type": "text", "text": "Hello"}, mid="1" * 24),
            _message(
                {"type": "image", "mediaUrl": "https://z.example/a.png", "mediaType": "image/png"},
                mid="2" * 24,
            ),
            _message(
                {
                    "type": "file",
                    "mediaUrl": "https://z.example/l.pdf",
                    "mediaType": "application/pdf",
                    "text": "your label",
                    "altText": "l.pdf",
                },
                mid="3" * 24,
            ),
            _message(
                {
                    "type": "location",
                    "coordinates": {"lat": 45.8, "long": 15.9},
                    "location": {"name": "Depot"},
                },
                mid="4" * 24,
            ),
        ),
        "zd-agentWorkspace",
    )
    text, image, file, pin = batch.events
    assert isinstance(text, AgentMessage) and (
        text.text,
        text.event_id,
        text.message_id,
        text.agent_name,
    ) == ("Hello", "1" * 24, "1" * 24, "Alice")
    assert isinstance(image, AgentMessage) and [
        (a.url, a.content_type) for a in image.attachments
    ] == [("https://z.example/a.png", "IMAGE")]
    assert isinstance(file, AgentMessage)
    assert [(a.content_type, a.caption, a.name) for a in file.attachments] == [
        ("DOCUMENT", "your label", "l.pdf")
    ]
    assert isinstance(pin, AgentMessage) and pin.location is not None
    assert (pin.location.latitude, pin.location.longitude, pin.location.name) == (
        45.8,
        15.9,
        "Depot",
    )


def test_echoes_user_messages_and_foreign_conversations_are_skipped() -> None:
    mine = _message(
        {"type": "text", "text": "transcript"}, metadata={"ccbridge_origin": "ccbridge"}
    )
    user = _message({"type": "text", "text": "from the customer"}, author="user")
    activity = _message({"type": "text", "text": "Ticket closed"})
    activity["payload"]["message"]["author"]["subtypes"] = ["activity"]
    foreign = _message({"type": "text", "text": "web widget chat"})
    foreign["payload"]["conversation"]["metadata"] = {}
    batch = parse_events(_body(mine, user, activity, foreign), "zd-agentWorkspace")
    assert (batch.events, batch.ignored) == ([], 4)


def test_control_events() -> None:
    to_agents = _event(
        "switchboard:passControl", {"conversation": _conv("zd-agentWorkspace")}, "1" * 24
    )
    own = _event(
        "switchboard:passControl",
        {"conversation": _conv("ccbridge"), "metadata": {"ccbridge_origin": "ccbridge"}},
        "2" * 24,
    )
    back = _event(
        "switchboard:passControl",
        {"conversation": _conv("zd-answerBot"), "reason": "ticketClosed"},
        "3" * 24,
    )
    released = _event("switchboard:releaseControl", {"conversation": _conv(None)}, "4" * 24)
    typing = _event(
        "conversation:typing",
        {
            "conversation": _conv(),
            "activity": {"type": "typing:start", "author": {"type": "business"}},
        },
        "5" * 24,
    )
    other = _event("conversation:read", {"conversation": _conv()}, "6" * 24)
    batch = parse_events(_body(to_agents, own, back, released, typing, other), "zd-agentWorkspace")
    assert batch.ignored == 3
    closed, released_, typing_ = batch.events
    assert isinstance(closed, CaseClosedEvent) and (
        closed.external_id,
        closed.event_id,
        closed.reason,
    ) == (CONV, "3" * 24, "ticketClosed")
    assert isinstance(released_, CaseClosedEvent) and released_.reason == "control released"
    assert isinstance(typing_, AgentTyping) and typing_.typing is True


def test_other_message_types_are_never_dropped() -> None:
    (event,) = parse_events(
        _body(_message({"type": "carousel", "items": [{"title": "A"}]})), "zd-agentWorkspace"
    ).events
    assert isinstance(event, AgentMessage) and event.text.startswith("[carousel] ")


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{",
        b'{"events": {}}',
        _body(_message({"type": "image"})),  # no mediaUrl
        _body(_message({"type": "location", "coordinates": {"lat": 100, "long": 0}})),
        _body(_message({"type": "text", "text": ""})),
        _body(_message({"type": "text", "text": "x"}, mid="")),
    ],
)
def test_malformed_webhooks_are_invalid_argument(body: bytes) -> None:
    with pytest.raises(InvalidArgument):
        parse_events(body, "zd-agentWorkspace")


# -- what the bridge writes ---------------------------------------------------------------


def _msg(
    text: str,
    *,
    inbound: bool = True,
    content_type: str = "TEXT",
    content: dict[str, Any] | None = None,
) -> common_pb2.Message:
    return common_pb2.Message(
        id=uuid.uuid4().hex,
        direction=common_pb2.DIRECTION_INBOUND if inbound else common_pb2.DIRECTION_OUTBOUND,
        author_type="CUSTOMER" if inbound else "BOT",
        content_type=content_type,
        content_json=json.dumps(content or {"text": text}),
        created_at=Timestamp(seconds=1_700_000_000),
    )


def _case(
    cid: str, transcript: list[common_pb2.Message], end_user: str = "385991234567", **extra: Any
) -> CaseToOpen:
    fields: dict[str, Any] = {
        "conversation_id": cid,
        "channel": "WHATSAPP",
        "end_user": end_user,
        "queue": "vip",
        "priority": 3,
        "skills": ("de",),
        "rule": "vip",
        "tags": ("gold",),
        "metadata": {"order": "42"},
        "transcript": transcript,
        "transcript_truncated": False,
        "idempotency_key": cid,
    }
    return CaseToOpen(**(fields | extra))


def test_transcript_chunks_fit_and_keep_every_line() -> None:
    transcript = [_msg(f"message {i:04d} " + "x" * 40) for i in range(300)] + [_msg("y" * 9000)]
    chunks = transcript_chunks(_case("c1", transcript), 4000)
    assert all(len(chunk) <= 4000 for chunk in chunks)
    assert [c.split("\n")[0] for c in chunks[1:]] == [
        f"Transcript part {i}/{len(chunks)} (times UTC, oldest first)"
        for i in range(2, len(chunks) + 1)
    ]
    joined = "\n".join(chunks)
    assert all(f"message {i:04d}" in joined for i in range(300))
    assert joined.count("y") >= 9000  # the long line is cut across parts, not dropped


def test_context_fits_the_first_part_whatever_the_metadata() -> None:
    big = {f"k{i}": "v" * 300 for i in range(50)}
    chunks = transcript_chunks(_case("c1", [_msg("hi")], metadata=big, tags=("t" * 5000,)), 4000)
    assert all(len(chunk) <= 4000 for chunk in chunks)
    assert "Transcript part 1/" in chunks[0] and "customer: hi" in chunks[0]


def test_metadata_stays_within_4kb() -> None:
    big = {f"k{i}": "v" * 100 for i in range(100)}
    meta = conversation_metadata(_case("c1", [], metadata=big, tags=("t" * 9000,), queue="q" * 900))
    assert len(json.dumps(meta, separators=(",", ":")).encode()) <= 4096
    assert meta[CONVERSATION_FIELD] == "c1" and meta["ccbridge_tags"] == "t" * 1500


# -- against the simulator ----------------------------------------------------------------


@asynccontextmanager
async def sim_and_adapter(
    redis_client: aioredis.Redis,
) -> AsyncIterator[tuple[ZendeskAdapter, Any, str]]:
    app = create_app(app_id=APP, key_id=KEY_ID, key_secret=KEY_SECRET, webhook_secret=HOOK_SECRET)
    async with serve_app(app) as url:
        settings = ZendeskSettings.from_env(
            _env(CCBRIDGE_ZENDESK_BASE_URL=url, CCBRIDGE_ZENDESK_TIMEOUT_S="2")
        )
        adapter = ZendeskAdapter(settings, ConnectorStore(redis_client, "t"))
        try:
            yield adapter, app.state.sim, url
        finally:
            await adapter.aclose()
            await app.state.webhooks.stop()
    assert app.state.sim.violations == []


async def test_open_is_idempotent_and_one_user_per_address(redis_client: aioredis.Redis) -> None:
    async with sim_and_adapter(redis_client) as (adapter, sim, _):
        transcript = [_msg("hi"), _msg("hello, I am the bot", inbound=False)]
        first = await adapter.open_case(_case("ib-1", transcript))
        again = await adapter.open_case(_case("ib-1", transcript))
        assert (again.external_id, again.existing, first.existing) == (
            first.external_id,
            True,
            False,
        )
        conv = sim.conversations[first.external_id]
        assert conv.active == "zd-agentWorkspace"
        assert [m["metadata"]["ccbridge_kind"] for m in conv.messages] == ["transcript"]
        assert "customer: hi" in conv.messages[0]["content"]["text"]
        assert conv.metadata["ccbridge_queue"] == "vip" and conv.metadata["ib_order"] == "42"
        # Redis lost: the conversation is found by its metadata, not created twice.
        await redis_client.flushdb()
        found = await adapter.open_case(_case("ib-1", transcript))
        assert found.external_id == first.external_id and len(sim.conversations) == 1
        # The same customer's next handover: same user, new conversation.
        other = await adapter.open_case(_case("ib-2", []))
        assert other.external_id != first.external_id
        assert len(sim.users) == 1
        assert next(iter(sim.users.values()))["externalId"] == "whatsapp:385991234567"


async def test_customer_messages_once_even_in_doubt(redis_client: aioredis.Redis) -> None:
    async with sim_and_adapter(redis_client) as (adapter, sim, _):
        case = await adapter.open_case(_case("ib-1", []))
        message = _msg("where is my parcel?")
        first = await adapter.post_customer_message(case.external_id, "ib-1", message, message.id)
        assert (
            await adapter.post_customer_message(case.external_id, "ib-1", message, message.id)
            == first
        )
        # An attempt that died after its POST left only the pending mark: found, not re-sent.
        key = ConnectorStore(redis_client, "t").zendesk_message("ib-1", message.id)
        await redis_client.set(key, "pending")
        assert (
            await adapter.post_customer_message(case.external_id, "ib-1", message, message.id)
            == first
        )
        user_messages = [
            m for m in sim.conversations[case.external_id].messages if m["author"]["type"] == "user"
        ]
        assert [m["content"]["text"] for m in user_messages] == ["where is my parcel?"]
        pin = _msg(
            "",
            content_type="LOCATION",
            content={"latitude": 1.5, "longitude": 2.5, "locationName": "Home"},
        )
        await adapter.post_customer_message(case.external_id, "ib-1", pin, pin.id)
        last = sim.conversations[case.external_id].messages[-1]
        assert last["content"] == {
            "type": "location",
            "coordinates": {"lat": 1.5, "long": 2.5},
            "location": {"name": "Home"},
        }
        assert last["metadata"]["ccbridge_content_type"] == "LOCATION"


async def test_close_failure_note_and_far_side_errors(redis_client: aioredis.Redis) -> None:
    async with sim_and_adapter(redis_client) as (adapter, sim, _):
        sim.switchboard_integrations.append(
            {
                "id": "b" * 24,
                "name": "ccbridge",
                "integrationId": "c" * 24,
                "integrationType": "custom",
                "deliverStandbyEvents": True,
            }
        )
        case = await adapter.open_case(_case("ib-1", []))
        await adapter.report_message_failed(
            case.external_id, "ib-1", "reply-1", "user blocked", "failed:reply-1"
        )
        await adapter.report_message_failed(
            case.external_id, "ib-1", "reply-1", "user blocked", "failed:reply-1"
        )
        notes = [
            m
            for m in sim.conversations[case.external_id].messages
            if m["metadata"]["ccbridge_kind"] == "failure"
        ]
        assert len(notes) == 1 and "NOT delivered" in notes[0]["content"]["text"]
        assert await adapter.close_case(case.external_id, "ib-1", "customer left", "close") is False
        assert sim.conversations[case.external_id].active == "ccbridge"
        assert await adapter.close_case(case.external_id, "ib-1", "customer left", "close") is True
        sim.rate_limited, sim.retry_after_s = 1, 7
        with pytest.raises(FarSideError) as info:
            await adapter.open_case(_case("ib-3", []))
        assert (info.value.retryable, info.value.retry_after, info.value.status) == (True, 7.0, 429)
        sim.down = True
        with pytest.raises(FarSideError) as info:
            await adapter.open_case(_case("ib-3", []))
        assert info.value.retryable
        sim.down = False
        sim.key_secret = "rotated-elsewhere"
        with pytest.raises(FarSideError) as info:
            await adapter.open_case(_case("ib-3", []))
        assert (info.value.retryable, info.value.status) == (False, 401)


# -- the vendored contract ----------------------------------------------------------------


def test_vendored_document_is_the_checked_copy() -> None:
    assert contract.digest(contract.document_bytes()) == contract.SHA256


def test_contract_refuses_what_the_document_does_not_allow() -> None:
    checked = contract.Contract()
    base = f"/v2/apps/{APP}/conversations/{CONV}"
    checked.check_request(
        "POST",
        f"{base}/messages",
        {},
        {"author": {"type": "user", "userId": "u"}, "content": {"type": "text", "text": "hi"}},
    )
    for method, path, query, body in (
        (
            "POST",
            f"{base}/messages",
            {},
            {"author": {"type": "agent"}, "content": {"type": "text", "text": "x"}},
        ),
        (
            "POST",
            f"{base}/messages",
            {},
            {"author": {"type": "user"}, "content": {"type": "text", "text": "x" * 4097}},
        ),
        ("POST", f"{base}/passControl", {}, {}),
        ("GET", f"/v2/apps/{APP}/conversations", {}, None),
        ("GET", f"{base}/messages", {"page[before]": "short"}, None),
        ("POST", f"{base}/typing", {}, {}),
    ):
        with pytest.raises(contract.ContractViolation):
            checked.check_request(method, path, query, body)
    conversation, _ = checked.operation("GET", base)
    with pytest.raises(contract.ContractViolation):
        checked.check_answer(conversation, 200, {"conversation": {"id": CONV, "isDefault": "no"}})
