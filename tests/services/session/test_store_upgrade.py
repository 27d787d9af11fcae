"""Session's store next to pods of the release before the delivery lanes (d3ac8b9), whose
Redis layout is written here literally: one lease ``ccb:lease:{cid}`` taken with SET NX
for the whole conversation, one schedule ``ccb:due`` (docs/deploy.md, "Upgrades")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.lease import GUARD
from ccbridge.services.session.store import Lane, SessionStore, now_ms


async def _active(store: SessionStore, cid: str, *ids: str) -> None:
    assert await store.create(cid, [], {})
    ok, _ = await store.transition(
        cid,
        allowed=("OPENING",),
        new_state="ACTIVE",
        values={"connector": "webhook", "external_id": f"CASE-{cid}"},
    )
    assert ok
    await store.ingest([common_pb2.Message(id=m, conversation_id=cid) for m in ids])


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[SessionStore]:
    store = SessionStore(redis_client)
    yield store
    await store.raw.aclose()


async def test_an_old_pods_lease_keeps_both_lanes_out(store: SessionStore) -> None:
    redis_client = store.r
    await _active(store, "c1", "m1")
    old_token = uuid.uuid4().hex  # what the old release's step or relay holds
    assert await redis_client.set(store.k_lease_v1("c1"), old_token, nx=True, px=60_000)

    for lane in (Lane.INBOX, Lane.OUTBOX):
        token, rec, _, _ = await store.begin_step(lane, "c1", 60_000)
        assert token is None and rec is not None
    assert await store.claim(["c1"], 60_000, 32) == [False]
    assert not await redis_client.exists(store.k_lease(Lane.INBOX, "c1"))

    await redis_client.delete(store.k_lease_v1("c1"))  # the old pod let go
    assert (await store.claim(["c1"], 60_000, 32))[0]


async def test_a_lane_keeps_old_pods_out_while_held(store: SessionStore) -> None:
    redis_client = store.r
    await _active(store, "c1", "m1")
    token, _, _, _ = await store.begin_step(Lane.OUTBOX, "c1", 60_000)
    assert token is not None
    legacy = store.k_lease_v1("c1")
    assert await redis_client.get(legacy) == GUARD.encode()
    assert await redis_client.pttl(legacy) >= await redis_client.pttl(
        store.k_lease(Lane.OUTBOX, "c1")
    )
    # The old release's step and relay take the lease with SET NX: refused.
    assert not await redis_client.set(legacy, uuid.uuid4().hex, nx=True, px=60_000)
    # The other lane is still free for new pods, and renewing keeps the guard ahead.
    inbox, _, _, _ = await store.begin_step(Lane.INBOX, "c1", 90_000)
    assert inbox is not None
    assert await redis_client.pttl(legacy) > 60_000
    assert await store.renew_lease(Lane.OUTBOX, "c1", token, 120_000)
    assert await redis_client.pttl(legacy) > 90_000


async def test_the_old_schedule_is_adopted_into_both_lanes(store: SessionStore) -> None:
    redis_client = store.r
    await _active(store, "due-now", "m1")
    await _active(store, "backing-off", "m1")
    await redis_client.delete(*(store.k_due_shard(Lane.INBOX, i) for i in range(store.due_shards)))
    later = now_ms() + 600_000
    await redis_client.zadd(store.k_due_v1, {"due-now": now_ms() - 5, "backing-off": later})

    due, adopted = await store.due(Lane.INBOX, 100)
    assert due == ["due-now"] and adopted == ["due-now"]
    for lane in (Lane.INBOX, Lane.OUTBOX):
        assert await store.scheduled(lane, "due-now")
        assert not await store.scheduled(lane, "backing-off")
    # An old pod's back-off is kept until it is due.
    assert await redis_client.zrange(store.k_due_v1, 0, -1, withscores=True) == [
        (b"backing-off", float(later))
    ]
    assert await store.due(Lane.OUTBOX, 100) == (["due-now"], [])


async def test_the_unsharded_schedules_are_adopted_into_their_shards(store: SessionStore) -> None:
    """Pods of the release before the schedule shards write ``ccb:due:in`` /
    ``ccb:due:out`` during a rolling upgrade: what is due there moves into the shards
    (that lane only), what backs off stays until it is due."""
    redis_client = store.r
    later = now_ms() + 600_000
    await redis_client.zadd(store.k_due_unsharded(Lane.INBOX), {"in-now": 1, "in-later": later})
    await redis_client.zadd(store.k_due_unsharded(Lane.OUTBOX), {"out-now": 1})

    assert await store.due(Lane.INBOX, 100) == (["in-now"], [])
    assert await store.scheduled(Lane.INBOX, "in-now")
    assert not await store.scheduled(Lane.OUTBOX, "in-now")
    assert await redis_client.zrange(store.k_due_unsharded(Lane.INBOX), 0, -1) == [b"in-later"]
    assert await store.due(Lane.OUTBOX, 100) == (["out-now"], [])
    assert await store.scheduled(Lane.OUTBOX, "out-now")
    assert not await redis_client.exists(store.k_due_unsharded(Lane.OUTBOX))
    # Moved, not copied: the next pass reads each once, from its shard.
    assert await store.due(Lane.INBOX, 100) == (["in-now"], [])


async def test_entries_of_another_shard_count_move_to_their_shard(
    redis_client: aioredis.Redis,
) -> None:
    """CCBRIDGE_DUE_SHARDS changed: an entry read from a shard that is no longer its
    own is due now and moves to its own (unscheduling it there then works)."""
    before = SessionStore(redis_client, due_shards=3)
    after = SessionStore(redis_client, due_shards=2)
    try:
        cids = [f"c{i}" for i in range(12)]
        await before.schedule_now(Lane.OUTBOX, cids)
        moved = [c for c in cids if before.due_shard(c) != after.due_shard(c)]
        stranded = [c for c in cids if before.due_shard(c) == 2]  # no shard 2 any more
        assert moved and stranded
        due, _ = await after.due(Lane.OUTBOX, 100)
        assert sorted(due) == sorted(c for c in cids if c not in stranded)
        for cid in due:
            assert await redis_client.zscore(after.k_due(Lane.OUTBOX, cid), cid) is not None
            await after.unschedule(Lane.OUTBOX, cid)
        assert await after.due(Lane.OUTBOX, 100) == ([], [])
    finally:
        await before.raw.aclose()
        await after.raw.aclose()


async def test_the_reconcilers_progress_of_older_releases_is_read(store: SessionStore) -> None:
    """Older releases kept the reconciler's marks in ``ccb:reconcile``: read until the
    new hash (in its lease's slot) holds marks of its own."""
    redis_client = store.r
    await redis_client.hset(store.k_reconcile_v1, mapping={"closed_mark": 5, "backfill_cursor": 7})
    assert await store.reconcile_progress() == (5, 7)
    token = uuid.uuid4().hex
    assert await redis_client.set(store.k_reconcile_lease, token, px=60_000)
    assert await store.save_reconcile_progress(token, "closed_mark", 9)
    assert await store.reconcile_progress() == (9, 0)
