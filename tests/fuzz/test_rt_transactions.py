"""Hypothesis over the rt connector's reading of Request Tracker's REST2 answers
(services/connector/adapters/rt.py): a scripted far side on loopback answers every
transaction search, ticket and attachment request of a poll with generated JSON (right
shapes with wrong types, missing fields, junk, error statuses), the real adapter polls
it through the product's HTTP client with a real Redis.

Invariant: ``poll`` returns well-formed events or raises FarSideError (the far-side
policy's error: the poller retries or reports it); never another exception.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from ccbridge.services.connector.adapters.rt import RtAdapter
from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.connector.base import AgentMessage, CaseClosedEvent
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.errors import FarSideError
from tests.fuzz.conftest import fuzz_examples, fuzz_settings
from tests.fuzz.strategies import ANY_TEXT, JSON, json_bytes, maybe
from tests.support.far_side import FarSide, Reply, Seen, far_side

pytestmark = pytest.mark.fuzz

BRIDGE = "bridge"
FIELD = "Infobip Conversation"
PAGE = 3  # small pages: the paging path is reached

TXN_IDS = st.integers(min_value=-5, max_value=2**40) | st.from_regex(r"\A[0-9]{1,6}\Z")
USERS = st.sampled_from([BRIDGE, "agent", "someone@customers.ccbridge.invalid", "", "root"])
TRANSACTION = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(TXN_IDS),
        "Type": maybe(st.sampled_from(["Correspond", "Status", "Create", "Comment"])),
        "Creator": maybe(USERS | st.fixed_dictionaries({"id": maybe(USERS)})),
        "ObjectId": maybe(TXN_IDS),
        "ObjectType": maybe(st.sampled_from(["RT::Ticket", "RT::User"])),
        "NewValue": maybe(st.sampled_from(["resolved", "rejected", "open", ""])),
        "Created": maybe(ANY_TEXT),
    },
)
TICKET = st.fixed_dictionaries(
    {},
    optional={
        "CustomFields": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": maybe(st.just(FIELD)),
                        "values": maybe(st.lists(maybe(st.just("conv-1")), max_size=2)),
                    },
                )
                | JSON,
                max_size=3,
            )
        ),
        "Requestor": maybe(
            st.lists(maybe(st.fixed_dictionaries({"id": maybe(USERS)})) | USERS, max_size=3)
        ),
        "Status": maybe(st.sampled_from(["open", "resolved"])),
    },
)
ATTACHMENT = st.fixed_dictionaries(
    {},
    optional={
        "ContentType": maybe(st.sampled_from(["text/plain", "text/html", "image/png"])),
        "Content": maybe(
            ANY_TEXT
            | st.sampled_from(
                ["<p>hi<br>there</p>", "<script>x</script>", "<pre> a\n b</pre>", "&#0;", "<"]
            )
        ),
        "Filename": maybe(st.sampled_from(["", "a.pdf"]) | ANY_TEXT),
    },
)


def page_of(items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return maybe(st.fixed_dictionaries({"items": maybe(st.lists(items | JSON, max_size=PAGE))}))


def reply_of(doc: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    """Mostly 200 with the document; sometimes an error status or a body that is not JSON."""
    ok = doc.map(lambda value: Reply(200, json_bytes(value), {"Content-Type": "application/json"}))
    odd = st.builds(
        Reply,
        status=st.sampled_from([200, 201, 302, 400, 401, 404, 429, 500, 503]),
        body=st.binary(max_size=40) | doc.map(json_bytes),
    )
    return st.one_of(ok, ok, ok, odd)


@pytest.fixture
async def rt_far_side() -> AsyncIterator[FarSide]:
    async with far_side(lambda seen: Reply(404)) as far:
        yield far


def _settings(url: str) -> RtSettings:
    return RtSettings.from_env(
        {
            "CCBRIDGE_RT_URL": url,
            "CCBRIDGE_RT_TOKEN": "rt-token-0123456789abcdef",
            "CCBRIDGE_RT_USER": BRIDGE,
            "CCBRIDGE_RT_CONVERSATION_FIELD": FIELD,
            "CCBRIDGE_RT_TIMEOUT_S": "5",
            "CCBRIDGE_RT_POLL_PAGE": str(PAGE),
        }
    )


_runs = itertools.count()


ANSWERS = st.fixed_dictionaries(
    {
        "transactions": st.lists(reply_of(page_of(TRANSACTION)), min_size=1, max_size=4),
        "ticket": st.lists(reply_of(TICKET), min_size=1, max_size=3),
        "attachments": st.lists(reply_of(page_of(ATTACHMENT)), min_size=1, max_size=3),
    }
)


@given(answers=ANSWERS)
@fuzz_settings(fuzz_examples(120))
async def test_poll_reads_any_answer(
    answers: dict[str, list[Reply]], rt_far_side: FarSide, redis_client: aioredis.Redis
) -> None:
    rt_far_side.requests.clear()
    # The answers of each kind of request, in order (repeating).
    served = {kind: itertools.cycle(replies) for kind, replies in answers.items()}

    def script(seen: Seen) -> Reply:
        path = seen.path.removeprefix("/REST/2.0")
        if path == "/transactions":
            return next(served["transactions"])
        if path.startswith("/ticket/"):
            return next(served["ticket"])
        if path.startswith("/transaction/"):
            return next(served["attachments"])
        return Reply(404)

    rt_far_side.script = script
    store = ConnectorStore(redis_client, prefix=f"fuzz{next(_runs)}")
    adapter = RtAdapter(_settings(rt_far_side.url), store)
    try:
        try:
            events = await adapter.poll()
        except FarSideError:
            return
        for event in events:
            assert event.external_id and event.event_id
            if isinstance(event, AgentMessage):
                assert event.text
                event.text.encode()  # protobuf string fields hold UTF-8 only
                event.agent_name.encode()
            else:
                assert isinstance(event, CaseClosedEvent)
                event.reason.encode()
        await adapter.commit_poll(events)
    finally:
        await adapter.aclose()
