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

And the one health gate per far side shared by every replica (:class:`FarSideGate`: a
circuit breaker with a half-open probe, and a rate budget), so an outage costs one probe
per interval instead of every caller's retry budget, and its end is seen by all at once.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    ConnectFailed,
    HttpFailure,
    InvalidRequest,
)

if TYPE_CHECKING:  # the gateway imports this module and must not load redis-py
    from ccbridge.services.runtime.redis import RedisClient

log = logging.getLogger(__name__)

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


# -- the shared health gate of each far side ----------------------------------------------

# Admits a call to a far side. KEYS: the far side's hash   ARGV: probe timeout ms, rate per
# second (0: no budget), burst, cost, probe interval ms. Returns {kind, wait ms, consecutive
# failures}: kind 1 call, 2 call as the one probe of an open breaker, 0 held (open
# breaker: wait ms until the next probe may go), 3 held (rate budget spent: wait ms until
# it has the cost).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probe_until', 'tokens', 'ts',
  'fails')
local fails = tonumber(f[6] or '0') or 0
if f[1] == 'open' then
  local next_probe = math.max(tonumber(f[2] or '0') or 0, tonumber(f[3] or '0') or 0)
  if now < next_probe then return {0, math.min(next_probe - now, tonumber(ARGV[5])), fails} end
  redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]), 'prober_until', 0)
  return {2, 0, fails}
end
local rate = tonumber(ARGV[2])
if rate > 0 then
  local burst = tonumber(ARGV[3])
  local cost = math.min(tonumber(ARGV[4]), burst)
  local tokens = tonumber(f[4] or '') or burst
  local ts = tonumber(f[5] or '') or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  if tokens < cost then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
    return {3, math.ceil((cost - tokens) * 1000 / rate), fails}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - cost), 'ts', now)
end
return {1, 0, fails}
"""

# Records a call's outcome. KEYS: the far side's hash, its waiters (zset)   ARGV: ok
# ('1'/'0'), failures that open the breaker, probe interval ms. Returns {kind, waiters}:
# kind 1 recovered (the breaker was open), 2 still open, 3 opened by this failure, 0
# otherwise; a success hands back (and forgets) every waiter.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'fails', 0, 'open_until', 0, 'probe_until', 0,
    'prober', '', 'streak', 0)
  local waiters = redis.call('ZRANGE', KEYS[2], 0, -1)
  redis.call('DEL', KEYS[2])
  return {state == 'open' and 1 or 0, waiters}
end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if state == 'open' then redis.call('HINCRBY', KEYS[1], 'streak', 1) end
if state == 'open' or fails >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + tonumber(ARGV[3]),
    'probe_until', 0)
  return {state == 'open' and 2 or 3, {}}
end
return {0, {}}
"""

# Parks a caller waiting on a sick far side (breaker open, or failures counted since its
# last success). KEYS: the far side's hash, its waiters (zset)   ARGV: member, how long a
# named prober has to show up (ms), failed probes after which a prober yields its role.
# While the breaker is open one waiter is the prober: the first to park while the role is
# free, told to come back when the next probe may go. It keeps the role until it fails
# that many probes in a row; then the oldest other waiter is named (a message that fails
# on its own cannot hold the far side shut). Returns {wait ms, prober, prober's wait ms}:
# wait 0 not parked (the far side is healthy), -1 parked (handed back at the next
# success), -2 the same while the breaker is open, > 0 parked as the prober; prober:
# another member named to probe ('' none), whom the caller schedules.
_PARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'state', 'fails', 'open_until', 'prober',
  'prober_until', 'streak')
if f[1] ~= 'open' and (tonumber(f[2] or '0') or 0) == 0 then return {0, '', 0} end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
if f[1] ~= 'open' then return {-1, '', 0} end
local wait = math.max(1, (tonumber(f[3] or '0') or 0) - now)
local prober, prober_until = f[4] or '', tonumber(f[5] or '0') or 0
if prober ~= '' and prober_until >= now then
  if prober == ARGV[1] then return {wait, '', 0} end
  return {-2, '', 0}
end
local candidate = ARGV[1]
if prober == ARGV[1] and (tonumber(f[6] or '0') or 0) >= tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], 'XX', now, ARGV[1])
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, 0)) do candidate = m end
end
redis.call('HSET', KEYS[1], 'prober', candidate, 'prober_until', now + wait + tonumber(ARGV[2]))
if candidate == ARGV[1] then return {wait, '', 0} end
redis.call('HSET', KEYS[1], 'streak', 0)
return {-2, candidate, wait}
"""


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """How the health gate of every far side behaves (settings: README)."""

    failures_to_open: int = 5
    """Consecutive retryable failures (across all replicas) that open the breaker."""
    probe_interval_ms: int = 1000
    """While open, one call (the probe) goes through at most this often."""
    probe_timeout_ms: int = 30000
    """A probe whose caller never reports (crashed) lets the next one go after this."""
    prober_yields_after: int = 3
    """Failed probes in a row after which the prober hands its role to another waiter."""
    rate_per_s: float = 0.0
    """Calls (messages, for a batch) per second all replicas may make together; 0: no
    budget."""
    burst: int = 1
    """How many of them may go at once after a quiet time."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a call may go now: ``allowed`` (``probe`` when it is the open breaker's one
    probe), else held for ``wait_s`` (``reason``: "open" or "rate"). ``healthy``: no
    failure was counted since the last success, so a success needs no report."""

    allowed: bool
    probe: bool = False
    wait_s: float = 0.0
    reason: str = ""
    healthy: bool = True


ALLOW = Admission(True)


@dataclass(frozen=True, slots=True)
class Parking:
    """What :meth:`FarSideGate.park` did: ``parked`` (False: the far side is healthy, go
    again at once), ``open`` (its breaker is), ``probe_in_s`` (this caller is the open
    breaker's next prober: come back then), ``prober`` (another parked member named the
    next prober: the caller schedules it ``prober_in_s`` from now)."""

    parked: bool
    open: bool = False
    probe_in_s: float | None = None
    prober: str = ""
    prober_in_s: float = 0.0


class FarSideGate:
    """One health gate per far side (``<prefix>:fs:{<name>}``), shared by every replica
    through Redis: a circuit breaker with a half-open probe and a rate budget (token
    bucket).

    Callers ask :meth:`admit` before each call and :meth:`record` its outcome (only
    retryable failures count: a refused request says nothing of the far side's health).
    After ``failures_to_open`` consecutive failures the breaker opens: calls are held (not
    made, so they cost the caller's retry budget nothing), and one probe at a time goes
    through every ``probe_interval_ms``. Whatever waits on a sick far side (held, or
    failed since its last success) is :meth:`park`-ed; the first success (a probe's, or a
    call's made before the breaker opened) closes the breaker and hands back every parked
    member at once, so the whole backlog goes again now rather than after each caller's
    own back-off."""

    def __init__(self, redis: RedisClient, prefix: str, policy: GatePolicy) -> None:
        self.r = redis
        self.prefix = prefix
        self.policy = policy
        self._admit = redis.register_script(_ADMIT)
        self._record = redis.register_script(_RECORD)
        self._park = redis.register_script(_PARK)

    def key(self, name: str) -> str:
        return f"{self.prefix}:fs:{{{name}}}"

    def waiters_key(self, name: str) -> str:
        return f"{self.prefix}:fs:{{{name}}}:w"

    async def admit(self, name: str, cost: int = 1) -> Admission:
        p = self.policy
        kind, wait_ms, fails = await self._admit(
            keys=[self.key(name)],
            args=[
                p.probe_timeout_ms,
                p.rate_per_s,
                max(1, p.burst),
                max(1, cost),
                p.probe_interval_ms,
            ],
        )
        kind, healthy = int(kind), int(fails) == 0
        if kind == 1:
            return ALLOW if healthy else Admission(True, healthy=False)
        if kind == 2:
            return Admission(True, probe=True, healthy=False)
        reason = "open" if kind == 0 else "rate"
        return Admission(False, wait_s=int(wait_ms) / 1000, reason=reason, healthy=healthy)

    async def record(self, name: str, ok: bool) -> tuple[bool, list[str]]:
        """Reports a call's outcome: (the breaker is open now, the members parked since
        the last success when this is one)."""
        p = self.policy
        kind, waiters = await self._record(
            keys=[self.key(name), self.waiters_key(name)],
            args=["1" if ok else "0", p.failures_to_open, p.probe_interval_ms],
        )
        kind = int(kind)
        if kind == 1:
            log.info("far side %s answers again: its breaker closed", name)
        elif kind == 3:
            log.warning("far side %s keeps failing: its breaker opened", name)
        return kind in (2, 3), [w.decode() if isinstance(w, bytes) else str(w) for w in waiters]

    async def abandon(self, name: str) -> None:
        """A probe that ended without an outcome (its caller lost its lease, crashed in
        between): the next probe may go at once, not after ``probe_timeout_ms``."""
        await self.r.hset(self.key(name), "probe_until", 0)

    async def park(self, name: str, member: str) -> Parking:
        """Remembers ``member`` (a caller's name for the work waiting) to hand it back at
        the far side's next success; see :class:`Parking`."""
        wait, prober, prober_wait = await self._park(
            keys=[self.key(name), self.waiters_key(name)],
            # A named prober has two intervals to show up, else the next parker is it.
            args=[member, 2 * self.policy.probe_interval_ms, self.policy.prober_yields_after],
        )
        wait = int(wait)
        return Parking(
            parked=wait != 0,
            open=wait == -2 or wait > 0,
            probe_in_s=wait / 1000 if wait > 0 else None,
            prober=prober.decode() if isinstance(prober, bytes) else str(prober),
            prober_in_s=int(prober_wait) / 1000,
        )
