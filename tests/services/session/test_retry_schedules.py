"""A message stored by an attempt that failed before its schedule write (Redis went away
between the two; the sender got 503) is scheduled by the sender's retry, which finds it a
duplicate: found by the fault matrix (tests/faults, redis-sigkill-everysec), where such an
agent reply sat unscheduled in the outbox. Real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import (
    INGEST_DUPLICATE,
    Lane,
    SessionStore,
    agent_message_key,
)


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[SessionStore]:
    store = SessionStore(redis_client)
    yield store
    await store.raw.aclose()


async def test_a_retried_agent_message_is_scheduled(
    store: SessionStore, redis_client: aioredis.Redis
) -> None:
    assert await store.create("c1", [], {})
    message = common_pb2.Message(id="m1", conversation_id="c1").SerializeToString()
    assert await store.agent_event("c1", agent_message_key("m1"), message) == 1
    await redis_client.zrem(store.k_due(Lane.OUTBOX, "c1"), "c1")  # its schedule write was lost
    assert await store.agent_event("c1", agent_message_key("m1"), message) == 2
    assert await redis_client.zscore(store.k_due(Lane.OUTBOX, "c1"), "c1") is not None
    assert await redis_client.llen(store.k_out("c1")) == 1  # stored once


async def test_a_retried_end_user_message_is_scheduled(
    redis_client: aioredis.Redis,
) -> None:
    first, retry = SessionStore(redis_client), SessionStore(redis_client)  # two replicas
    try:
        assert await first.create("c1", [], {})
        message = common_pb2.Message(id="u1", conversation_id="c1", channel="WHATSAPP")
        await first.ingest([message])
        await redis_client.zrem(first.k_due(Lane.INBOX, "c1"), "c1")  # its schedule write was lost
        assert await retry.ingest([message]) == [INGEST_DUPLICATE]
        assert await redis_client.zscore(first.k_due(Lane.INBOX, "c1"), "c1") is not None
        assert await redis_client.llen(first.k_in("c1")) == 1
    finally:
        await first.raw.aclose()
        await retry.raw.aclose()
