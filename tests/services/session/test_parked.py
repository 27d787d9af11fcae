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


async def activate(store: SessionStore, cid: str) -> None:
    ok, _ = await store.transition(cid, allowed=("OPENING",), new_state="ACTIVE")
    assert ok


async def test_linking_moves_parked_replies_in_order_before_later_ones(
    parking: SessionStore,
) -> None:
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "r2") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "r1") == (None, INGEST_DUPLICATE)  # redelivered
    assert await store.lookup_case("webhook", "CASE-1") is None
    await activate(store, "c1")
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
    await activate(store, "c1")
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


async def test_the_opening_holds_events_back_until_active(parking: SessionStore) -> None:
    """The opening links the case before its activation; events parked before and those
    arriving in between (a close too) are applied once ACTIVE, in arrival order."""
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    await store.hold_case("c1", "webhook", "CASE-1")
    await store.hold_case("c1", "webhook", "CASE-1")  # a retried opening holds once
    assert await store.lookup_case("webhook", "CASE-1") == "c1"
    assert await park(store, "CASE-1", "r2") == (None, INGEST_ACCEPTED)  # held: OPENING
    closed = await store.park_unless_linked(
        "webhook", "CASE-1", case_closed_key("e3"), None, "resolved"
    )
    assert closed == (None, INGEST_ACCEPTED)
    rec = await store.get("c1")
    assert rec is not None and rec.state == "OPENING"
    assert await outbox(store, "c1") == []
    await activate(store, "c1")
    await store.release_case("c1", "webhook", "CASE-1")
    assert [m.id for m in await outbox(store, "c1")] == ["r1", "r2"]
    rec = await store.get("c1")
    assert rec is not None and (rec.state, rec.get("closed_by")) == ("CLOSING", "CCAAS")
    assert not await store.r.exists(store.k_park("webhook", "CASE-1"))


async def test_an_event_parked_behind_the_hold_after_activation_is_moved_at_once(
    parking: SessionStore,
) -> None:
    """The opening stopped between its activation and its release: the next event moves
    the held ones and itself, in order."""
    store = parking
    assert await store.create("c1", [], {})
    await store.hold_case("c1", "webhook", "CASE-1")
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    await activate(store, "c1")
    assert await park(store, "CASE-1", "r2") == (None, INGEST_ACCEPTED)
    assert [m.id for m in await outbox(store, "c1")] == ["r1", "r2"]
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == 0
    assert await park(store, "CASE-1", "r3") == ("c1", 0)  # nothing held: the linked path


async def test_an_opening_without_parked_events_releases_its_hold(
    parking: SessionStore,
) -> None:
    store = parking
    assert await store.create("c1", [], {})
    await store.hold_case("c1", "webhook", "CASE-1")
    await activate(store, "c1")
    await store.release_case("c1", "webhook", "CASE-1")
    assert not await store.r.exists(store.k_park("webhook", "CASE-1"))
    assert await park(store, "CASE-1", "r1") == ("c1", 0)


async def test_a_case_parks_a_bounded_number_of_events(parking: SessionStore) -> None:
    store = parking
    for i in range(PARK_MAX):
        assert await park(store, "CASE-1", f"r{i}") == (None, INGEST_ACCEPTED)
    assert await park(store, "CASE-1", "one-more") == (None, INGEST_FULL)
    assert await park(store, "CASE-1", "r0") == (None, INGEST_DUPLICATE)
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == PARK_MAX
    # The opening's hold is not an event: never counted as one expiring.
    assert await store.create("c1", [], {})
    await store.hold_case("c1", "webhook", "CASE-2")
    assert await park(store, "CASE-2", "r1") == (None, INGEST_ACCEPTED)
    await store.r.delete(store.k_ext("webhook", "CASE-2"))  # as if never linked
    swept = await store.sweep_retention(now=now_ms() + PARKED_S * 1000 + 1000)
    assert swept.parked_expired == PARK_MAX + 1
    assert sorted(swept.parked_cases) == ["webhook:CASE-1", "webhook:CASE-2"]


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


async def test_the_sweep_moves_what_a_stopped_opening_left_parked(
    parking: SessionStore, redis_client: aioredis.Redis
) -> None:
    """An opening that linked the case and stopped before moving the parked events: the
    sweep leaves them while the handover is OPENING (its next opening moves them), then
    moves them instead of dropping them (and a concurrent mover stores each once)."""
    store = parking
    assert await store.create("c1", [], {})
    assert await park(store, "CASE-1", "r1") == (None, INGEST_ACCEPTED)
    await store.hold_case("c1", "webhook", "CASE-1")
    later = now_ms() + PARKED_S * 1000 + 1000
    swept = await store.sweep_retention(now=later)
    assert swept.parked_expired == 0
    assert await store.r.llen(store.k_park("webhook", "CASE-1")) == 2  # r1 and the hold
    assert await redis_client.zcard(store.k_parked) == 1
    await activate(store, "c1")
    swept, _ = await asyncio.gather(
        store.sweep_retention(now=later), store.link_case("c1", "webhook", "CASE-1")
    )
    assert swept.parked_expired == 0
    assert [m.id for m in await outbox(store, "c1")] == ["r1"]
    assert await redis_client.zcard(store.k_parked) == 0
    assert await store.retention_stats() == {}
