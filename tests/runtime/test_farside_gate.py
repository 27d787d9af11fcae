"""The shared health gate of a far side (services/runtime/farside.py, FarSideGate) on a
real Redis: the breaker opens after consecutive failures across replicas, lets one probe
through per interval, closes on a success and hands back everything parked meanwhile; the
rate budget is shared by every replica."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from ccbridge.services.runtime.farside import FarSideGate, GatePolicy

POLICY = GatePolicy(
    failures_to_open=3, probe_interval_ms=200, probe_timeout_ms=5000, prober_yields_after=1
)


async def test_breaker_opens_holds_probes_once_and_hands_back_the_waiters(
    redis_client: aioredis.Redis,
) -> None:
    # Two replicas, one gate in Redis.
    a, b = FarSideGate(redis_client, "ccb", POLICY), FarSideGate(redis_client, "ccb", POLICY)
    assert (await a.admit("infobip")).allowed
    assert await a.record("infobip", False) == (False, [])
    assert await b.record("infobip", False) == (False, [])
    assert not (await a.admit("infobip")).healthy  # failures counted: a success reports
    assert await b.record("infobip", False) == (True, [])  # the third: open

    held = await a.admit("infobip")
    assert not held.allowed and held.reason == "open" and 0 < held.wait_s <= 0.2
    # The first to wait is the prober: back when the probe may go; the next waits to be
    # handed back.
    first = await a.park("infobip", "out:c1")
    assert first.parked and first.probe_in_s is not None and 0 < first.probe_in_s <= 0.2
    second = await b.park("infobip", "out:c2")
    assert second.parked and second.probe_in_s is None and not second.prober
    assert (await b.admit("other")).allowed  # another far side is not held

    await asyncio.sleep(0.25)
    probe = await b.admit("infobip")
    assert probe.allowed and probe.probe
    # One probe at a time: the others are still held while it is out.
    assert not (await a.admit("infobip")).allowed
    # The probe fails: open for another interval, nobody handed back; the prober parks
    # again and the role passes to the oldest other waiter, whom its caller schedules.
    assert await b.record("infobip", False) == (True, [])
    assert not (await a.admit("infobip")).allowed
    again = await b.park("infobip", "out:c1")
    assert again.parked and again.probe_in_s is None
    assert again.prober == "out:c2" and 0 < again.prober_in_s <= 0.2
    await asyncio.sleep(0.25)
    assert (await a.admit("infobip")).probe
    opened, waiters = await a.record("infobip", True)
    assert not opened and sorted(waiters) == ["out:c1", "out:c2"]
    # Closed: calls go, nothing is parked, and a success has nothing to report.
    assert (await a.admit("infobip")).healthy and (await b.admit("infobip")).healthy
    assert not (await a.park("infobip", "out:c3")).parked
    assert await a.record("infobip", True) == (False, [])


async def test_a_probe_whose_caller_vanished_lets_the_next_one_go(
    redis_client: aioredis.Redis,
) -> None:
    gate = FarSideGate(
        redis_client,
        "ccb",
        GatePolicy(failures_to_open=1, probe_interval_ms=50, probe_timeout_ms=300),
    )
    await gate.record("connector:rt", False)
    await asyncio.sleep(0.1)
    assert (await gate.admit("connector:rt")).probe  # its caller crashes: no report
    held = await gate.admit("connector:rt")
    assert not held.allowed and held.wait_s <= 0.05  # waiters look again each interval
    await asyncio.sleep(0.35)
    assert (await gate.admit("connector:rt")).probe
    # A probe whose caller knows it ended without an outcome frees the slot at once.
    await gate.abandon("connector:rt")
    assert (await gate.admit("connector:rt")).probe


async def test_rate_budget_is_shared_by_all_replicas(redis_client: aioredis.Redis) -> None:
    policy = GatePolicy(rate_per_s=10, burst=3)
    a, b = FarSideGate(redis_client, "ccb", policy), FarSideGate(redis_client, "ccb", policy)
    assert (await a.admit("infobip")).allowed
    assert (await b.admit("infobip", cost=2)).allowed
    held = await a.admit("infobip")
    assert not held.allowed and held.reason == "rate" and 0 < held.wait_s <= 0.1
    assert not (await a.park("infobip", "out:c1")).parked  # a spent budget parks nothing
    await asyncio.sleep(0.15)
    assert (await b.admit("infobip")).allowed
    # A batch costing more than the burst waits for a full bucket, then goes.
    await asyncio.sleep(0.35)
    assert (await a.admit("infobip", cost=50)).allowed


async def test_no_budget_by_default(redis_client: aioredis.Redis) -> None:
    gate = FarSideGate(redis_client, "ccb", GatePolicy())
    results = await asyncio.gather(*(gate.admit("infobip") for _ in range(20)))
    assert all(r.allowed and r.healthy for r in results)
