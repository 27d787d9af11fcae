"""SessionStore paths tuned for the benchmark: ingest without SCRIPT EXISTS (and its
NOSCRIPT recovery), compact handover hashes, inbound-only transcript ids, and the
one-round-trip step reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import (
    INGEST_ACCEPTED,
    INGEST_DUPLICATE,
    INGEST_IGNORED,
    Lane,
    SessionStore,
)


def _message(mid: str, cid: str) -> common_pb2.Message:
    message = common_pb2.Message(id=mid, conversation_id=cid, channel="WHATSAPP", to="4470")
    setattr(message, "from", "3859")
    return message


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[SessionStore]:
    store = SessionStore(redis_client)
    yield store
    await store.raw.aclose()


async def test_ingest_outcomes_survive_a_flushed_script_cache(
    store: SessionStore, redis_client: aioredis.Redis
) -> None:
    assert await store.create("c1", [], {})
    await redis_client.script_flush()  # e.g. Redis restarted without its script cache
    outcomes = await store.ingest(
        [_message("m1", "c1"), _message("m1", "c1"), _message("m2", "bot"), _message("m3", "c1")]
    )
    assert outcomes == [INGEST_ACCEPTED, INGEST_DUPLICATE, INGEST_IGNORED, INGEST_ACCEPTED]
    stored = [common_pb2.Message.FromString(p).id for p in await store.peek(store.k_in("c1"), 10)]
    assert stored == ["m1", "m3"]  # in order, once
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is not None


async def test_handover_hash_stays_a_listpack(
    store: SessionStore, redis_client: aioredis.Redis
) -> None:
    assert await store.create("c1", [], {})
    ok, _ = await store.transition(
        "c1",
        allowed=("OPENING",),
        new_state="ACTIVE",
        values={"failure_reason": "", "connector": "webhook", "external_id": "CASE-1"},
    )
    assert ok
    raw = await redis_client.hgetall(store.k_h("c1"))
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    assert "tags" not in fields and "metadata" not in fields  # empty: not stored
    assert "failure_reason" not in fields  # cleared: deleted, reads as ""
    assert fields["history"].startswith("OPENING@0,ACTIVE@")
    assert await redis_client.object("encoding", store.k_h("c1")) == b"listpack"
    rec = await store.get("c1")
    assert rec is not None and rec.tags == [] and rec.metadata == {}
    assert rec.get("failure_reason") == ""


async def test_transcript_ids_and_step_reads(
    store: SessionStore, redis_client: aioredis.Redis
) -> None:
    assert await store.create("c1", ["vip"], {"lang": "en"})
    assert (await store.transition("c1", allowed=("OPENING",), new_state="ACTIVE"))[0]
    await store.remember_transcript("c1", ["t1", "t2"])
    assert await store.in_transcript_many("c1", ["t2", "x", "t1"]) == [True, False, True]
    assert await store.in_transcript("c1", "t1") and not await store.in_transcript("c1", "x")
    await store.ingest([_message("m1", "c1")])

    token, rec, inbox, outbox = await store.begin_step(Lane.INBOX, "c1", 5000)
    assert token is not None and rec is not None and rec.tags == ["vip"]
    assert (inbox, outbox) == (1, 0)
    again, _, _, _ = await store.begin_step(Lane.INBOX, "c1", 5000)
    assert again is None  # the lease is held
    assert await store.snapshot("c1") == (rec, 1, 0)

    # Work still queued (ACTIVE: the inbox lane has work while its queue has): unscheduling
    # puts it straight back.
    assert await store.unschedule_if_idle(Lane.INBOX, "c1") is True
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is not None
    await redis_client.delete(store.k_in("c1"))
    assert await store.unschedule_if_idle(Lane.INBOX, "c1") is False
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is None


async def test_ingest_schedules_in_the_same_round_trip_once_a_conversation_took_messages(
    store: SessionStore, redis_client: aioredis.Redis
) -> None:
    """The first accepted message of a conversation schedules it in a second round trip;
    later ones in the pushes' own pipeline (guessed from the last outcome). A back-off's
    later due time is kept, and a conversation whose handover closed is no longer guessed
    after one ignored message."""
    round_trips = 0
    execute = store.raw.execute

    async def counted(commands: Sequence[Sequence[Any]]) -> list[Any]:
        nonlocal round_trips
        round_trips += 1
        return await execute(commands)

    store.raw.execute = counted  # type: ignore[method-assign]
    assert await store.create("c1", [], {})
    assert await store.ingest([_message("m1", "c1")]) == [INGEST_ACCEPTED]
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is not None
    assert round_trips == 2

    await redis_client.zrem(store.k_due(Lane.INBOX, "c1"), "c1")
    assert await store.ingest([_message("m2", "c1")]) == [INGEST_ACCEPTED]
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is not None
    assert round_trips == 3

    await redis_client.zadd(store.k_due(Lane.INBOX, "c1"), {"c1": 9_999_999_999_999})  # in back-off
    assert await store.ingest([_message("m3", "c1")]) == [INGEST_ACCEPTED]
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") == 9_999_999_999_999

    await redis_client.hset(store.k_h("c1"), "state", "CLOSED")
    await redis_client.zrem(store.k_due(Lane.INBOX, "c1"), "c1")
    # Still guessed open: the entry is added, and the worker's step removes it.
    assert await store.ingest([_message("m4", "c1")]) == [INGEST_IGNORED]
    await redis_client.zrem(store.k_due(Lane.INBOX, "c1"), "c1")
    assert await store.ingest([_message("m5", "c1")]) == [INGEST_IGNORED]
    assert await redis_client.zscore(store.k_due(Lane.INBOX, "c1"), "c1") is None
    stored = [common_pb2.Message.FromString(p).id for p in await store.peek(store.k_in("c1"), 10)]
    assert stored == ["m1", "m2", "m3"]
