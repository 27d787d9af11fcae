"""Session's own series (services/session/metrics.py) against a real Redis: the gauges a
scrape reads (handovers by state, backlog and its oldest age, dead letters) and the
counters the delivery paths bump."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session import metrics as session_metrics
from ccbridge.services.session.metrics import SessionMetrics
from ccbridge.services.session.store import Lane, SessionStore, now_ms


def message(cid: str, mid: str, age_s: float) -> common_pb2.Message:
    created = Timestamp()
    created.FromNanoseconds(int((time.time() - age_s) * 1e9))
    return common_pb2.Message(
        id=mid,
        conversation_id=cid,
        direction=common_pb2.DIRECTION_INBOUND,
        content_type="TEXT",
        content_json=json.dumps({"text": "hi"}),
        created_at=created,
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_a_scrape_reads_states_backlog_and_dead_letters(
    redis_client: aioredis.Redis,
) -> None:
    registry = CollectorRegistry(auto_describe=True)
    metrics = SessionMetrics(registry)
    store = SessionStore(redis_client, prefix="mt", on_dead_letter=metrics.dead_letter)
    try:
        # Nothing read before the first scrape: no made-up zeros.
        assert value(registry, "ccbridge_dead_letters") is None
        await store.create("c1", [], {})
        await store.create("c2", [], {})
        await store.ingest([message("c1", "m1", 120), message("c1", "m2", 5)])
        await store.ingest([message("c2", "m3", 30)])
        ok, _ = await store.transition("c2", allowed=("OPENING",), new_state="ACTIVE")
        assert ok
        await store.r.rpush(store.k_out("c2"), message("c2", "a1", 60).SerializeToString())
        # One dead letter, by the worker's own path, that died ten minutes ago.
        token, _, _, _ = await store.begin_step(Lane.INBOX, "c1", 60_000)
        assert token
        (head,) = await store.peek(store.k_in("c1"), 1)
        assert await store.dead_letter(Lane.INBOX, "c1", token, head, "test", 3)
        (dl_id,) = await store.r.zrange(store.k_dlq, 0, 0)
        await store.r.zadd(store.k_dlq, {dl_id: now_ms() - 600_000})

        await metrics.refresh(store)

        assert value(registry, "ccbridge_handovers", state="OPENING") == 1
        assert value(registry, "ccbridge_handovers", state="ACTIVE") == 1
        assert value(registry, "ccbridge_handovers", state="CLOSED") == 0
        assert value(registry, "ccbridge_backlog_messages", direction="inbound") == 2
        assert value(registry, "ccbridge_backlog_messages", direction="outbound") == 1
        # The oldest head: c2's (30 s; c1's 120 s message is dead-lettered, its head is 5 s).
        inbound_age = value(registry, "ccbridge_backlog_oldest_age_seconds", direction="inbound")
        assert inbound_age is not None and 29 <= inbound_age < 60
        outbound_age = value(registry, "ccbridge_backlog_oldest_age_seconds", direction="outbound")
        assert outbound_age is not None and 59 <= outbound_age < 120
        assert value(registry, "ccbridge_dead_letters") == 1
        dead_age = value(registry, "ccbridge_dead_letter_oldest_age_seconds")
        assert dead_age is not None and 599 <= dead_age < 700
        assert value(registry, "ccbridge_dead_letters_total", direction="inbound") == 1
        assert value(registry, "ccbridge_dead_letters_total", direction="outbound") == 0
        assert (
            value(
                registry, "ccbridge_deliveries_total", direction="inbound", outcome="dead_lettered"
            )
            == 1
        )
    finally:
        await store.raw.aclose()


async def test_scrapes_close_together_reuse_the_last_reading(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry(auto_describe=True)
    metrics = SessionMetrics(registry)
    store = SessionStore(redis_client, prefix="mt")
    try:
        await metrics.refresh(store)
        assert value(registry, "ccbridge_handovers", state="OPENING") == 0
        await store.create("c1", [], {})
        await metrics.refresh(store)  # within REFRESH_MIN_S: not read again
        assert value(registry, "ccbridge_handovers", state="OPENING") == 0
        monkeypatch.setattr(session_metrics, "REFRESH_MIN_S", 0.0)
        await metrics.refresh(store)
        assert value(registry, "ccbridge_handovers", state="OPENING") == 1
    finally:
        await store.raw.aclose()


def test_openings_and_deliveries_are_counted_by_outcome() -> None:
    registry = CollectorRegistry(auto_describe=True)
    metrics = SessionMetrics(registry)
    metrics.opened("ok", now_ms() - 3000)
    metrics.opened("failed")
    metrics.delivered(Lane.OUTBOX, "delivered", 3)
    metrics.delivered(Lane.INBOX, "retried")
    metrics.retry(Lane.INBOX)
    assert value(registry, "ccbridge_openings_total", outcome="ok") == 1
    assert value(registry, "ccbridge_openings_total", outcome="failed") == 1
    assert value(registry, "ccbridge_openings_total", outcome="rejected") == 0
    assert value(registry, "ccbridge_opening_duration_seconds_count") == 1
    assert (value(registry, "ccbridge_opening_duration_seconds_sum") or 0) >= 3
    outbound = {"direction": "outbound", "outcome": "delivered"}
    assert value(registry, "ccbridge_deliveries_total", **outbound) == 3
    assert value(registry, "ccbridge_deliveries_total", direction="inbound", outcome="retried") == 1
    assert value(registry, "ccbridge_delivery_retries_total", direction="inbound") == 1
