"""The Session service's own Prometheus series: handovers, openings, backlog, deliveries
and dead letters (the shared series are services/runtime/metrics.py's).

Two kinds: counters and the opening histogram are kept by this replica as things happen
(each replica counts what it did: sum them); gauges of what Redis holds (handovers by
state, backlog, dead letters) are read from Redis when the endpoint is scraped
(:meth:`SessionMetrics.refresh`, at most every :data:`REFRESH_MIN_S`), so every replica
reports the same values (aggregate them with ``max``, not ``sum``). No label holds a
conversation id or anything of a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import ALL_STATES, OPEN_STATES, Lane, SessionStore

# A scrape reads at most this many open handovers' queues (their lengths and heads, one
# pipeline): above it the backlog gauges cover the oldest handovers of each state only.
BACKLOG_SCAN_MAX = 10_000
# Scrapes closer together than this reuse the last reading.
REFRESH_MIN_S = 5.0
OPENING_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
DIRECTIONS = {"inbox": "inbound", "outbox": "outbound"}


class SessionMetrics:
    """The series, in the component's registry; the hooks cache their label children."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Read from Redis at scrape; served by a collector (a Gauge named
        # ccbridge_dead_letters could not share a registry with the counter
        # ccbridge_dead_letters_total, whose family name it is).
        self.stored = StoredGauges()
        registry.register(self.stored)
        self.openings = Counter(
            "ccbridge_openings_total",
            "Handover openings that ended: ok (ACTIVE), failed (FAILED) or rejected "
            "(routing refused it).",
            ("outcome",),
            registry=registry,
        )
        self.opening_seconds = Histogram(
            "ccbridge_opening_duration_seconds",
            "Seconds from the escalation to ACTIVE, of the openings that succeeded.",
            buckets=OPENING_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "ccbridge_deliveries_total",
            "Delivery outcomes of queued messages by direction: delivered, retried (an "
            "attempt failed; it will be retried) or dead_lettered.",
            ("direction", "outcome"),
            registry=registry,
        )
        self.retries = Counter(
            "ccbridge_delivery_retries_total",
            "Back-offs scheduled for a queue's head, by direction (failed attempts and "
            "calls a far side's open breaker held).",
            ("direction",),
            registry=registry,
        )
        self.dead_lettered = Counter(
            "ccbridge_dead_letters_total",
            "Messages moved to the dead letters, by direction.",
            ("direction",),
            registry=registry,
        )
        self._inc: dict[tuple[str, ...], Callable[[float], None]] = {}
        self._refreshed = -REFRESH_MIN_S
        for outcome in ("ok", "failed", "rejected"):
            self.openings.labels(outcome)
        for direction in DIRECTIONS.values():
            self.retries.labels(direction)
            self.dead_lettered.labels(direction)
            for outcome in ("delivered", "retried", "dead_lettered"):
                self.deliveries.labels(direction, outcome)

    def _counter(
        self, key: tuple[str, ...], make: Callable[[], Counter]
    ) -> Callable[[float], None]:
        inc = self._inc.get(key)
        if inc is None:
            inc = self._inc[key] = make().inc
        return inc

    # -- hooks -----------------------------------------------------------------------------
    def opened(self, outcome: str, created_ms: int = 0) -> None:
        """An opening ended; ``created_ms``: when the handover was created (ok only)."""
        self._counter(("o", outcome), lambda: self.openings.labels(outcome))(1)
        if outcome == "ok" and created_ms > 0:
            self.opening_seconds.observe(max(0.0, time.time() - created_ms / 1000))

    def delivered(self, lane: Lane, outcome: str, count: int = 1) -> None:
        if count:
            direction = DIRECTIONS[lane.queue]
            self._counter(
                ("d", direction, outcome), lambda: self.deliveries.labels(direction, outcome)
            )(count)

    def retry(self, lane: Lane) -> None:
        direction = DIRECTIONS[lane.queue]
        self._counter(("r", direction), lambda: self.retries.labels(direction))(1)

    def dead_letter(self, lane: Lane) -> None:
        direction = DIRECTIONS[lane.queue]
        self._counter(("x", direction), lambda: self.dead_lettered.labels(direction))(1)
        self.delivered(lane, "dead_lettered")

    # -- scrape ----------------------------------------------------------------------------
    async def refresh(self, store: SessionStore) -> None:
        """Reads the gauges from Redis: the state indexes' sizes, the dead-letter index,
        and each open handover's queue lengths and heads (one pipeline)."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH_MIN_S:
            return
        self._refreshed = now
        r = store.r
        async with r.pipeline(transaction=False) as pipe:
            for state in ALL_STATES:
                pipe.zcard(store.k_state(state))
            pipe.zcard(store.k_dlq)
            pipe.zrange(store.k_dlq, 0, 0, withscores=True)
            per_state = BACKLOG_SCAN_MAX // len(OPEN_STATES)
            for state in OPEN_STATES:
                pipe.zrange(store.k_state(state), 0, per_state - 1)
            replies = await pipe.execute()
        wall = time.time()
        counts, rest = replies[: len(ALL_STATES)], replies[len(ALL_STATES) :]
        stored = self.stored
        stored.handovers = {s: int(c) for s, c in zip(ALL_STATES, counts, strict=True)}
        stored.dead_letters = int(rest[0])
        oldest = rest[1]
        stored.dead_letter_age_s = max(0.0, wall - float(oldest[0][1]) / 1000) if oldest else 0.0
        cids = [c.decode() if isinstance(c, bytes) else str(c) for ids in rest[2:] for c in ids]
        totals = {lane: 0 for lane in (Lane.INBOX, Lane.OUTBOX)}
        oldest_s = {lane: 0.0 for lane in totals}
        if cids:
            async with r.pipeline(transaction=False) as pipe:
                for cid in cids:
                    for lane in totals:
                        key = store.k_queue(lane, cid)
                        pipe.llen(key)
                        pipe.lindex(key, 0)
                queues = await pipe.execute()
            for i in range(0, len(queues), 2):
                lane = Lane.INBOX if (i // 2) % 2 == 0 else Lane.OUTBOX
                length, head = int(queues[i]), queues[i + 1]
                totals[lane] += length
                if length and isinstance(head, bytes):
                    oldest_s[lane] = max(oldest_s[lane], _age_s(head, wall))
        stored.backlog = {DIRECTIONS[lane.queue]: total for lane, total in totals.items()}
        stored.backlog_age_s = {DIRECTIONS[lane.queue]: age for lane, age in oldest_s.items()}


class StoredGauges(Collector):
    """The gauges of what Redis holds, as the last refresh read them (none before the
    first scrape's refresh)."""

    def __init__(self) -> None:
        self.handovers: dict[str, int] = {}
        self.backlog: dict[str, int] = {}
        self.backlog_age_s: dict[str, float] = {}
        self.dead_letters: int | None = None
        self.dead_letter_age_s = 0.0

    def describe(self) -> list[Metric]:
        return []  # names are not claimed in the registry (see SessionMetrics)

    def collect(self) -> Iterable[Metric]:
        handovers = GaugeMetricFamily(
            "ccbridge_handovers",
            "Handovers by state, as Redis's state indexes hold them (read at scrape).",
            labels=("state",),
        )
        for state, count in self.handovers.items():
            handovers.add_metric((state,), count)
        backlog = GaugeMetricFamily(
            "ccbridge_backlog_messages",
            "Messages waiting in open handovers' queues: inbound (end user to the contact "
            "center) and outbound (agent to the end user). Read at scrape.",
            labels=("direction",),
        )
        for direction, count in self.backlog.items():
            backlog.add_metric((direction,), count)
        age = GaugeMetricFamily(
            "ccbridge_backlog_oldest_age_seconds",
            "Age of the oldest waiting message (since its creation), by direction; 0 when "
            "none waits. Read at scrape.",
            labels=("direction",),
        )
        for direction, seconds in self.backlog_age_s.items():
            age.add_metric((direction,), seconds)
        yield from (handovers, backlog, age)
        if self.dead_letters is not None:
            yield GaugeMetricFamily(
                "ccbridge_dead_letters",
                "Dead letters kept (replayable). Read at scrape.",
                value=self.dead_letters,
            )
            yield GaugeMetricFamily(
                "ccbridge_dead_letter_oldest_age_seconds",
                "Age of the oldest dead letter kept; 0 when there is none. Read at scrape.",
                value=self.dead_letter_age_s,
            )


def _age_s(payload: bytes, wall: float) -> float:
    """Seconds since the queued message was created (0 when it does not say)."""
    try:
        created = common_pb2.Message.FromString(payload).created_at
    except Exception:  # a queue item that is no Message: no age, never a failed scrape
        return 0.0
    if not created.seconds:
        return 0.0
    return max(0.0, wall - created.seconds - created.nanos / 1e9)
