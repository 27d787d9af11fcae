"""The webhook adapter's HTTP edge cases (Retry-After forms, timeouts, oversized or
malformed answers) and its signing/verification helpers.

The far side here is a scripted HTTP server on loopback (tests/support/far_side.py): these
are answers the CCaaS simulator cannot be made to give (any status, slow or oversized
answers), sent over the network to the adapter's real client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from google.protobuf import timestamp_pb2

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.webhook import (
    MAX_RESPONSE_BYTES,
    WebhookAdapter,
    event_id,
    iso8601,
    parse_events,
    sign,
    signed_headers,
    verify_signature,
)
from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.base import CaseMessages, CaseToOpen
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.settings import Secret
from tests.support.far_side import FarSide, Reply, Script, closed_port, far_side

NOW = 1_750_000_000.0


def webhook_adapter(url: str) -> WebhookAdapter:
    settings = WebhookSettings(url=url, secrets=(Secret("s-new"), Secret("s-old")), timeout_s=1.0)
    return WebhookAdapter(settings, clock=lambda: NOW)


@asynccontextmanager
async def adapter(script: Script) -> AsyncIterator[tuple[WebhookAdapter, FarSide]]:
    """An adapter posting to a far side that answers with ``script``."""
    async with far_side(script) as far:
        client = webhook_adapter(f"{far.url}/webhook")
        try:
            yield client, far
        finally:
            await client.aclose()


def case() -> CaseToOpen:
    return CaseToOpen(
        conversation_id="conv-1",
        channel="SMS",
        end_user="4470",
        queue="",
        priority=0,
        skills=(),
        rule="default",
        tags=(),
        metadata={},
        transcript=[],
        transcript_truncated=False,
        idempotency_key="conv-1",
    )


async def failure(script: Script) -> FarSideError:
    async with adapter(script) as (client, _):
        with pytest.raises(FarSideError) as info:
            await client.open_case(case())
    return info.value


async def refused() -> FarSideError:
    client = webhook_adapter(f"http://127.0.0.1:{closed_port()}/webhook")
    try:
        with pytest.raises(FarSideError) as info:
            await client.open_case(case())
    finally:
        await client.aclose()
    return info.value


async def test_request_shape_and_signature() -> None:
    async with adapter(lambda _: Reply.json({"caseId": "C-1"}, 201)) as (client, far):
        opened = await client.open_case(case())
        message = common_pb2.Message(
            id="ib-7",
            direction=common_pb2.DIRECTION_INBOUND,
            content_type="TEXT",
            content_json='{"text":"hi"}',
        )
        await client.post_customer_message("C-1", "conv-1", message, "ib-7")
        await client.close_case("C-1", "conv-1", "operator", "")
    assert (opened.external_id, opened.existing) == ("C-1", False)
    open_req, message_req, close_req = far.requests
    assert (open_req.method, open_req.path) == ("POST", "/webhook")
    assert open_req.headers["content-type"] == "application/json"
    doc = open_req.json()
    assert doc["type"] == "case.open" and doc["id"] == event_id("case.open", "conv-1")
    assert doc["timestamp"] == "2025-06-15T15:06:40.000Z"
    assert open_req.headers["idempotency-key"] == "conv-1"
    assert open_req.headers["x-ccbridge-timestamp"] == str(int(NOW))
    assert open_req.headers["x-ccbridge-signature"] == sign("s-new", int(NOW), open_req.body)
    assert message_req.json()["message"] == {
        "id": "ib-7",
        "direction": "INBOUND",
        "authorType": "",
        "createdAt": None,
        "contentType": "TEXT",
        "content": {"text": "hi"},
    }
    assert message_req.headers["idempotency-key"] == "ib-7"
    close_doc = close_req.json()
    assert (close_doc["caseId"], close_doc["reason"], close_doc["idempotencyKey"]) == (
        "C-1",
        "operator",
        "conv-1:close",
    )
    assert event_id("case.open", "k") != event_id("case.message", "k")


@pytest.mark.parametrize(
    ("status", "retry_after", "retryable", "expected_after"),
    [
        (503, "7", True, 7.0),
        (429, "1.5", True, 1.5),
        (408, None, True, None),
        (425, None, True, None),
        (500, "soon", True, None),
        (503, "-3", True, None),  # not delta-seconds: ignored
        (503, "99999", True, 3600.0),  # capped
        (
            503,
            format_datetime(datetime.fromtimestamp(NOW, UTC) - timedelta(seconds=30), usegmt=True),
            True,
            0.0,
        ),
        (
            502,
            format_datetime(datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=30), usegmt=True),
            True,
            30.0,
        ),
        (400, "5", False, None),
        (404, None, False, None),
        (409, None, False, None),
        (302, None, False, None),
    ],
)
async def test_status_mapping(
    status: int, retry_after: str | None, retryable: bool, expected_after: float | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    error = await failure(lambda _: Reply.json({}, status, headers))
    assert (error.retryable, error.status) == (retryable, status)
    assert error.retry_after == expected_after


async def test_timeouts_and_connection_errors_are_retryable() -> None:
    slow = await failure(lambda _: Reply.json({"caseId": "C-1"}, 201, delay_s=5.0))
    assert slow.retryable is True and slow.status is None and "timed out" in str(slow)
    not_there = await refused()
    assert not_there.retryable is True and not_there.status is None
    assert "could not connect" in str(not_there)


async def test_bad_answers() -> None:
    huge = b'{"caseId": "' + b"x" * MAX_RESPONSE_BYTES + b'"}'
    error = await failure(lambda _: Reply(200, huge))
    assert error.retryable is False and "larger" in str(error)
    error = await failure(lambda _: Reply(200, b"<html>ok</html>"))
    assert error.retryable is False and "caseId" in str(error)
    # A failure answer too large to read is still judged by its status.
    error = await failure(lambda _: Reply(503, huge, {"Retry-After": "4"}))
    assert (error.retryable, error.retry_after, error.status) == (True, 4.0, 503)


async def test_replayed_header_means_existing() -> None:
    answer = Reply.json({"caseId": "C-9"}, 201, {"Idempotent-Replayed": "true"})
    async with adapter(lambda _: answer) as (client, _):
        opened = await client.open_case(case())
    assert (opened.external_id, opened.existing) == ("C-9", True)


def test_verify_signature_rotation_and_window() -> None:
    body = b'{"type":"case.closed","id":"e","caseId":"c"}'
    for secret in ("s-new", "s-old"):
        headers = {k.lower(): v for k, v in signed_headers(secret, body, now=NOW).items()}
        verify_signature(["s-new", "s-old"], headers, body, now=NOW + 299)
    headers = {k.lower(): v for k, v in signed_headers("s-old", body, now=NOW).items()}
    with pytest.raises(Unauthenticated):
        verify_signature(["s-new"], headers, body, now=NOW)
    with pytest.raises(Unauthenticated):
        verify_signature(["s-old"], headers, body, now=NOW + 301)
    # Several signatures in one header (the CCaaS rotating its own secret).
    headers["x-ccbridge-signature"] = "v1=deadbeef," + headers["x-ccbridge-signature"]
    verify_signature(["s-old"], headers, body, now=NOW)
    with pytest.raises(Unauthenticated):
        verify_signature(["s-old"], {**headers, "x-ccbridge-timestamp": "x"}, body, now=NOW)


async def test_parse_webhook_via_adapter_uses_the_clock() -> None:
    client = webhook_adapter("http://127.0.0.1:9/webhook")  # never called
    try:
        body = json.dumps({"type": "case.closed", "id": "e1", "caseId": "C-1"}).encode()
        headers = signed_headers("s-new", body, now=NOW)
        events = client.parse_webhook(headers, body)  # mixed-case header names are fine
        assert [(e.external_id, e.event_id) for e in events] == [("C-1", "e1")]
        assert events[0].reason == "closed"  # type: ignore[union-attr]
        with pytest.raises(Unauthenticated):
            client.parse_webhook(signed_headers("s-new", body, now=NOW - 301), body)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (1_750_000_000, 4_000_000),
        (1_750_000_000, 999_999_999),  # the float sum rounds up to the next second
        (1, 500_000_000),
        (-1, 1),
        (-30_610_224_001, 0),  # year 999: strftime does not pad it to 4 digits
        (-50_000_000_000, 123_000_000),
        (253_402_300_799, 0),  # 9999-12-31T23:59:59
    ],
)
def test_iso8601_is_the_strftime_form(seconds: int, nanos: int) -> None:
    moment = datetime.fromtimestamp(seconds + nanos / 1e9, tz=UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert iso8601(ts) == expected
    assert iso8601(timestamp_pb2.Timestamp()) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"case.closed","id":"e1","caseId":"C-1","n":NaN}',
        b'{"type":"case.closed","id":"e1","caseId":"C-1","n":Infinity}',
        b'{"type":"case.closed","id":"e1","caseId":"\\ud800"}',  # a lone surrogate
        b'\xef\xbb\xbf{"type":"case.closed","id":"e1","caseId":"C-1"}',  # a byte-order mark
        b"\xff\xfe{}",
    ],
)
def test_what_orjson_refuses_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match="body is not JSON"):
        parse_events(body)


def test_integers_beyond_64_bits_in_pushed_events_are_floats() -> None:
    body = b'{"type":"case.closed","id":"e1","caseId":"C-1","n":123456789012345678901}'
    (event,) = parse_events(body).events
    assert event.external_id == "C-1"


async def test_a_poison_message_id_fails_its_case_only() -> None:
    """A message id that cannot be an HTTP header (CR/LF) fails its own case, as a
    failure no retry can fix; the other cases of the same relay sweep are delivered."""

    def message(mid: str) -> common_pb2.Message:
        return common_pb2.Message(
            id=mid, direction=common_pb2.DIRECTION_INBOUND, content_json='{"text":"hi"}'
        )

    cases = [
        CaseMessages("C-1", "conv-1", [message("ok-1")]),
        CaseMessages("C-2", "conv-2", [message("poison\r\nX-Injected: 1")]),
        CaseMessages("C-3", "conv-3", [message("ok-3"), message("ok-4")]),
    ]
    async with adapter(lambda _: Reply.json({"messageId": "m"}, 200)) as (client, far):
        first, poison, third = await client.post_customer_messages(cases)
    assert (first.delivered, first.error) == (1, None)
    assert (third.delivered, third.error) == (2, None)
    assert poison.delivered == 0 and poison.error is not None
    assert poison.error.retryable is False
    assert "CR, LF or NUL" in str(poison.error)
    keys = sorted(request.headers["idempotency-key"] for request in far.requests)
    assert keys == ["ok-1", "ok-3", "ok-4"]  # the poison never left
    assert all("x-injected" not in request.headers for request in far.requests)
