"""The far-side policy (services/runtime/farside.py): Retry-After, the retryable status
set, and the meaning of each transport failure."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.farside import MAX_RETRY_AFTER_S, parse_retry_after
from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    ConnectFailed,
    ConnectionLost,
    HttpFailure,
    InvalidRequest,
    RequestTimeout,
    TlsFailed,
)

NOW = 1_750_000_000.0


def http_date(offset_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset_s, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (http_date(30), 30.0),
        (http_date(-30), 0.0),  # a date in the past: now
        ("Sun, 15 Jun 2025 15:07:10 -0000", 30.0),  # no zone: UTC
        ("999999", MAX_RETRY_AFTER_S),
        (http_date(10 * 86400), MAX_RETRY_AFTER_S),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("1e3", None),
        ("Mon, 99 Foo 2025 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_parse_retry_after_uses_the_clock_by_default() -> None:
    when = int(time.time()) + 60  # an HTTP date has whole seconds
    in_a_minute = format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True)
    before = time.time()
    seconds = parse_retry_after(in_a_minute)
    after = time.time()
    # Measured from the clock at the call: between what the clock read around it.
    assert seconds is not None and when - after <= seconds <= when - before


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (301, False),
        (302, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (422, False),
    ],
)
def test_status_table(status: int, retryable: bool) -> None:
    assert farside.is_retryable_status(status) is retryable
    verdict = farside.judge_status(status, {"retry-after": "9"}, now=NOW)
    assert (verdict.retryable, verdict.status, verdict.reason) == (
        retryable,
        status,
        f"HTTP {status}",
    )
    # Retry-After counts only where a retry is due.
    assert verdict.retry_after == (9.0 if retryable else None)


def test_status_error() -> None:
    error = farside.status_error("CCaaS case.open", 503, {"retry-after": http_date(5)}, now=NOW)
    assert isinstance(error, FarSideError)
    assert str(error) == "CCaaS case.open: HTTP 503"
    assert (error.retryable, error.retry_after, error.status) == (True, 5.0, 503)
    assert farside.may_have_been_processed(error)


@pytest.mark.parametrize(
    ("failure", "retryable", "status", "retry_after", "processed"),
    [
        (RequestTimeout("timed out after 1s"), True, None, None, True),
        (ConnectFailed("could not connect (ClientConnectorError)"), True, None, None, False),
        (TlsFailed("TLS failed (ClientConnectorCertificateError)"), True, None, None, False),
        (ConnectionLost("connection lost (ServerDisconnectedError)"), True, None, None, True),
        (InvalidRequest("invalid request (InvalidURL)"), False, None, None, True),
        (AnswerTooLarge("answer larger than 9 bytes", status=200, headers={}), False, 200, None,
         True),
        (AnswerTooLarge("answer larger than 9 bytes", status=503, headers={"retry-after": "4"}),
         True, 503, 4.0, True),
        (AnswerTooLarge("answer larger than 9 bytes", status=404, headers={}), False, 404, None,
         False),
    ],
)  # fmt: skip
def test_each_failure_kind(
    failure: HttpFailure,
    retryable: bool,
    status: int | None,
    retry_after: float | None,
    processed: bool,
) -> None:
    error = farside.failure_error("RT POST /ticket", failure, now=NOW)
    assert (error.retryable, error.status, error.retry_after) == (retryable, status, retry_after)
    assert str(error).startswith("RT POST /ticket: ") and str(failure) in str(error)
    assert error.__cause__ is failure
    assert farside.may_have_been_processed(error) is processed


def test_a_refused_request_was_not_processed() -> None:
    refused = farside.status_error("x", 409, {})
    assert not refused.retryable and not farside.may_have_been_processed(refused)
    throttled = farside.status_error("x", 429, {})
    assert throttled.retryable and not farside.may_have_been_processed(throttled)
