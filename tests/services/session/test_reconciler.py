"""The reconciler (services/session/reconciler.py) against the real Infobip simulator on
loopback, every request it gets recorded: Infobip calls per pass, the lease, backfill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.session.reconciler import Reconciler
from ccbridge.services.session.store import INGEST_ACCEPTED, Lane, SessionStore
from ccbridge.simulators.infobip.app import create_app
from ccbridge.simulators.infobip.state import Failure, InfobipSimState
from tests.services.session.conftest import session_settings
from tests.simulators.ccaas.support import serve_app
from tests.support.far_side import Recorder

KEY = "reconciler-test-key"


@dataclass
class Far:
    sim: InfobipSimState
    recorder: Recorder
    infobip: InfobipClient

    def calls(self, method: str, path: str) -> int:
        return sum(1 for r in self.recorder.requests if r.method == method and r.path == path)


@pytest.fixture
async def far() -> AsyncIterator[Far]:
    sim = InfobipSimState(seed=11)
    recorder = Recorder(create_app(sim, api_key=KEY))
    async with serve_app(recorder) as url:
        client = InfobipClient(url, Secret(KEY), timeout_s=30)
        try:
            yield Far(sim, recorder, client)
        finally:
            await client.aclose()
            await sim.aclose()


Make = Callable[..., tuple[Reconciler, SessionStore, list[str]]]


@pytest.fixture
async def make(redis_client: aioredis.Redis, redis_url: str, far: Far) -> AsyncIterator[Make]:
    """Builds a replica's reconciler (settings from ``env``) over the test Redis."""
    stores: list[SessionStore] = []

    def build(**env: str) -> tuple[Reconciler, SessionStore, list[str]]:
        settings = session_settings(redis_url, **env)
        store = SessionStore(redis_client)
        stores.append(store)
        woken: list[str] = []
        wake = lambda cids, lanes: woken.extend(cids)  # noqa: E731
        return Reconciler(store, far.infobip, settings, wake), store, woken

    try:
        yield build
    finally:
        for store in stores:
            await store.raw.aclose()


async def seed_active(store: SessionStore, cids: list[str]) -> None:
    """ACTIVE handovers through the store API (the opening itself is not under test)."""

    async def one(index: int, cid: str) -> None:
        assert await store.create(cid, [], {})
        ok, _ = await store.transition(
            cid,
            allowed=("OPENING",),
            new_state="ACTIVE",
            values={"connector": "webhook", "external_id": f"case-{index}"},
        )
        assert ok

    for start in range(0, len(cids), 50):
        await asyncio.gather(*(one(start + i, c) for i, c in enumerate(cids[start : start + 50])))


async def test_a_pass_over_10000_active_handovers_costs_1_plus_closed_per_999_calls(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    ours = [far.sim.create_conversation().id for _ in range(10_000)]
    # Closed conversations of the account that are not ours count too.
    for _ in range(600):
        far.sim.create_conversation(status="CLOSED")
    rec, store, woken = make(CCBRIDGE_RECONCILE_BACKFILL_PER_PASS="0")
    await seed_active(store, ours)
    missed = ours[::7]  # closed at Infobip without a webhook
    for cid in missed:
        far.sim.close_from_infobip(cid)
    closed = len(missed) + 600

    stats = await rec.run_once()

    assert stats is not None
    list_calls = far.calls("GET", "/ccaas/1/conversations")
    assert list_calls == 1 + closed // 999 == 3
    assert len(far.recorder.requests) == list_calls  # no call per handover
    assert stats["infobip_calls"] == list_calls
    assert stats["closed"] == len(missed)
    states = await store.states(ours)
    assert {c for c, s in zip(ours, states, strict=True) if s == "CLOSING"} == set(missed)
    assert states.count("ACTIVE") == len(ours) - len(missed)
    assert set(missed) <= set(woken)
    for query in (r.query for r in far.recorder.requests):
        assert "status=CLOSED" in query and "updatedAfter=" in query and "limit=999" in query
        assert "orderBy=updatedAt:asc" in query


async def test_closes_found_by_a_later_pass_and_an_opening_handover_too(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    active, opening = far.sim.create_conversation().id, far.sim.create_conversation().id
    rec, store, _ = make(CCBRIDGE_RECONCILE_BACKFILL_PER_PASS="0")
    await seed_active(store, [active])
    assert await store.create(opening, [], {})
    first = await rec.run_once()
    assert first is not None and first["closed"] == 0
    far.sim.close_from_infobip(active)
    far.sim.close_from_infobip(opening)
    await rec.lease.release()  # as if the interval had passed on another replica
    second = await rec.run_once()
    assert second is not None and second["closed"] == 2
    for cid in (active, opening):
        record = await store.get(cid)
        assert record is not None and record.state == "CLOSING"
        assert record.get("closed_by") == "INFOBIP"


async def test_one_replica_runs_the_pass_and_a_stale_token_cannot_write(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    far.sim.create_conversation(status="CLOSED")
    one, store, _ = make()
    other, _, _ = make()

    results = await asyncio.gather(one.run_once(), other.run_once())

    assert sum(r is not None for r in results) == 1
    assert far.calls("GET", "/ccaas/1/conversations") == 1
    # The lease outlives the pass: the other replica skips until the interval is over.
    loser = other if results[0] is not None else one
    assert await loser.run_once() is None
    assert far.calls("GET", "/ccaas/1/conversations") == 1
    # A holder whose lease expired keeps its old token; its writes are refused.
    winner = one if loser is other else other
    stale = winner.lease.token
    assert stale is not None
    await redis_client.delete(store.k_reconcile_lease)
    assert await loser.lease.acquire() is not None
    assert not await store.save_reconcile_progress(stale, "closed_mark", 1)
    assert await store.save_reconcile_progress(loser.lease.token or "", "closed_mark", 2)


async def test_backfill_ingests_only_what_the_webhook_missed_and_once(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    cid = far.sim.create_conversation(history=4).id
    rec, store, woken = make()
    await seed_active(store, [cid])
    # The opening remembered the transcript's inbound messages (the case has them).
    history = far.sim.snapshot(cid)
    assert history["messageCount"] == 4
    transcript = await far.infobip.get_messages(cid)
    await store.remember_transcript(
        cid, [m["id"] for m in transcript["messages"] if m["direction"] == "INBOUND"]
    )
    webhook, _ = far.sim.end_user_message(cid, "TEXT", {"text": "came by webhook"})
    missed, _ = far.sim.end_user_message(cid, "TEXT", {"text": "webhook lost"})
    # The first one reached Session through the webhook (same ingest, same ids).
    via_webhook = common_pb2.Message(
        id=webhook["id"], conversation_id=cid, direction=common_pb2.DIRECTION_INBOUND
    )
    assert await store.ingest([via_webhook]) == [INGEST_ACCEPTED]

    stats = await rec.run_once()

    assert stats is not None and stats["backfilled"] == 1
    queued = [
        common_pb2.Message.FromString(raw)
        for raw in await redis_client.lrange(store.k_queue(Lane.INBOX, cid), 0, -1)
    ]
    assert [m.id for m in queued] == [webhook["id"], missed["id"]]
    assert queued[1].content_json == '{"text":"webhook lost"}'
    assert cid in woken
    messages_path = f"/ccaas/1/conversations/{cid}/messages"
    (read,) = [
        r
        for r in far.recorder.requests
        if r.path == messages_path and "direction=INBOUND" in r.query
    ]
    assert "createdAfter=" in read.query and "orderBy=createdAt:asc" in read.query
    record = await store.get(cid)
    assert record is not None and record.get_int("backfill_at") > 0

    # The next pass reads again from the newest message seen: nothing new, nothing twice.
    await rec.lease.release()
    again = await rec.run_once()
    assert again is not None and again["backfilled"] == 0
    assert await redis_client.llen(store.k_queue(Lane.INBOX, cid)) == 2


async def test_backfill_takes_active_handovers_in_turn_within_its_budget(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    cids = [far.sim.create_conversation().id for _ in range(5)]
    rec, store, _ = make(CCBRIDGE_RECONCILE_BACKFILL_PER_PASS="2")
    await seed_active(store, cids)
    read: list[str] = []
    for _ in range(3):
        before = len(far.recorder.requests)
        stats = await rec.run_once()
        assert stats is not None
        await rec.lease.release()
        got = [
            r.path.split("/")[4]
            for r in far.recorder.requests[before:]
            if r.path.endswith("/messages")
        ]
        assert len(got) <= 2
        read += got
    assert sorted(read) == sorted(cids)  # 2 + 2 + 1: every one once, then from the top


async def test_a_failed_listing_keeps_the_mark_so_the_next_pass_lists_the_window_again(
    redis_client: aioredis.Redis, far: Far, make: Make
) -> None:
    cid = far.sim.create_conversation().id
    rec, store, _ = make(CCBRIDGE_RECONCILE_BACKFILL_PER_PASS="0")
    await seed_active(store, [cid])
    far.sim.close_from_infobip(cid)
    far.sim.inject_failure(
        Failure(remaining=1, status=403, method="GET", path_prefix="/ccaas/1/conversations")
    )
    failed = await rec.run_once()
    assert failed is not None and failed["infobip_failures"] == 1 and failed["closed"] == 0
    assert await store.reconcile_progress() == (None, 0)
    await rec.lease.release()
    again = await rec.run_once()
    assert again is not None and again["closed"] == 1
    mark, _ = await store.reconcile_progress()
    assert mark is not None
