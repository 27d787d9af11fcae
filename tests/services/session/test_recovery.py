"""Recovery (issue 13, A.2-A.3) with a running Session worker, a real Redis, a connector
double and the Infobip simulator over loopback HTTP (tests/services/session/
test_delivery_lanes.py): a dead replica's leases are taken over at once through its
liveness key, a holder whose lease or liveness ran out starts no send, a successor waits
out a predecessor's send before reading it back, and a far side's breaker holds the
backlog without burning retry budgets and hands it all back when the far side answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.lease import Liveness, holder_of
from ccbridge.services.runtime.settings import SettingsError
from ccbridge.services.session.store import Finishing, Lane, SessionStore, now_ms, outbox_item
from ccbridge.services.session.worker import LeaseLost
from ccbridge.simulators.infobip import Failure
from tests.services.session.conftest import session_settings
from tests.services.session.test_delivery_lanes import (
    END_USER,
    SENDER,
    World,
    eventually,
    running_world,
)


async def test_a_gone_replicas_lease_is_taken_over_and_its_token_refused(
    redis_client: aioredis.Redis,
) -> None:
    a = Liveness(redis_client, "ccb", ttl_ms=300, interval_ms=100)
    b = Liveness(redis_client, "ccb", ttl_ms=300, interval_ms=100)
    store_a = SessionStore(redis_client, liveness=a)
    store_b = SessionStore(redis_client, liveness=b)
    assert await a.beat() and await b.beat()
    assert await store_a.create("c1", [], {})
    await redis_client.rpush(store_a.k_out("c1"), b"head")

    token_a, *_ = await store_a.begin_step(Lane.OUTBOX, "c1", 60_000)
    assert token_a is not None and holder_of(token_a) == a.replica
    assert (await store_b.begin_step(Lane.OUTBOX, "c1", 60_000))[0] is None  # a is alive

    await asyncio.sleep(0.4)  # a stops renewing (crashed, frozen, cut off): its key expires
    assert await b.beat()
    token_b, *_ = await store_b.begin_step(Lane.OUTBOX, "c1", 60_000)
    assert token_b is not None and token_b != token_a and holder_of(token_b) == b.replica
    # The old holder's token is refused everywhere.
    (finish,) = await store_a.finish(Lane.OUTBOX, [Finishing("c1", token_a, [b"head"])])
    assert finish.popped == -1
    assert not await store_a.mark_sending("c1", token_a, "x", part=0, done=0, sent_at_ms=1)
    assert await redis_client.lrange(store_a.k_out("c1"), 0, -1) == [b"head"]
    await store_a.raw.aclose()
    await store_b.raw.aclose()


async def test_a_lease_without_a_holder_waits_out_its_ttl(redis_client: aioredis.Redis) -> None:
    """A token of a release before liveness keys names no replica: never judged dead."""
    b = Liveness(redis_client, "ccb", ttl_ms=300, interval_ms=100)
    old, new = SessionStore(redis_client), SessionStore(redis_client, liveness=b)
    assert await b.beat()
    assert await old.create("c1", [], {})
    token, *_ = await old.begin_step(Lane.INBOX, "c1", 60_000)
    assert token is not None and holder_of(token) is None
    assert (await new.begin_step(Lane.INBOX, "c1", 60_000))[0] is None
    await old.raw.aclose()
    await new.raw.aclose()


@pytest.fixture
async def guarded(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(
        redis_url,
        redis_client,
        workers=True,
        CCBRIDGE_LEASE_TTL_MS="1500",
        CCBRIDGE_LIVENESS_TTL_MS="1000",
        CCBRIDGE_LIVENESS_INTERVAL_MS="200",
        CCBRIDGE_INFOBIP_READBACK_DELAY_MS="200",
    ) as handle:
        yield handle


async def test_a_paused_holder_starts_no_send(guarded: World) -> None:
    """The process freezes (a blocking sleep stops its loop, as SIGSTOP would) for longer
    than its liveness key lives: on waking it must not start a Create Message, whatever
    its lease's remaining time says; before that, a send's timeout ends with the lease."""
    w = guarded
    worker = w.session.parts.worker
    assert worker is not None
    cid = await w.active()
    async with worker._lease(Lane.OUTBOX, cid) as (token, _):
        assert token is not None
        timeout = worker._send_timeout(token)
        assert 0 < timeout <= 1.0  # cut to the liveness key's life, not the client's 10 s
        time.sleep(1.1)  # noqa: ASYNC251  # the process is paused: no renewal, no heartbeat
        with pytest.raises(LeaseLost):
            worker._send_timeout(token)


async def test_a_successor_waits_out_a_predecessors_send_before_reading_back(
    guarded: World,
) -> None:
    """A predecessor (another replica) marked a part as being sent and vanished; Infobip
    stores that message only 0.6 s after the successor took over (the send was still in
    flight). The successor waits out the send window and finds it: sent once."""
    w = guarded
    cid = await w.active()
    message = common_pb2.Message(
        id="agent-late", content_type="TEXT", content_json='{"text": "in flight"}'
    )
    predecessor = SessionStore(w.redis)  # its token names no live replica of this one
    token, *_ = await predecessor.begin_step(Lane.OUTBOX, cid, 1500)
    assert token is not None
    item = outbox_item(message.SerializeToString())
    assert await predecessor.mark_sending(cid, token, item, part=0, done=0, sent_at_ms=now_ms())
    await predecessor.release_lease(Lane.OUTBOX, cid, token)
    await predecessor.raw.aclose()

    async def stored_late() -> None:
        await asyncio.sleep(0.6)
        body = {
            "channel": "WHATSAPP",
            "from": SENDER,
            "to": END_USER,
            "contentType": "TEXT",
            "content": {"text": "in flight"},
        }
        w.infobip.create_message(cid, body, None)

    late = asyncio.create_task(stored_late())
    assert await w.store.queue_agent_message(cid, message)
    assert w.session.parts.worker is not None
    w.session.parts.worker.wake([cid], [Lane.OUTBOX])
    await eventually("an empty outbox", lambda: _outbox_empty(w, cid))
    await late
    assert w.replies(cid) == ["in flight"]


async def _outbox_empty(w: World, cid: str) -> bool:
    return (await w.store.queue_lengths(cid))[1] == 0


@pytest.fixture
async def gated(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    # Back-offs of a minute: only the breaker's hand-back can bring the backlog back soon.
    async with running_world(
        redis_url,
        redis_client,
        workers=True,
        CCBRIDGE_FARSIDE_FAILURES_TO_OPEN="2",
        CCBRIDGE_FARSIDE_PROBE_INTERVAL_MS="200",
    ) as handle:
        yield handle


async def test_infobip_outage_costs_no_budgets_and_its_end_drains_the_backlog_at_once(
    gated: World,
) -> None:
    w = gated
    cids = [await w.active() for _ in range(6)]
    w.infobip.inject_failure(
        Failure(remaining=100_000, status=503, method="POST", path_prefix="/ccaas/1/")
    )
    for cid in cids:
        await w.reply(cid, f"to {cid}")
    gate = w.store.r
    await eventually(
        "the breaker open and the backlog parked",
        lambda: _parked(gate, len(cids)),
    )
    await asyncio.sleep(1.0)  # five probe intervals: one probe each, nobody else called
    attempts = [int(await gate.hget(w.store.k_h(cid), "out_attempts") or 0) for cid in cids]
    # Only calls made while the breaker was closed count (those in flight when it opened:
    # at most one per conversation), never the probes nor the held retries; and nothing
    # was dead-lettered.
    assert sum(attempts) <= 6, attempts
    assert not await gate.zcard(w.store.k_dlq)

    w.infobip.clear_failures()
    # Their own back-offs are a minute; the probe's success hands them all back now.
    for cid in cids:
        await eventually("the reply", lambda cid=cid: w.replies(cid) == [f"to {cid}"])
    assert await gate.hget("ccb:fs:{infobip}", "state") == b"closed"


async def _parked(r: aioredis.Redis, count: int) -> bool:
    return (
        await r.hget("ccb:fs:{infobip}", "state") == b"open"
        and await r.zcard("ccb:fs:{infobip}:w") == count
    )


async def test_ccaas_outage_through_the_relay_is_handed_back_at_once(gated: World) -> None:
    """The same for the inbox: the relay's batch calls fail (the connector answers
    UNAVAILABLE), the connector's breaker opens, and the first success after the outage
    hands every conversation back although their back-offs run for a minute."""
    w = gated
    w.connector.fail = grpc.StatusCode.UNAVAILABLE
    cids = [await w.active(f"m-{i}") for i in range(5)]
    await eventually("the connector's breaker open", lambda: _open_gate(w, "connector:webhook"))
    assert not await w.redis.zcard(w.store.k_dlq)
    w.connector.fail = None
    expected = sorted((cid, f"m-{i}") for i, cid in enumerate(cids))
    await eventually("every message at the CCaaS", lambda: sorted(w.connector.received) == expected)
    assert await w.redis.hget("ccb:fs:{connector:webhook}", "state") == b"closed"


async def _open_gate(w: World, name: str) -> bool:
    return await w.redis.hget(f"ccb:fs:{{{name}}}", "state") == b"open"


def test_liveness_must_be_renewed_at_least_twice_per_ttl(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="CCBRIDGE_LIVENESS_INTERVAL_MS"):
        session_settings(
            redis_url, CCBRIDGE_LIVENESS_TTL_MS="3000", CCBRIDGE_LIVENESS_INTERVAL_MS="2000"
        )
    settings = session_settings(redis_url)
    assert (settings.liveness_ttl_ms, settings.liveness_interval_ms) == (3000, 1000)
    assert settings.infobip_rate_per_s == settings.connector_rate_per_s == 0.0  # no budget


@pytest.fixture
async def budgeted(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(
        redis_url, redis_client, workers=True, CCBRIDGE_INFOBIP_RATE_PER_S="4"
    ) as handle:
        yield handle


async def test_the_infobip_rate_budget_holds_sends_without_costing_attempts(
    budgeted: World,
) -> None:
    """Four Create Messages a second for all replicas: twelve replies over three
    conversations all go, in order, none counted as a failed attempt (the back-offs here
    are a minute: a held send is retried when the budget allows, not after a back-off)."""
    w = budgeted
    cids = [await w.active() for _ in range(3)]
    for i in range(4):
        for cid in cids:
            await w.reply(cid, f"{i} to {cid}")
    for cid in cids:
        expected = [f"{i} to {cid}" for i in range(4)]
        await eventually("the replies", lambda cid=cid, e=expected: w.replies(cid) == e)
        assert not await w.redis.hget(w.store.k_h(cid), "out_attempts")
    # The budget did hold some (a held send records only when to look again).
    assert [await w.redis.hget(w.store.k_h(cid), "out_next_at") for cid in cids] != [None] * 3
