"""Redis does not grow without bound (issue 12 B.6): FAILED handovers and dead letters
expire after their retention, dead letters have a cap, the case → conversation index goes
with its handover, and every removal is counted once — against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import (
    Lane,
    Retention,
    SessionStore,
    agent_message_key,
    now_ms,
)

DAY_MS = 86_400_000


_OPEN: list[SessionStore] = []


def store_of(redis: aioredis.Redis, **retention: int) -> SessionStore:
    store = SessionStore(redis, prefix="rt", retention=Retention(**retention))
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().raw.aclose()


def message(cid: str, mid: str) -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        conversation_id=cid,
        direction=common_pb2.DIRECTION_INBOUND,
        content_type="TEXT",
        content_json=json.dumps({"text": "hi"}),
    )


async def failed_handover(store: SessionStore, cid: str, case: str) -> None:
    await store.create(cid, [], {})
    await store.ingest([message(cid, f"{cid}-m1")])
    await store.link_case(cid, "webhook", case)
    await store.agent_event(cid, agent_message_key(f"{cid}-a1"), b"reply")
    await store.r.hset(store.k_sending(cid), "item", "x")
    await store.r.lpush(store.k_sent_ids(cid), "ib-1")
    ok, _ = await store.transition(
        cid,
        allowed=("OPENING",),
        new_state="FAILED",
        values={"connector": "webhook", "external_id": case},
    )
    assert ok


async def dead_letters(store: SessionStore, cid: str, count: int) -> list[str]:
    """``count`` dead letters of ``cid`` (the worker's own path: lease, head, move)."""
    await store.create(cid, [], {})
    await store.ingest([message(cid, f"{cid}-m{i}") for i in range(count)])
    token, _, _, _ = await store.begin_step(Lane.INBOX, cid, 60_000)
    assert token
    for _ in range(count):
        (head,) = await store.peek(store.k_in(cid), 1)
        assert await store.dead_letter(Lane.INBOX, cid, token, head, "test", 3)
    await store.release_lease(Lane.INBOX, cid, token)
    letters, _ = await store.list_dead_letters(cid, 0, 100)
    return [letter.id for letter in letters]


async def test_failed_handovers_expire_with_their_keys(redis_client: aioredis.Redis) -> None:
    store = store_of(redis_client, failed_s=3600)
    await failed_handover(store, "old", "case-old")
    await failed_handover(store, "young", "case-young")
    await failed_handover(store, "retried", "case-retried")
    ok, _ = await store.transition("retried", allowed=("FAILED",), new_state="OPENING")
    assert ok
    await redis_client.zadd(store.k_state("FAILED"), {"retried": 0})  # a stale index entry
    # "old" last changed two hours ago (the hash's updated_at and its index score).
    two_hours_ago = now_ms() - 2 * 3600 * 1000
    await redis_client.hset(store.k_h("old"), "updated_at", two_hours_ago)
    await redis_client.zadd(store.k_state("FAILED"), {"old": two_hours_ago})

    swept = await store.sweep_retention()

    assert swept.failed_handovers == 1
    for key in (
        store.k_h("old"),
        store.k_in("old"),
        store.k_out("old"),
        store.k_seen("old"),
        store.k_seen_agent("old"),
        store.k_sending("old"),
        store.k_sent_ids("old"),
    ):
        assert not await redis_client.exists(key), key
    assert await store.lookup_case("webhook", "case-old") is None
    assert (await store.get("young")) is not None
    assert await store.lookup_case("webhook", "case-young") == "young"
    retried = await store.get("retried")
    assert retried is not None and retried.state == "OPENING"  # a retry wins
    assert await redis_client.zscore(store.k_state("FAILED"), "retried") is None
    assert await store.retention_stats() == {"failed_handovers_expired": 1}


async def test_dead_letters_expire_and_are_capped(redis_client: aioredis.Redis) -> None:
    store = store_of(redis_client, dead_letter_s=3600, dead_letter_max=3)
    ids = await dead_letters(store, "c1", 5)
    assert len(ids) == 5
    # The two oldest died two hours ago.
    for dl_id in ids[:2]:
        await redis_client.zadd(store.k_dlq, {dl_id: now_ms() - 2 * 3600 * 1000})

    swept = await store.sweep_retention()

    assert (swept.dead_letters_expired, swept.dead_letters_over_cap) == (2, 0)
    left, _ = await store.list_dead_letters("c1", 0, 100)
    assert [letter.id for letter in left] == ids[2:]
    rec = await store.get("c1")
    assert rec is not None and rec.get_int("dead_letters") == 3
    # Two more: five again, two over the cap of three; the oldest go.
    more = await dead_letters(store, "c2", 2)
    swept = await store.sweep_retention()
    assert (swept.dead_letters_expired, swept.dead_letters_over_cap) == (0, 2)
    everything, _ = await store.list_dead_letters("", 0, 100)
    assert [letter.id for letter in everything] == [ids[4], *more]
    for gone in ids[:4]:
        assert await store.get_dead_letter(gone) is None
    assert await store.retention_stats() == {"dead_letters_expired": 2, "dead_letters_over_cap": 2}


async def test_concurrent_passes_count_each_removal_once(redis_client: aioredis.Redis) -> None:
    store = store_of(redis_client, dead_letter_max=1)
    await dead_letters(store, "c1", 6)
    other = store_of(redis_client, dead_letter_max=1)
    first, second = await asyncio.gather(store.sweep_retention(), other.sweep_retention())
    assert first.dead_letters_over_cap + second.dead_letters_over_cap == 5
    assert await store.retention_stats() == {"dead_letters_over_cap": 5}
    rec = await store.get("c1")
    assert rec is not None and rec.get_int("dead_letters") == 1


async def test_listing_one_conversations_letters_is_paged_from_its_index(
    redis_client: aioredis.Redis,
) -> None:
    store = store_of(redis_client)
    mine = await dead_letters(store, "c1", 5)
    await dead_letters(store, "c2", 3)
    page, next_offset = await store.list_dead_letters("c1", 0, 2)
    assert [letter.id for letter in page] == mine[:2] and next_offset == 2
    page, next_offset = await store.list_dead_letters("c1", 4, 2)
    assert [letter.id for letter in page] == mine[4:] and next_offset is None
    # Letters of a release before the per-conversation index are found too (once).
    await redis_client.delete(store.k_dlc("c1"))
    page, _ = await store.list_dead_letters("c1", 0, 10)
    assert [letter.id for letter in page] == mine


async def test_a_closed_handovers_case_index_expires_with_it(redis_client: aioredis.Redis) -> None:
    store = store_of(redis_client)
    await store.create("c1", [], {})
    await store.link_case("c1", "webhook", "case-1")
    await store.transition(
        "c1",
        allowed=("OPENING",),
        new_state="CLOSED",
        values={"connector": "webhook", "external_id": "case-1"},
    )
    await store.finish_closed("c1")
    ttl = await redis_client.ttl(store.k_ext("webhook", "case-1"))
    assert 0 < ttl <= store.closed_retention_s
