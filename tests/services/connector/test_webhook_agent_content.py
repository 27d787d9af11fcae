"""Contract v2 of the webhook connector: ``agent.message`` with attachments and a
location (validated: http(s) URLs, known file types, coordinate ranges, size limits; a
bad one is InvalidArgument, the gateway's 4xx JSON), carried typed to Session, and the
``message.failed`` event the bridge sends when a reply is not delivered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ccbridge.services.connector.adapters.webhook import (
    MAX_ATTACHMENTS,
    MAX_CAPTION_CHARS,
    event_id,
    parse_events,
)
from ccbridge.services.connector.base import AgentMessage, AgentTyping
from ccbridge.services.connector.session_client import to_case_event
from ccbridge.services.runtime.errors import InvalidArgument
from tests.services.connector.test_webhook_adapter import adapter
from tests.support.far_side import Reply

IMAGE = {"url": "https://cdn.example.com/label.png", "contentType": "IMAGE", "caption": "label"}


def _event(**message: Any) -> bytes:
    return orjson.dumps(
        {"type": "agent.message", "id": "e-1", "caseId": "C-1", "message": {"id": "m-1", **message}}
    )


def _parse(**message: Any) -> AgentMessage:
    (event,) = parse_events(_event(**message)).events
    assert isinstance(event, AgentMessage)
    return event


def test_text_attachments_and_location_reach_session_typed() -> None:
    event = _parse(
        text="here you go",
        attachments=[
            IMAGE,
            {"url": "http://cdn.example.com/r.pdf", "contentType": "DOCUMENT", "name": "r.pdf"},
        ],
        location={"latitude": 45.8, "longitude": -15.9, "name": "Shop", "address": "Main St"},
        agentName="Ann",
    )
    message = to_case_event("webhook", event).agent_message
    assert orjson.loads(message.content_json) == {"text": "here you go"}
    assert [(a.url, a.content_type, a.caption, a.name) for a in message.attachments] == [
        ("https://cdn.example.com/label.png", "IMAGE", "label", ""),
        ("http://cdn.example.com/r.pdf", "DOCUMENT", "", "r.pdf"),
    ]
    assert (message.location.latitude, message.location.longitude) == (45.8, -15.9)
    assert (message.location.name, message.location.address) == ("Shop", "Main St")
    assert message.author_name == "Ann"


def test_attachments_or_a_location_without_text() -> None:
    message = to_case_event("webhook", _parse(attachments=[IMAGE])).agent_message
    assert orjson.loads(message.content_json) == {} and len(message.attachments) == 1
    message = to_case_event(
        "webhook", _parse(location={"latitude": 0, "longitude": 0})
    ).agent_message
    assert message.HasField("location") and not message.attachments


def test_a_text_only_message_is_as_before() -> None:
    message = to_case_event("webhook", _parse(text="hi")).agent_message
    assert orjson.loads(message.content_json) == {"text": "hi"}
    assert not message.attachments and not message.HasField("location")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({}, "text .* attachments or location is required"),
        ({"text": ""}, "is required"),
        ({"text": 5}, "text must be a string"),
        ({"attachments": {}}, "attachments must be an array"),
        ({"attachments": [IMAGE] * (MAX_ATTACHMENTS + 1)}, "more than"),
        ({"attachments": ["x"]}, r"attachments\[0\]: must be an object"),
        ({"attachments": [{**IMAGE, "contentType": "STICKER"}]}, "contentType must be one of"),
        ({"attachments": [{**IMAGE, "url": "ftp://x/y"}]}, "http or https"),
        ({"attachments": [{**IMAGE, "url": "javascript:alert(1)"}]}, "http or https"),
        ({"attachments": [{**IMAGE, "url": "https://"}]}, "http or https"),
        ({"attachments": [{**IMAGE, "url": "https://a/ b"}]}, "whitespace"),
        ({"attachments": [{**IMAGE, "url": "https://a/" + "b" * 3000}]}, "longer than"),
        ({"attachments": [{**IMAGE, "url": None}]}, "url is required"),
        (
            {"attachments": [{**IMAGE, "caption": "c" * (MAX_CAPTION_CHARS + 1)}]},
            "caption is longer",
        ),
        ({"attachments": [{**IMAGE, "caption": 3}]}, "caption must be a string"),
        ({"attachments": [{**IMAGE, "size": -1}]}, "size must be"),
        ({"attachments": [{**IMAGE, "size": True}]}, "size must be"),
        ({"location": []}, "location: must be an object"),
        ({"location": {"latitude": 91, "longitude": 0}}, "latitude must be within"),
        ({"location": {"latitude": 0, "longitude": -180.5}}, "longitude must be within"),
        ({"location": {"latitude": "1", "longitude": 0}}, "latitude is required"),
        ({"location": {"latitude": True, "longitude": 0}}, "latitude is required"),
        ({"location": {"longitude": 0}}, "latitude is required"),
        ({"location": {"latitude": 0, "longitude": 0, "name": "n" * 1001}}, "name is longer"),
    ],
)
def test_bad_content_is_a_bad_request(message: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        parse_events(_event(**message))


async def test_message_failed_is_a_signed_idempotent_event() -> None:
    async with adapter(lambda _: Reply.json({}, 200)) as (client, far):
        await client.report_message_failed(
            "C-1", "conv-1", "m-9", "not sendable on SMS: ...", "failed:m-9"
        )
    (request,) = far.requests
    doc = request.json()
    assert doc["type"] == "message.failed"
    assert doc["id"] == event_id("message.failed", "failed:m-9")
    assert (doc["caseId"], doc["messageId"], doc["reason"], doc["conversationId"]) == (
        "C-1",
        "m-9",
        "not sendable on SMS: ...",
        "conv-1",
    )
    assert request.headers["idempotency-key"] == "failed:m-9"
    assert "x-ccbridge-signature" in request.headers


def _typing_event(**fields: Any) -> bytes:
    return orjson.dumps({"type": "agent.typing", "id": "e-2", "caseId": "C-1", **fields})


def test_agent_typing_reaches_session_as_its_own_kind() -> None:
    (event,) = parse_events(_typing_event(typing=True, timestamp="2025-01-01T10:00:00.500Z")).events
    assert isinstance(event, AgentTyping)
    case_event = to_case_event("webhook", event)
    assert case_event.WhichOneof("kind") == "agent_typing"
    assert case_event.agent_typing.typing is True
    assert case_event.agent_typing.at.ToMilliseconds() == 1_735_725_600_500
    (stopped,) = parse_events(_typing_event(typing=False)).events
    assert not to_case_event("webhook", stopped).agent_typing.HasField("at")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "typing is required"),
        ({"typing": "yes"}, "typing is required"),
        ({"typing": True, "timestamp": 5}, "timestamp must be an ISO-8601 string"),
        ({"typing": True, "timestamp": "soon"}, "ISO-8601 instant"),
        ({"typing": True, "timestamp": "2025-01-01T10:00:00"}, "UTC offset"),
    ],
)
def test_bad_typing_is_a_bad_request(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        parse_events(_typing_event(**fields))


async def test_case_typing_is_one_signed_event_per_instant() -> None:
    async with adapter(lambda _: Reply.json({}, 200)) as (client, far):
        assert await client.post_typing("C-1", "conv-1", True) is True
    (request,) = far.requests
    doc = request.json()
    assert (doc["type"], doc["caseId"], doc["typing"], doc["conversationId"]) == (
        "case.typing",
        "C-1",
        True,
        "conv-1",
    )
    assert doc["idempotencyKey"] == "typing:conv-1:1750000000000"
    assert "x-ccbridge-signature" in request.headers
