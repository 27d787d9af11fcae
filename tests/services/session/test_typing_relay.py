"""The agent's typing indicator (services/session/typing_relay.py) against a real Redis
and the Infobip simulator over loopback HTTP: sent at once on the channels with typing
events, rate-limited per conversation, dropped when late, on other channels or when the
handover is not ACTIVE — never stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from ccbridge.connector.v1 import connector_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.session.store import now_ms
from ccbridge.services.session.typing_relay import MAX_AGE_MS, MIN_INTERVAL_S, TypingRelay
from tests.services.session.test_delivery_lanes import (
    END_USER,
    SENDER,
    World,
    eventually,
    running_world,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def world(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(redis_url, redis_client, workers=False) as handle:
        yield handle


@pytest.fixture
async def relay_parts(
    world: World,
) -> AsyncIterator[tuple[InfobipClient, connector_pb2_grpc.ConnectorServiceStub]]:
    client = InfobipClient(world.infobip_url, Secret("test-key"), timeout_s=5.0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{world.connector_port}")
    try:
        yield client, connector_pb2_grpc.ConnectorServiceStub(channel)
    finally:
        await channel.close()
        await client.aclose()


Parts = tuple[InfobipClient, connector_pb2_grpc.ConnectorServiceStub]


async def test_started_and_stopped_reach_infobip_rate_limited(
    world: World, relay_parts: Parts
) -> None:
    clock = Clock()
    relay = TypingRelay(world.store, *relay_parts, clock=clock)
    cid = await world.active()
    assert await relay.relay(cid, True, now_ms())
    assert not await relay.relay(cid, True, now_ms())  # the same again at once
    assert await relay.relay(cid, False, None)  # stopping is another indicator
    clock.now += MIN_INTERVAL_S
    assert await relay.relay(cid, False, None)  # the interval is over
    await eventually("three events", lambda: len(world.infobip.conversation_events(cid)) == 3)
    sent = world.infobip.conversation_events(cid)
    assert [(e["type"], e["from"], e["to"], e["channel"]) for e in sent] == [
        ("TYPING_STARTED", SENDER, END_USER, "WHATSAPP"),
        ("TYPING_STOPPED", SENDER, END_USER, "WHATSAPP"),
        ("TYPING_STOPPED", SENDER, END_USER, "WHATSAPP"),
    ]
    await relay.aclose()


async def test_late_other_channel_or_inactive_is_dropped(world: World, relay_parts: Parts) -> None:
    relay = TypingRelay(world.store, *relay_parts)
    cid = await world.active()
    assert not await relay.relay(cid, True, now_ms() - MAX_AGE_MS - 1000)
    await world.store.transition(cid, allowed=("ACTIVE",), values={"channel": "SMS"})
    assert not await relay.relay(cid, True, None)
    await world.store.transition(cid, allowed=("ACTIVE",), new_state="CLOSING")
    assert not await relay.relay(cid, True, None)
    assert not await relay.relay("no-such-conversation", True, None)
    assert world.infobip.conversation_events(cid) == []
    await relay.aclose()


async def test_end_user_typing_goes_to_the_case_rate_limited_or_is_dropped(
    world: World, relay_parts: Parts
) -> None:
    clock = Clock()
    relay = TypingRelay(world.store, *relay_parts, clock=clock)
    cid = await world.active()
    assert await relay.to_agent(cid, True, now_ms())
    assert not await relay.to_agent(cid, True, None)  # the same again at once
    assert await relay.relay(cid, True, None)  # the other direction has its own limit
    clock.now += MIN_INTERVAL_S
    assert await relay.to_agent(cid, True, None)
    assert not await relay.to_agent(cid, False, now_ms() - MAX_AGE_MS - 1000)  # late
    await world.store.transition(cid, allowed=("ACTIVE",), new_state="CLOSING")
    assert not await relay.to_agent(cid, False, None)
    await relay.aclose()
