"""The rt adapter reads malformed REST2 answers without crashing its poll (found by
tests/fuzz/test_rt_transactions.py): a transaction without a numeric id is skipped, a
wrong type where RT puts a string or a list is no match, and a search answer without
an id is a FarSideError (the far-side policy's error), never a TypeError or KeyError."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ccbridge.services.connector.adapters.rt import RtAdapter
from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.connector.base import CaseClosedEvent
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.errors import FarSideError
from tests.support.far_side import FarSide, Reply, Script, Seen, far_side

FIELD = "Infobip Conversation"
QUEUE = "Chat Handover"
TICKET = {"CustomFields": [{"name": FIELD, "values": ["conv-1"]}], "Requestor": [{"id": "x"}]}


@pytest.fixture
async def rt() -> AsyncIterator[FarSide]:
    async with far_side(lambda seen: Reply(404)) as far:
        yield far


@pytest.fixture
async def adapter(rt: FarSide, redis_client: aioredis.Redis) -> AsyncIterator[RtAdapter]:
    settings = RtSettings.from_env(
        {
            "CCBRIDGE_RT_URL": rt.url,
            "CCBRIDGE_RT_TOKEN": "rt-token-0123456789abcdef",
            "CCBRIDGE_RT_USER": "bridge",
            "CCBRIDGE_RT_QUEUE": QUEUE,
            "CCBRIDGE_RT_CONVERSATION_FIELD": FIELD,
        }
    )
    made = RtAdapter(settings, ConnectorStore(redis_client))
    try:
        yield made
    finally:
        await made.aclose()


def answers(transactions: object, ticket: object = TICKET) -> Script:
    def script(seen: Seen) -> Reply:
        path = seen.path.removeprefix("/REST/2.0")
        if path == "/transactions":
            return Reply.json(transactions)
        if path.startswith("/ticket/"):
            return Reply.json(ticket)
        return Reply(404)

    return script


async def test_a_transaction_without_a_numeric_id_is_skipped(
    rt: FarSide, adapter: RtAdapter, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(ConnectorStore(redis_client).rt_cursor(QUEUE), 0)
    rt.script = answers(
        {
            "items": [
                {"Type": "Correspond", "ObjectId": "5"},
                {"id": "٣", "Type": "Correspond", "ObjectId": "5"},
                {"id": 7, "Type": ["Status"], "ObjectId": "5"},
                {"id": 8, "Type": "Status", "ObjectId": {"id": 5}},
                {"id": "9", "Type": "Status", "ObjectId": "5", "NewValue": "resolved"},
            ]
        }
    )
    events = await adapter.poll()
    assert events == [CaseClosedEvent(external_id="5", event_id="rt-txn-9", reason="resolved")]
    await adapter.commit_poll(events)
    assert await redis_client.get(ConnectorStore(redis_client).rt_cursor(QUEUE)) == b"9"


async def test_a_ticket_with_odd_fields_has_no_conversation(
    rt: FarSide, adapter: RtAdapter, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(ConnectorStore(redis_client).rt_cursor(QUEUE), 0)
    for ticket in (
        {"CustomFields": 5, "Requestor": 3},
        {"CustomFields": [{"name": FIELD, "values": {"0": "conv-1"}}]},
        {"CustomFields": [{"name": FIELD, "values": [["conv-1"]]}]},
    ):
        rt.script = answers(
            {"items": [{"id": 3, "Type": "Status", "ObjectId": "5", "NewValue": "resolved"}]},
            ticket,
        )
        assert await adapter.poll() == []


async def test_a_max_id_answer_without_an_id_is_a_far_side_error(
    rt: FarSide, adapter: RtAdapter
) -> None:
    for item in ({"Type": "Create"}, {"id": None}, {"id": "x"}):
        rt.script = answers({"items": [item]})
        with pytest.raises(FarSideError) as caught:
            await adapter.poll()
        assert not caught.value.retryable
