"""The far-side policy: what an answer or a failure of a far side (Infobip, a CCaaS, RT,
every connector to come) means for the caller, as one :class:`FarSideError`.

It owns the three decisions every far-side caller used to make its own way:

- which HTTP statuses are worth retrying (:data:`RETRYABLE_STATUSES`);
- ``Retry-After``: delta-seconds or an HTTP-date, capped at :data:`MAX_RETRY_AFTER_S`,
  garbage ignored (:func:`parse_retry_after`);
- what each transport failure of :mod:`~ccbridge.services.runtime.http_client` means
  (:func:`judge_failure`), and whether a failed call may still have been acted on
  (:func:`may_have_been_processed`, for callers that keep an idempotency record).

A connector's call, whole::

    try:
        answer = await http.request("POST", "/cases", json_body=doc)
    except HttpFailure as exc:
        raise farside.failure_error("Zendesk create case", exc) from exc
    if not answer.ok:
        raise farside.status_error("Zendesk create case", answer.status, answer.headers)

Callers with their own error type (the Infobip client's ``InfobipError``) build it from
the :class:`Verdict` of :func:`judge_status` / :func:`judge_failure`.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    ConnectFailed,
    HttpFailure,
    InvalidRequest,
)

# Retrying helps when the far side says the failure is about timing, not the request:
# 408 (it gave up waiting for our request), 425 (it will not act on a replayable request
# yet), 429 (too many requests) and every 5xx (its own failure; 501/505 are not expected
# from a far side we were configured for, and a retry that keeps failing still ends in the
# caller's dead letter). Every other 4xx refuses this request, and 3xx is never followed:
# repeating either gets the same answer.
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, *range(500, 600)})

MAX_RETRY_AFTER_S = 3600.0
"""A far side asking for more than an hour is capped to an hour: the caller's retry
schedule (and its dead-letter horizon) stays bounded whatever the far side says."""

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")  # RFC 9110 says digits; decimals are harmless


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (``now``
    is the caller's clock, default ``time.time()``; a past date is 0). At most
    :data:`MAX_RETRY_AFTER_S`; None when absent or not understood."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC as well
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failed call means: ``reason`` (short, no far-side text), whether a retry
    can help, the delay the far side asked for, and the HTTP status when there was one."""

    reason: str
    retryable: bool
    retry_after: float | None = None
    status: int | None = None


def judge_status(status: int, headers: Mapping[str, str], *, now: float | None = None) -> Verdict:
    """The verdict on a non-2xx answer; its ``Retry-After`` counts only when retryable."""
    retryable = is_retryable_status(status)
    retry_after = parse_retry_after(headers.get("retry-after"), now=now) if retryable else None
    return Verdict(f"HTTP {status}", retryable, retry_after, status)


def judge_failure(exc: HttpFailure, *, now: float | None = None) -> Verdict:
    """The verdict on a transport failure.

    Timeouts, refused or broken connections and TLS failures are retryable: they are
    about the path to the far side, and a far side's certificate is fixed on its side, like
    an outage (failing every message meanwhile would dead-letter them all). An invalid
    request is not. An answer too large to read is judged by its status when that says
    failure, and is otherwise not retryable (the same answer would come back).
    """
    if isinstance(exc, AnswerTooLarge):
        if not 200 <= exc.status < 300:
            verdict = judge_status(exc.status, exc.headers, now=now)
            return Verdict(
                f"{verdict.reason}, {exc}", verdict.retryable, verdict.retry_after, exc.status
            )
        return Verdict(str(exc), False, None, exc.status)
    return Verdict(str(exc), not isinstance(exc, InvalidRequest))


def error(what: str, verdict: Verdict) -> FarSideError:
    """The FarSideError of ``verdict`` for the call ``what`` (e.g. "RT POST /ticket")."""
    return FarSideError(
        f"{what}: {verdict.reason}",
        retryable=verdict.retryable,
        retry_after=verdict.retry_after,
        status=verdict.status,
    )


def status_error(
    what: str, status: int, headers: Mapping[str, str], *, now: float | None = None
) -> FarSideError:
    """The FarSideError of a non-2xx answer."""
    return error(what, judge_status(status, headers, now=now))


def failure_error(what: str, exc: HttpFailure, *, now: float | None = None) -> FarSideError:
    """The FarSideError of a transport failure; its ``__cause__`` is ``exc`` (raise it
    ``from exc`` too), which :func:`may_have_been_processed` reads."""
    far = error(what, judge_failure(exc, now=now))
    far.__cause__ = exc
    return far


def may_have_been_processed(exc: FarSideError) -> bool:
    """False only when the far side certainly did not act on the request: the connection
    was never made, or it answered 4xx (it refused the request). A timeout or a broken
    connection after sending, and 5xx, leave the outcome open."""
    if isinstance(exc.__cause__, ConnectFailed):
        return False
    return not (exc.status is not None and 400 <= exc.status < 500)
