"""Hypothesis over the webhook connector's CCaaS side (services/connector/adapters/
webhook.py): the signature check and the event parser of pushed bodies, and the parser
of a stored message's content.

Invariant: an answer, InvalidArgument (→ 400) or Unauthenticated (→ 401); every parsed
event carries valid ids and text protobuf can hold; never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.webhook import (
    WebhookAdapter,
    message_json,
    parse_events,
)
from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.adapters.webhook_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signed_headers,
    verify_signature,
)
from ccbridge.services.connector.base import (
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    WebhookBatch,
)
from ccbridge.services.connector.session_client import to_case_event
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.ids import is_message_id
from ccbridge.services.runtime.settings import EnvReader
from tests.fuzz.conftest import fuzz_examples, fuzz_settings
from tests.fuzz.strategies import ANY_TEXT, JSON, RAW_BODIES, ccaas_body, json_bytes

pytestmark = pytest.mark.fuzz

SECRET = "ccaas-webhook-secret-0123456789"
NOW = 1_800_000_000.0
# Header values as the gateway forwards them: any byte, decoded as latin-1.
HEADER_VALUES = ANY_TEXT | st.binary(max_size=80).map(lambda raw: raw.decode("latin-1"))


def check_batch(batch: WebhookBatch) -> None:
    assert batch.ignored >= 0
    for event in batch.events:
        assert is_message_id(event.external_id) and is_message_id(event.event_id)
        if isinstance(event, AgentMessage):
            assert is_message_id(event.message_id)
            assert event.text or event.attachments or event.location is not None
            # protobuf string fields take only what UTF-8 can encode
            event.text.encode()
            event.agent_name.encode()
            for attachment in event.attachments:
                assert attachment.url.startswith(("http://", "https://"))
                assert attachment.content_type in ("IMAGE", "DOCUMENT", "VIDEO", "AUDIO")
                attachment.SerializeToString()  # every string valid UTF-8
            if event.location is not None:
                assert -90 <= event.location.latitude <= 90
                assert -180 <= event.location.longitude <= 180
                event.location.SerializeToString()
            to_case_event("webhook", event).SerializeToString()
        elif isinstance(event, AgentTyping):
            to_case_event("webhook", event).SerializeToString()
        else:
            assert isinstance(event, CaseClosedEvent)
            event.reason.encode()


@given(body=ccaas_body().map(json_bytes) | RAW_BODIES)
@fuzz_settings(fuzz_examples(400))
def test_parse_events(body: bytes) -> None:
    try:
        batch = parse_events(body)
    except InvalidArgument:
        return
    check_batch(batch)


@given(
    body=ccaas_body().map(json_bytes) | RAW_BODIES,
    timestamp=HEADER_VALUES | st.integers().map(str),
    signature=HEADER_VALUES,
    names=st.sampled_from(["both", "timestamp", "signature", "none"]),
)
@fuzz_settings(fuzz_examples(300))
def test_verify_signature_refuses_or_passes(
    body: bytes, timestamp: str, signature: str, names: str
) -> None:
    headers: dict[str, str] = {}
    if names in ("both", "timestamp"):
        headers[TIMESTAMP_HEADER.lower()] = timestamp
    if names in ("both", "signature"):
        headers[SIGNATURE_HEADER.lower()] = signature
    with pytest.raises(Unauthenticated):
        verify_signature([SECRET], headers, body, now=NOW)


def _adapter() -> WebhookAdapter:
    env = EnvReader(
        {
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://127.0.0.1:9/events",
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": SECRET,
        }
    )
    settings = WebhookSettings.read(env)
    env.done("webhook connector")
    return WebhookAdapter(settings)


@given(body=ccaas_body().map(json_bytes) | RAW_BODIES)
@fuzz_settings(fuzz_examples(300))
async def test_signed_push_parses_or_is_refused(body: bytes) -> None:
    adapter = _adapter()
    try:
        headers = signed_headers(SECRET, body)
        try:
            batch = adapter.parse_webhook_batch(headers, body)
        except InvalidArgument:
            return
        check_batch(batch)
    finally:
        await adapter.aclose()


@given(content=JSON.map(json_bytes) | RAW_BODIES, kind=st.sampled_from(["TEXT", "IMAGE", ""]))
@fuzz_settings(fuzz_examples(300))
def test_message_json_of_stored_content(content: bytes, kind: str) -> None:
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return  # protobuf string fields hold valid UTF-8 only
    message = common_pb2.Message(
        id="m1", conversation_id="conv-1", content_type=kind, content_json=text
    )
    try:
        doc = message_json(message)
    except (InvalidArgument, FarSideError):
        return
    assert isinstance(doc["content"], dict)
