"""What the outbox worker sends for an agent reply, with a running Session worker, a real
Redis and the Infobip simulator: the optional agent-name prefix, and a reply the channel
cannot take dead-lettered before anything is sent."""

from __future__ import annotations

import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import Lane
from tests.services.session.test_delivery_lanes import eventually, running_world


async def test_the_agent_name_prefix_is_put_before_the_text_when_set(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running_world(
        redis_url, redis_client, workers=True, CCBRIDGE_AGENT_NAME_PREFIX="{name}: "
    ) as world:
        cid = await world.active()
        for mid, name in (("a-1", "Ann"), ("a-2", "")):
            message = common_pb2.Message(
                id=mid, content_type="TEXT", content_json='{"text": "hi"}', author_name=name
            )
            assert await world.store.queue_agent_message(cid, message)
        assert world.session.parts.worker is not None
        world.session.parts.worker.wake([cid], [Lane.OUTBOX])
        await eventually("two replies", lambda: len(world.replies(cid)) == 2)
        assert world.replies(cid) == ["Ann: hi", "hi"]


async def test_without_the_setting_the_name_is_not_sent(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running_world(redis_url, redis_client, workers=True) as world:
        cid = await world.active()
        message = common_pb2.Message(
            id="a-1", content_type="TEXT", content_json='{"text": "hi"}', author_name="Ann"
        )
        assert await world.store.queue_agent_message(cid, message)
        assert world.session.parts.worker is not None
        world.session.parts.worker.wake([cid], [Lane.OUTBOX])
        await eventually("the reply", lambda: world.replies(cid))
        assert world.replies(cid) == ["hi"]


async def test_a_reply_the_channel_cannot_take_sends_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running_world(redis_url, redis_client, workers=True) as world:
        cid = await world.active()
        await world.store.transition(cid, allowed=("ACTIVE",), values={"channel": "SMS"})
        message = common_pb2.Message(
            id="a-1",
            content_type="TEXT",
            content_json='{"text": "the label"}',
            attachments=[
                common_pb2.Attachment(url="https://x.example/l.png", content_type="IMAGE")
            ],
        )
        assert await world.store.queue_agent_message(cid, message)
        assert world.session.parts.worker is not None
        world.session.parts.worker.wake([cid], [Lane.OUTBOX])

        async def dead() -> int:
            rec = await world.store.get(cid)
            return rec.get_int("dead_letters") if rec else 0

        await eventually("a dead letter", dead)
        rec = await world.store.get(cid)
        assert rec is not None
        assert "SMS cannot take IMAGE" in rec.get("failure_reason")
        assert world.infobip.agent_messages(cid) == []
