"""Agent replies to Infobip, each once and with the ``x-agent-id`` Infobip's rules want
(issue 11): the sending mark and the OUTBOUND read-back after an unanswered Create
Message, the assignee read (and the bridge's agent assigned), and the agent-side dedupe
by message id apart from inbound ids. A running Session worker, a real Redis and the
Infobip simulator over loopback HTTP (tests/services/session/test_delivery_lanes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.session.store import (
    INGEST_ACCEPTED,
    INGEST_DUPLICATE,
    Lane,
    agent_message_key,
    case_closed_key,
    now_ms,
    outbox_item,
)
from ccbridge.simulators.infobip import Failure
from tests.services.session.test_delivery_lanes import (
    END_USER,
    SENDER,
    World,
    eventually,
    running_world,
)

FAST_RETRIES = {
    "CCBRIDGE_RETRY_BASE_MS": "20",
    "CCBRIDGE_RETRY_MAX_MS": "100",
    "CCBRIDGE_INFOBIP_READBACK_DELAY_MS": "50",
}


@pytest.fixture
async def world(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(redis_url, redis_client, workers=True, **FAST_RETRIES) as handle:
        yield handle


@pytest.fixture
async def bridge_world(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(
        redis_url,
        redis_client,
        workers=True,
        CCBRIDGE_INFOBIP_AGENT_ID="bridge-agent",
        **FAST_RETRIES,
    ) as handle:
        yield handle


def _message(message_id: str, text: str) -> common_pb2.Message:
    return common_pb2.Message(
        id=message_id, content_type="TEXT", content_json=f'{{"text": "{text}"}}'
    )


async def _reply(w: World, cid: str, message_id: str, text: str) -> None:
    assert await w.store.queue_agent_message(cid, _message(message_id, text))
    assert w.session.parts.worker is not None
    w.session.parts.worker.wake([cid], [Lane.OUTBOX])


async def _idle(w: World, cid: str, count: int) -> list[str]:
    """The replies at Infobip once ``count`` arrived and the outbox is empty."""
    await eventually("the replies", lambda: len(w.replies(cid)) >= count)
    await eventually("an empty outbox", lambda: _outbox_empty(w, cid))
    return w.replies(cid)


async def _outbox_empty(w: World, cid: str) -> bool:
    return (await w.store.queue_lengths(cid))[1] == 0


def _failure(cid: str, **kwargs: object) -> Failure:
    return Failure(
        remaining=1,
        method="POST",
        path_prefix=f"/ccaas/1/conversations/{cid}/messages",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_send_a_crash_cut_off_is_found_at_infobip_and_not_sent_again(
    world: World,
) -> None:
    """Infobip stored the part; the worker died before it recorded so. The mark says a
    send was under way: the next holder reads back and finds it."""
    w = world
    cid = await w.active()
    message = _message("agent-crash", "sent just before the crash")
    w.infobip.create_message(
        cid,
        {
            "channel": "WHATSAPP",
            "from": SENDER,
            "to": END_USER,
            "contentType": "TEXT",
            "content": {"text": "sent just before the crash"},
        },
        None,
    )
    token, *_ = await w.store.begin_step(Lane.OUTBOX, cid, 5000)
    assert token is not None
    item = outbox_item(message.SerializeToString())
    assert await w.store.mark_sending(cid, token, item, part=0, done=0, sent_at_ms=now_ms())
    await w.store.release_lease(Lane.OUTBOX, cid, token)

    await _reply(w, cid, "agent-crash", "sent just before the crash")
    await _reply(w, cid, "agent-next", "next")
    assert await _idle(w, cid, 2) == ["sent just before the crash", "next"]
    sent_ids = [m["id"] for m in w.infobip.agent_messages(cid)]
    kept = [i.decode() for i in await w.redis.lrange(w.store.k_sent_ids(cid), 0, -1)]
    assert kept == sent_ids[::-1]  # Infobip's ids are kept, newest first
    assert not await w.redis.exists(w.store.k_sending(cid))  # cleared with the pop


@pytest.mark.parametrize("drop", [False, True])
async def test_stored_then_failed_send_is_read_back_not_repeated(world: World, drop: bool) -> None:
    w = world
    cid = await w.active()
    w.infobip.inject_failure(_failure(cid, status=0 if drop else 500, when="after", drop=drop))
    await _reply(w, cid, "agent-1", "stored, answer lost")
    assert await _idle(w, cid, 1) == ["stored, answer lost"]
    assert w.infobip.failures == []


async def test_read_back_never_takes_an_earlier_identical_reply(world: World) -> None:
    """The agent says "ok" twice; the second send fails before Infobip stores it. The
    first "ok" is in the read-back window, but its id is known as sent: the second is
    sent again, not taken for the first."""
    w = world
    cid = await w.active()
    await _reply(w, cid, "agent-ok-1", "ok")
    assert await _idle(w, cid, 1) == ["ok"]
    w.infobip.inject_failure(_failure(cid, status=503))  # before: nothing stored
    await _reply(w, cid, "agent-ok-2", "ok")
    assert await _idle(w, cid, 2) == ["ok", "ok"]


async def test_x_agent_id_follows_the_conversations_assignee(world: World) -> None:
    w = world
    unassigned = await w.active()
    assigned = await w.active(agent_id="desk-agent-9")
    for cid in (unassigned, assigned):
        await _reply(w, cid, "agent-hi", "hi")
    await _idle(w, unassigned, 1)
    await _idle(w, assigned, 1)
    assert [m["agentIdHeader"] for m in w.infobip.agent_messages(unassigned)] == [None]
    assert [m["agentIdHeader"] for m in w.infobip.agent_messages(assigned)] == ["desk-agent-9"]
    rec = await w.store.get(assigned)
    assert rec is not None and rec.get("agent") == "desk-agent-9"
    # Unassigned at Infobip meanwhile: the refused send reads the assignee again.
    w.infobip.unassign(assigned)
    await _reply(w, assigned, "agent-again", "again")
    await _idle(w, assigned, 2)
    assert [m["agentIdHeader"] for m in w.infobip.agent_messages(assigned)] == [
        "desk-agent-9",
        None,
    ]
    rec = await w.store.get(assigned)
    assert rec is not None and rec.get("agent") == "" and rec.get("dead_letters", "0") == "0"


async def test_bridge_agent_takes_unassigned_conversations_only(bridge_world: World) -> None:
    w = bridge_world
    unassigned = await w.active()
    assigned = await w.active(agent_id="desk-agent-9")
    for cid in (unassigned, assigned):
        await _reply(w, cid, "agent-hi", "hi")
    await _idle(w, unassigned, 1)
    await _idle(w, assigned, 1)
    assert w.infobip.get_conversation(unassigned)["agentId"] == "bridge-agent"
    assert w.infobip.get_conversation(assigned)["agentId"] == "desk-agent-9"
    assert [m["agentIdHeader"] for m in w.infobip.agent_messages(unassigned)] == ["bridge-agent"]
    assert [m["agentIdHeader"] for m in w.infobip.agent_messages(assigned)] == ["desk-agent-9"]


async def test_sending_mark_needs_the_outbox_lease(world: World) -> None:
    w = world
    cid = await w.active()
    stale = "not-the-token"
    assert not await w.store.mark_sending(cid, stale, "item", part=0, done=0, sent_at_ms=1)
    assert not await w.redis.exists(w.store.k_sending(cid))
    token, *_ = await w.store.begin_step(Lane.OUTBOX, cid, 5000)
    assert token is not None
    assert await w.store.mark_sending(cid, token, "item", part=1, done=1, sent_at_ms=5)
    mark, known = await w.store.sending(cid)
    assert mark is not None and (mark.item, mark.part, mark.done, mark.sent_at_ms) == (
        "item",
        1,
        1,
        5,
    )
    assert mark.token == token and known == []


async def test_agent_duplicates_by_message_id_apart_from_inbound_ids(world: World) -> None:
    w = world
    cid = await w.active()
    payload = _message("x", "once").SerializeToString()
    # Inbound ids that look like the agent side's dedupe ids take nothing from it.
    await w.ingest(cid, "m:x", "c:ev-1", "e:x", "x")
    assert await w.store.agent_event(cid, agent_message_key("x"), payload) == INGEST_ACCEPTED
    assert await w.store.agent_event(cid, agent_message_key("x"), payload) == INGEST_DUPLICATE
    assert await w.store.agent_event(cid, case_closed_key("ev-1"), None, "done") == 3
    assert await w.store.agent_event(cid, case_closed_key("ev-1"), None, "done") == (
        INGEST_DUPLICATE
    )
