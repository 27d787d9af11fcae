"""Every content family Infobip documents reaches the CCaaS with its own type and content.

The fixtures are Infobip's own: every Create Message request example of the published
Conversations document (IMAGE, DOCUMENT, VIDEO, AUDIO, LOCATION, CONTACT, stickers,
EMAIL, INTERACTIVE, RCS_FILE, templates…) taken as the message an end user sent, plus
every value of its ``ContentType`` enum. A legacy webhook message carries its type; a
Subscriptions event does not, and its type is left empty for Session to read (never
guessed). The webhook connector's ``case.message`` passes both through untouched."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ccbridge.gateway.webhooks import event_message, legacy_message, now_instant
from ccbridge.services.connector.adapters.webhook import message_json
from tests.support.infobip_contract import DOCUMENTS

CONV = "b9263ee4-93b9-4352-912a-3b558f751276"
CREATE_MESSAGE = ("/ccaas/1/conversations/{conversationId}/messages", "post")


# A copy of what these tests need from the document, so they run where the documents are
# not beside the checkout; test_the_copy_is_the_documents checks it where they are.
COPY = Path(__file__).with_name("infobip_content_examples.json")


@cache
def _copy() -> dict[str, Any]:
    return dict(json.loads(COPY.read_text()))


def _from_document() -> dict[str, Any]:
    with (DOCUMENTS / "infobip-conversations-openapi.json").open() as handle:
        doc = json.load(handle)
    path, method = CREATE_MESSAGE
    media = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
    schemas = doc["components"]["schemas"]
    [enum] = [s["enum"] for name, s in schemas.items() if name.endswith(".ContentType")]
    return {
        "createMessageExamples": [[n, e["value"]] for n, e in media["examples"].items()],
        "contentTypes": list(dict.fromkeys(enum)),
    }


def create_message_examples() -> list[tuple[str, dict[str, Any]]]:
    return [(name, value) for name, value in _copy()["createMessageExamples"]]


def content_type_enum() -> list[str]:
    return list(_copy()["contentTypes"])


def test_the_copy_is_the_documents() -> None:
    if not DOCUMENTS.is_dir():
        pytest.skip(f"Infobip's published documents are not at {DOCUMENTS}")
    copy = _copy()
    assert {k: copy[k] for k in ("createMessageExamples", "contentTypes")} == _from_document()


EXAMPLES = create_message_examples()


def test_the_examples_cover_the_families_the_issue_names() -> None:
    kinds = {example["contentType"] for _, example in EXAMPLES}
    wanted = {"TEXT", "IMAGE", "DOCUMENT", "VIDEO", "AUDIO", "LOCATION", "CONTACT", "EMAIL"}
    assert wanted <= kinds
    assert len(EXAMPLES) > 30


def _legacy_item(example: dict[str, Any], index: int) -> dict[str, object]:
    """The example as Infobip's legacy webhook (a Get Messages item) would bring it."""
    return {
        "id": f"m-{index}",
        "conversationId": CONV,
        "direction": "INBOUND",
        "channel": example["channel"],
        "from": example["to"],
        "to": example["from"],
        "createdAt": "2025-03-21T13:12:06.495+00:00",
        "contentType": example["contentType"],
        "content": example["content"],
    }


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_legacy_message_keeps_type_and_content(name: str, example: dict[str, Any]) -> None:
    message = legacy_message(_legacy_item(example, 1), "body", now_instant())
    assert message.content_type == example["contentType"]
    assert json.loads(message.content_json) == example["content"]
    # The webhook contract's case.message: the same type and content, untouched.
    rendered = message_json(message)
    assert rendered["contentType"] == example["contentType"]
    assert rendered["content"] == example["content"]


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_event_message_leaves_the_type_to_infobip(name: str, example: dict[str, Any]) -> None:
    event = {"type": "INBOUND_MESSAGE", "timestamp": "2025-03-21T13:12:07.000+00:00"}
    payload = {
        "id": CONV,
        "channel": example["channel"],
        "message": {
            "id": "m-1",
            "channel": example["channel"],
            "from": example["to"],
            "to": example["from"],
            "conversationId": CONV,
            "content": example["content"],
        },
    }
    message = event_message(event, payload, "event", now_instant())
    assert message.content_type == ""  # never guessed from the content
    assert json.loads(message.content_json) == example["content"]


@pytest.mark.parametrize("kind", content_type_enum())
def test_every_documented_content_type_passes_through(kind: str) -> None:
    item = {"id": "m-1", "conversationId": CONV, "contentType": kind, "content": {"x": 1}}
    message = legacy_message(item, "body", now_instant())
    assert message.content_type == kind
    assert message_json(message)["contentType"] == kind


def test_a_type_outside_the_enum_is_passed_through_too() -> None:
    item = {"id": "m-1", "conversationId": CONV, "contentType": "NEW_KIND", "content": {}}
    assert legacy_message(item, "body", now_instant()).content_type == "NEW_KIND"
