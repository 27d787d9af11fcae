"""The Infobip client against the Infobip simulator served on loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import grpc
import pytest

from ccbridge.services.infobip.client import (
    InfobipClient,
    InfobipError,
    InfobipNotFound,
    parse_error_body,
    webhook_profile,
)
from ccbridge.services.runtime.errors import InvalidArgument
from ccbridge.services.runtime.settings import Secret
from ccbridge.simulators.infobip import Failure
from ccbridge.simulators.infobip.server import start_server
from tests.simulators.infobip.harness import API_KEY, Sim, served_sim
from tests.support.far_side import Reply, far_side


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with served_sim() as sim:
        yield sim


@pytest.fixture
async def client(sim: Sim) -> AsyncIterator[InfobipClient]:
    client = sim.client(max_retries=3)
    try:
        yield client
    finally:
        await client.aclose()


def test_parse_error_body_accepts_both_shapes() -> None:
    assert parse_error_body(
        {"requestError": {"serviceException": {"messageId": "NOT_FOUND", "text": "No such entity"}}}
    ) == ("NOT_FOUND", "No such entity")
    assert parse_error_body({"statusCode": "ERROR", "message": "Oops"}) == ("ERROR", "Oops")
    assert parse_error_body("<html>") == ("", "")


async def test_reads_conversation_and_messages(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=5, topic="billing")
    fetched = await client.get_conversation(conversation.id)
    assert fetched["id"] == conversation.id and fetched["status"] == "OPEN"
    page = await client.get_messages(conversation.id, limit=3)
    assert len(page["messages"]) == 3
    assert page["pagination"]["totalItems"] == 5
    created = [m["createdAt"] for m in page["messages"]]
    assert created == sorted(created, reverse=True)


async def test_unknown_conversation_is_not_found(client: InfobipClient) -> None:
    with pytest.raises(InfobipNotFound) as caught:
        await client.get_conversation("does-not-exist")
    assert caught.value.status == 400
    assert caught.value.message_id == "NOT_FOUND"
    assert not caught.value.retryable
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_request_error_shape_is_parsed(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=1)
    body = {
        "channel": "WHATSAPP",
        "from": "447492263897",
        "to": conversation.end_user,
        "contentType": "TEXT",
        "content": {"text": "x" * 4097},
    }
    with pytest.raises(InfobipError) as caught:
        await client.create_message(conversation.id, body)
    assert caught.value.status == 400
    assert caught.value.message_id == "BAD_REQUEST"
    assert caught.value.text == "Bad request"
    assert not caught.value.retryable
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_status_error_shape_is_parsed(sim: Sim) -> None:
    conversation = sim.state.create_conversation(history=1)
    sim.state.inject_failure(Failure(remaining=1, status=500, shape="status"))
    client = sim.client(max_retries=0)
    try:
        with pytest.raises(InfobipError) as caught:
            await client.get_conversation(conversation.id)
    finally:
        await client.aclose()
    assert caught.value.status == 500
    assert caught.value.message_id == "ERROR"
    assert caught.value.text.startswith("Something went wrong")
    assert caught.value.retryable
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_bad_api_key_is_unauthorized(sim: Sim) -> None:
    assert sim.url is not None
    client = InfobipClient(sim.url, Secret("wrong"))
    try:
        with pytest.raises(InfobipError) as caught:
            await client.get_conversation("x")
    finally:
        await client.aclose()
    assert caught.value.status == 401
    assert caught.value.message_id == "UNAUTHORIZED"
    assert not caught.value.retryable
    assert "wrong" not in str(caught.value)


async def test_429_with_retry_after_then_success(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=3)
    sim.state.inject_failure(
        Failure(
            remaining=2,
            status=429,
            retry_after=1,
            method="GET",
            path_prefix=f"/ccaas/1/conversations/{conversation.id}",
        )
    )
    page = await client.get_messages(conversation.id)
    assert len(page["messages"]) == 3
    assert sim.state.failures == []  # both injected 429s were answered before success


async def test_429_without_retries_carries_retry_after(sim: Sim) -> None:
    conversation = sim.state.create_conversation(history=1)
    sim.state.inject_failure(Failure(remaining=1, status=429, retry_after=7))
    client = sim.client(max_retries=0)
    try:
        with pytest.raises(InfobipError) as caught:
            await client.get_messages(conversation.id)
    finally:
        await client.aclose()
    assert caught.value.status == 429
    assert caught.value.message_id == "TOO_MANY_REQUESTS"
    assert caught.value.retryable
    assert caught.value.retry_after == 7.0


async def test_retry_after_beyond_the_cap_is_left_to_the_caller(sim: Sim) -> None:
    conversation = sim.state.create_conversation(history=1)
    sim.state.inject_failure(Failure(remaining=5, status=503, retry_after=60))
    client = sim.client(max_retries=3, backoff_cap_s=2.0)
    try:
        with pytest.raises(InfobipError) as caught:
            await client.get_conversation(conversation.id)
    finally:
        await client.aclose()
    assert caught.value.retry_after == 60.0
    assert sim.state.failures[0].remaining == 4  # one attempt, no retry


async def test_backoff_never_earlier_than_retry_after() -> None:
    client = InfobipClient("http://x", Secret("k"), backoff_base_s=0.01, backoff_cap_s=5.0)
    try:
        for attempt in range(5):
            delay = client._backoff(attempt, 3.0)
            assert delay is not None and delay >= 3.0
            plain = client._backoff(attempt, None)
            assert plain is not None and 0 <= plain <= 5.0
        assert client._backoff(0, 6.0) is None
    finally:
        await client.aclose()


async def test_5xx_reads_are_retried(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=2)
    sim.state.inject_failure(Failure(remaining=2, status=500))
    assert (await client.get_conversation(conversation.id))["id"] == conversation.id


async def test_create_message_is_not_retried(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=2)
    sim.state.inject_failure(Failure(remaining=1, status=500, method="POST"))
    body = {
        "channel": conversation.channel,
        "from": conversation.business_sender,
        "to": conversation.end_user,
        "contentType": "TEXT",
        "content": {"text": "Hello"},
    }
    with pytest.raises(InfobipError) as caught:
        await client.create_message(conversation.id, body)
    assert caught.value.retryable
    assert sim.state.agent_messages(conversation.id) == []
    created = await client.create_message(conversation.id, body)
    assert created["direction"] == "OUTBOUND"
    assert [m["id"] for m in sim.state.agent_messages(conversation.id)] == [created["id"]]


async def test_create_message_sends_the_agent_id_it_is_given(sim: Sim) -> None:
    conversation = sim.state.create_conversation(history=2, agent_id="agent-7")
    client = sim.client()
    body = {
        "channel": conversation.channel,
        "from": conversation.business_sender,
        "to": conversation.end_user,
        "contentType": "TEXT",
        "content": {"text": "Hi"},
    }
    try:
        # Assigned: Infobip requires the header (the simulator enforces it).
        with pytest.raises(InfobipError) as caught:
            await client.create_message(conversation.id, body)
        assert caught.value.status == 400 and not caught.value.retryable
        await client.create_message(conversation.id, body, agent_id="agent-7")
        # Unassigned: the header is refused.
        await client.assign_conversation(conversation.id, "bridge-agent")
        assert sim.state.get_conversation(conversation.id)["agentId"] == "bridge-agent"
        sim.state.unassign(conversation.id)
        with pytest.raises(InfobipError):
            await client.create_message(conversation.id, body, agent_id="agent-7")
        await client.create_message(conversation.id, body)
    finally:
        await client.aclose()
    sent = sim.state.agent_messages(conversation.id)
    assert [(m["agentIdHeader"], m["authorType"]) for m in sent] == [
        ("agent-7", "AGENT"),
        (None, "SYSTEM"),
    ]


async def test_outbound_messages_are_read_back_after_a_time(
    sim: Sim, client: InfobipClient
) -> None:
    conversation = sim.state.create_conversation(history=4)
    body = {
        "channel": conversation.channel,
        "from": conversation.business_sender,
        "to": conversation.end_user,
        "contentType": "TEXT",
        "content": {"text": "read me back"},
    }
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = await client.create_message(conversation.id, body)
    page = await client.get_messages(
        conversation.id, direction="OUTBOUND", created_after=since, order_by="createdAt:asc"
    )
    assert [m["id"] for m in page["messages"]] == [created["id"]]
    later = await client.get_messages(
        conversation.id, direction="OUTBOUND", created_after=since + timedelta(minutes=1)
    )
    assert later["messages"] == []


async def test_timeout_is_retryable(sim: Sim) -> None:
    conversation = sim.state.create_conversation(history=1)
    sim.state.page_delay_ms = 2000
    client = sim.client(timeout_s=0.2, max_retries=0)
    try:
        with pytest.raises(InfobipError) as caught:
            await client.get_messages(conversation.id)
    finally:
        await client.aclose()
    assert caught.value.status is None
    assert caught.value.retryable
    assert "timed out" in str(caught.value)


async def test_timeout_and_connection_errors_over_real_http() -> None:
    server = await start_server(api_key=API_KEY)
    try:
        conversation = server.state.create_conversation(history=1)
        server.state.inject_failure(Failure(remaining=1, status=0, delay_ms=2000))
        client = InfobipClient(server.url, Secret(API_KEY), timeout_s=0.2, max_retries=0)
        try:
            with pytest.raises(InfobipError) as caught:
                await client.get_conversation(conversation.id)
            assert caught.value.status is None and caught.value.retryable
            # The next call is not delayed.
            assert (await client.get_conversation(conversation.id))["id"] == conversation.id
        finally:
            await client.aclose()
    finally:
        await server.stop()
    refused = InfobipClient(server.url, Secret(API_KEY), timeout_s=1.0, max_retries=0)
    try:
        with pytest.raises(InfobipError) as caught:
            await refused.get_conversation("x")
        assert caught.value.status is None and caught.value.retryable
    finally:
        await refused.aclose()


async def test_close_conversation(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=2, topic="refund", agent_id="a-1")
    sim.state.update_conversation(conversation.id, {"priority": "HIGH"}, partial=True)
    assert await client.close_conversation(conversation.id) is False
    after = sim.state.get_conversation(conversation.id)
    assert after["status"] == "CLOSED" and after["closedAt"]
    # Only the status changed.
    assert (after["topic"], after["agentId"], after["priority"]) == ("refund", "a-1", "HIGH")
    assert await client.close_conversation(conversation.id) is True


async def test_close_is_one_patch_that_never_undoes_a_concurrent_change(
    sim: Sim, client: InfobipClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = sim.state.create_conversation(history=1, topic="refund", agent_id="a-1")
    path = f"/ccaas/1/conversations/{conversation.id}"
    # A read or a full update would consume one of these and fail the close.
    for method in ("GET", "PUT"):
        sim.state.inject_failure(Failure(remaining=1, status=400, method=method, path_prefix=path))
    original = sim.state.take_failure

    def change_in_between(method: str, request_path: str) -> Failure | None:
        # An Infobip agent changes the conversation after the close was sent, before
        # Infobip applies it.
        if method == "PATCH" and request_path == path:
            sim.state.update_conversation(
                conversation.id, {"priority": "URGENT", "agentId": "a-2"}, partial=True
            )
        return original(method, request_path)

    monkeypatch.setattr(sim.state, "take_failure", change_in_between)
    assert await client.close_conversation(conversation.id) is False
    after = sim.state.get_conversation(conversation.id)
    assert after["status"] == "CLOSED"
    assert (after["priority"], after["agentId"], after["topic"]) == ("URGENT", "a-2", "refund")
    assert sorted(f.method for f in sim.state.failures) == ["GET", "PUT"]  # never called


async def test_tags(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=1)
    await client.create_tag("vip")
    await client.create_tag("vip")  # "Tag already exists." counts as success
    await client.add_tag(conversation.id, "vip")
    assert await client.get_tags(conversation.id) == ["vip"]
    with pytest.raises(InfobipNotFound):
        await client.add_tag(conversation.id, "never_created")


async def test_get_tags_pages_through(sim: Sim, client: InfobipClient) -> None:
    names = [f"t{i:04d}" for i in range(1001)]
    conversation = sim.state.create_conversation(history=1, tags=names)
    assert sorted(await client.get_tags(conversation.id)) == names


async def test_metadata(sim: Sim, client: InfobipClient) -> None:
    conversation = sim.state.create_conversation(history=1, metadata={"lang": "hr"})
    await client.patch_metadata(conversation.id, {"tier": "gold"})
    assert await client.get_metadata(conversation.id) == {"lang": "hr", "tier": "gold"}


async def test_account_configuration_and_subscription(sim: Sim, client: InfobipClient) -> None:
    result = await client.update_account_configuration("https://gw.example/webhooks/infobip/t")
    assert result["statusCode"] == "SUCCESS"
    assert sim.state.webhook_url == "https://gw.example/webhooks/infobip/t"
    profile = webhook_profile(
        "ccbridge-hmac-1",
        "ccbridge-hmac-1",
        "https://gw.example/webhooks/infobip/events",
        {"secretKey": "s3cret", "algorithm": "HMAC_SHA_512"},
    )
    created = await client.create_subscription(
        "ccbridge", "ccbridge", ["CONVERSATION_MESSAGE_RECEIVED"], profile
    )
    assert created["subscriptionId"] == "ccbridge"
    subscription = sim.state.subscriptions["ccbridge"]
    assert (subscription.secret, subscription.security_type) == ("s3cret", "HMAC")
    assert subscription.algorithm == "HMAC_SHA_512"
    with pytest.raises(InfobipError) as caught:  # a second create conflicts
        await client.create_subscription(
            "ccbridge", "ccbridge", ["CONVERSATION_CREATED"], {"profileId": "ccbridge-hmac-1"}
        )
    assert caught.value.status == 400
    fetched = await client.get_subscription("ccbridge")
    assert fetched["profile"] == {
        "profileId": "ccbridge-hmac-1",
        "security": {"authId": "ccbridge-hmac-1"},
    }
    assert (await client.get_profile("ccbridge-hmac-1"))["webhook"]["notifyUrl"].endswith(
        "/webhooks/infobip/events"
    )
    await client.update_subscription(
        "ccbridge", "renamed", ["CONVERSATION_STATUS_UPDATED"], "ccbridge-hmac-1"
    )
    [listed] = await client.list_subscriptions()
    assert (listed["name"], listed["events"]) == ("renamed", ["CONVERSATION_STATUS_UPDATED"])
    await client.delete_subscription("ccbridge")
    with pytest.raises(InfobipNotFound):
        await client.get_subscription("ccbridge")
    await client.delete_profile("ccbridge-hmac-1")
    await client.delete_security("ccbridge-hmac-1")
    assert sim.state.profiles == {} and sim.state.security == {}


async def test_subscriptions_are_paged(sim: Sim, client: InfobipClient) -> None:
    profile = webhook_profile(
        "p", "a", "https://gw.example/webhooks/infobip/events", {"username": "u", "password": "p"}
    )
    await client.create_subscription("s-0", "s", ["CONVERSATION_CREATED"], profile)
    for index in range(1, 205):
        sim.state.create_subscription(
            {"subscriptionId": f"s-{index}", "events": [], "profile": {"profileId": "p"}}
        )
    listed = await client.list_subscriptions()
    assert sorted(item["subscriptionId"] for item in listed) == sorted(
        f"s-{index}" for index in range(205)
    )


# Ids that would leave /ccaas/1/conversations/<id>/ or break the URL.
BAD_IDS = [
    "",
    ".",
    "..",
    "...",
    "../tags",
    "a/b",
    "a/../../tags",
    "%2e%2e",
    "%2F",
    "a%",
    "a?b=1",
    "a#b",
    "a b",
    "a\n",
    "a\r\nX-Evil: 1",
    "a\x00",
    "a\x7f",
    "\u00e9",
    "\\",
    "a" * 129,
]
GOOD_IDS = ["4461ea29-c09e-4ba8-a751-df86cf0a0eb9", "a.b", "..a", "a..", ".a.", ":_-.", "A" * 128]


def conversation_calls(client: InfobipClient) -> list[Callable[[str], Awaitable[object]]]:
    """Every client method that takes a conversation id."""
    return [
        client.get_conversation,
        client.get_messages,
        lambda cid: client.create_message(cid, {"contentType": "TEXT"}),
        client.close_conversation,
        lambda cid: client.add_tag(cid, "vip"),
        client.get_tags,
        client.get_metadata,
        lambda cid: client.patch_metadata(cid, {"k": "v"}),
    ]


async def test_a_url_never_leaves_the_conversation() -> None:
    async with far_side(lambda _: Reply.json({"status": "CLOSED"})) as far:
        client = InfobipClient(far.url, Secret(API_KEY), max_retries=0)
        try:
            for cid in BAD_IDS:
                for call in conversation_calls(client):
                    with pytest.raises(InvalidArgument):
                        await call(cid)
            assert far.requests == []  # nothing was sent for a bad id
            for cid in GOOD_IDS:
                for call in conversation_calls(client):
                    await call(cid)
            assert len(far.requests) == len(GOOD_IDS) * len(conversation_calls(client))
        finally:
            await client.aclose()
    for seen in far.requests:
        if seen.raw_path == "/ccaas/1/tags":
            assert seen.query.startswith("conversationId=")
            continue
        prefix, _, rest = seen.raw_path.partition("/ccaas/1/conversations/")
        segment, _, suffix = rest.partition("/")
        assert prefix == "" and unquote(segment) in GOOD_IDS, seen.raw_path
        assert suffix in {"", "messages", "tags", "metadata"}, seen.raw_path
