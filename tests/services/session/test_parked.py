"""Agent events of a case the bridge has not linked yet (its ``case.open`` answer was lost,
the opening's retry links it later) are parked, not dropped: linking moves them into the
conversation in arrival order, deduped; those of a case never linked expire after
``parked_s``, counted. Found by the fault matrix (tests/faults/test_open_race.py). Real
Redis (and Redis Cluster: test_cluster.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import (
    INGEST_ACCEPTED,
    INGEST_DUPLICATE,
    INGEST_FULL,
    PARK_MAX,
    Lane,
    Retention,
    SessionStore,
    agent_message_key,
    case_closed_key,
    now_ms,
)

PARKED_S = 60


@pytest.fixture
async def parking(redis_client: aioredis.Redis) -> AsyncIterator[SessionStore]:
    store = SessionStore(redis_client, prefix="pk", retention=Retention(parked_s=PARKED_S))
    yield store
    await store.raw.aclose()


def reply(mid: str, text: str = "hi") -> bytes:
    """An agent message as the servicer parks it: no conversation id yet."""
    return common_pb2.Message(
        id=mid, direction=common_pb2.DIRECTION_OUTBOUND, content_json=text
    ).SerializeToString()


async def park(store: SessionStore, case: str, mid: str) -> tuple[str | None, int]:
    return await store.park_unless_linked("webhook", case, agent_message_key(mid), reply(mid))


async def outbox(store: SessionStore, cid: str) -> list[common_pb2.Message]:
    raw = await store.r.lrange(store.k_out(cid), 0, -1)
    return [common_pb2.Message.FromString(item) for item in raw]


async def test_linking_moves_parked_replies_in_order_before_later_ones(
    parking: SessionStore,
) -> None:
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "r2") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "r1") == (None, INGEST_DUPLICATE)  # redelivered
    assert await store.lookup_case("webhook", "CASE-1") is None
    await store.link_case("c1", "webhook", "CASE-1")
    assert await store.lookup_case("webhook", "CASE-1") == "c1"
    # A later reply takes the linked path, after the parked ones.
    assert await park(store, "CASE-1", "r3") == ("c1", 0)
    assert await store.agent_event("c1", agent_message_key("r3"), reply("r3")) == 1
    # A parked reply redelivered after the link is a duplicate, as for a linked case.
    assert await store.agent_event("c1", agent_message_key("r2"), reply("r2")) == 2
    got = await outbox(store, "c1")
    assert [m.id for m in got] == ["r1", "r2", "r3"]
    assert {m.conversation_id for m in got[:2]} == {"c1"}  # set when moved
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == 0
    assert await store.r.zscore(store.k_due(Lane.OUTBOX, "c1"), "c1") is not None
    # Linking again (the opening retried after a crash) moves nothing twice.
    await store.link_case("c1", "webhook", "CASE-1")
    assert [m.id for m in await outbox(store, "c1")] == ["r1", "r2", "r3"]


async def test_a_parked_close_is_applied_on_linking(parking: SessionStore) -> None:
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    closed = await store.park_unless_linked(
        "webhook", "CASE-1", case_closed_key("e2"), None, "resolved\nby Anna"
    )
    assert closed == (None, INGEST_ACCEPTED)
    await store.link_case("c1", "webhook", "CASE-1")
    rec = await store.get("c1")
    assert rec is not None
    assert (rec.state, rec.get("closed_by"), rec.get("close_reason")) == (
        "CLOSING",
        "CCAAS",
        "resolved by Anna",
    )
    assert [m.id for m in await outbox(store, "c1")] == ["r1"]  # delivered before the close
    assert await store.r.zscore(store.k_state("CLOSING"), "c1") is not None
    assert await store.r.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is not None


async def test_an_event_parked_while_linking_follows_the_parked_ones(
    parking: SessionStore,
) -> None:
    """The link read the parked events; one parked after that (the park is not empty
    yet) is moved behind them, never ahead."""
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    # The link's first step alone (its mover has not run yet).
    await store._link(
        keys=[store.k_ext("webhook", "CASE-1"), store.k_park("webhook", "CASE-1")], args=["c1"]
    )
    assert await park(store, "CASE-1", "r2") == (None, INGEST_ACCEPTED)
    assert [m.id for m in await outbox(store, "c1")] == ["r1", "r2"]
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == 0


async def test_a_case_parks_a_bounded_number_of_events(parking: SessionStore) -> None:
    store = parking
    for i in range(PARK_MAX):
        assert await park(store, "CASE-1", f"r{i}") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "one-more") == (None, INGEST_FULL)
    assert await park(store, "CASE-1", "r0") == (None, INGEST_DUPLICATE)
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == PARK_MAX


async def test_events_of_a_case_never_linked_expire_counted(
    parking: SessionStore, redis_client: aioredis.Redis
) -> None:
    store = parking
    assert await park(store, "OLD", "r1") == (None, INGEST_ACCEPTED)
    assert await park(store, "OLD", "r2") == (None, INGEST_ACCEPTED)
    assert await park(store, "NEW", "r1") == (None, INGEST_ACCEPTED)
    # Within the retention: kept.
    swept = await store.sweep_retention()
    assert swept.parked_expired == 0
    assert await store.retention_stats() == {}
    later = now_ms() + PARKED_S * 1000 + 1000
    await redis_client.zadd(store.k_parked, {"webhook:NEW": later})  # parked again since
    swept = await store.sweep_retention(now=later)
    assert (swept.parked_expired, swept.parked_cases) == (2, ["webhook:OLD"])
    assert await store.retention_stats() == {"parked_expired": 2}
    assert not await redis_client.exists(store.k_park("webhook", "OLD"))
    assert await redis_client.zrange(store.k_parked, 0, -1) == [b"webhook:NEW"]
    # Another replica's pass counts nothing again.
    assert (await store.sweep_retention(now=later)).parked_expired == 0
    assert await store.retention_stats() == {"parked_expired": 2}


async def test_the_sweep_moves_what_a_stopped_link_left_parked(
    parking: SessionStore, redis_client: aioredis.Redis
) -> None:
    """A replica that linked the case and stopped before moving the parked events: the
    sweep moves them instead of dropping them (and a concurrent mover stores each once)."""
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    await store._link(
        keys=[store.k_ext("webhook", "CASE-1"), store.k_park("webhook", "CASE-1")], args=["c1"]
    )
    later = now_ms() + PARKED_S * 1000 + 1000
    swept, _ = await asyncio.gather(
        store.sweep_retention(now=later), store.link_case("c1", "webhook", "CASE-1")
    )
    assert swept.parked_expired == 0
    assert [m.id for m in await outbox(store, "c1")] == ["r1"]
    assert await redis_client.zcard(store.k_parked) == 0
    assert await store.retention_stats() == {}
