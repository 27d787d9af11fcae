"""Hypothesis over the gateway's Infobip parsing (gateway/webhooks.py): the legacy
Get-Messages shape and the Subscriptions event shape, as functions and through the
routes (in-process app, the gateway tests' peer doubles, valid credentials).

Invariant: a Message that protobuf can serialize, with a timestamp in range, or an
HttpError 4xx; through the routes, never a 5xx and always the JSON body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccbridge.common.v1 import common_pb2
from ccbridge.gateway._request import parse_json
from ccbridge.gateway.errors import HttpError
from ccbridge.gateway.webhooks import (
    event_message,
    legacy_message,
    now_instant,
    parse_instant,
)
from tests.fuzz.conftest import fuzz_examples, fuzz_settings
from tests.fuzz.strategies import (
    ID_LIKE,
    JSON,
    RAW_BODIES,
    TIMESTAMPS,
    events_body,
    infobip_event,
    infobip_message,
    json_bytes,
    legacy_body,
)
from tests.gateway.conftest import HMAC_SECRETS, WEBHOOK_TOKEN, Peers, running_gateway, sign_hex

pytestmark = pytest.mark.fuzz

OPEN = ("conv-1", "conv-2")  # conversations with an open handover in the Session double
CONVERSATIONS = st.sampled_from(OPEN) | ID_LIKE
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def parsed(doc: Any) -> Any:
    """``doc`` as the route sees it: written by a sender, read by orjson."""
    return orjson.loads(json_bytes(doc))


def check_message(message: common_pb2.Message) -> None:
    assert message.SerializeToString()
    assert message.id and message.conversation_id
    assert MIN_SECONDS <= message.created_at.seconds <= MAX_SECONDS
    assert 0 <= message.created_at.nanos < 1_000_000_000
    assert isinstance(orjson.loads(message.content_json), object)


def check_4xx(exc: HttpError) -> None:
    assert 400 <= exc.status < 500, (exc.status, exc.code)


@given(value=TIMESTAMPS | JSON)
@fuzz_settings(fuzz_examples(300))
def test_parse_instant_is_total(value: Any) -> None:
    instant = parse_instant(value)
    if instant is not None:
        seconds, nanos = instant
        assert MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos < 1_000_000_000


@given(body=RAW_BODIES | legacy_body().map(json_bytes))
@fuzz_settings(fuzz_examples(300))
def test_parse_json_answers_4xx_or_a_document(body: bytes) -> None:
    try:
        parse_json(body)
    except HttpError as exc:
        check_4xx(exc)


@given(item=infobip_message(CONVERSATIONS).map(parsed))
@fuzz_settings(fuzz_examples(400))
def test_legacy_message(item: dict[str, Any]) -> None:
    try:
        message = legacy_message(item, "body", now_instant())
    except HttpError as exc:
        check_4xx(exc)
        return
    check_message(message)


@given(event=infobip_event(CONVERSATIONS).map(parsed))
@fuzz_settings(fuzz_examples(400))
def test_event_message(event: dict[str, Any]) -> None:
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return  # the route answers 400 before asking for the message
    try:
        message = event_message(event, payload, "event", now_instant())
    except HttpError as exc:
        check_4xx(exc)
        return
    check_message(message)


@pytest.fixture(scope="module")
async def gateway(fuzz_peers: Peers) -> AsyncIterator[httpx.AsyncClient]:
    for conversation_id in OPEN:
        fuzz_peers.session.open(conversation_id)
    async with running_gateway(fuzz_peers.env()) as (client, _app):
        yield client


def check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    # Valid credentials: a 401 means this suite no longer signs as the gateway verifies.
    assert response.status_code != 401, response.text
    doc = response.json()
    if response.status_code == 200:
        assert all(isinstance(doc[key], int) and doc[key] >= 0 for key in doc), doc
    else:
        assert isinstance(doc["error"]["code"], str), doc


@given(body=legacy_body(CONVERSATIONS).map(json_bytes) | RAW_BODIES)
@fuzz_settings(fuzz_examples(150))
async def test_legacy_route(gateway: httpx.AsyncClient, body: bytes) -> None:
    response = await gateway.post(
        f"/webhooks/infobip/{WEBHOOK_TOKEN}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    check_answer(response)


@given(body=events_body(CONVERSATIONS).map(json_bytes) | RAW_BODIES)
@fuzz_settings(fuzz_examples(150))
async def test_events_route(gateway: httpx.AsyncClient, body: bytes) -> None:
    response = await gateway.post(
        "/webhooks/infobip/events",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + sign_hex(body, HMAC_SECRETS[1]),
        },
    )
    check_answer(response)
