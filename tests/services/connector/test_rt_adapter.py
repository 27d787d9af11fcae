"""The rt adapter against a REAL Request Tracker 5 (scripts/rt-peer.sh) and a real Redis.

The agent's side is played through RT's own REST2 API with agent1's token, the way the
web UI writes transactions (HTML bodies). Each test uses its own conversation id; the
RT database is shared by the session (reset once at its start).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.rt import (
    RtAdapter,
    build,
    message_marker,
    requestor_address,
)
from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.connector.base import AgentMessage, CaseClosedEvent, CaseEvent, CaseToOpen
from ccbridge.services.connector.case_text import html_to_text
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.settings import SettingsError
from tests.support.far_side import lossy_proxy
from tests.support.rt import RtPeer

pytestmark = pytest.mark.rt


def _msg(
    conversation_id: str,
    text: str,
    *,
    inbound: bool = True,
    author: str = "",
    seconds: int = 1_700_000_000,
    msg_id: str | None = None,
    content_type: str = "TEXT",
    content: dict[str, Any] | None = None,
) -> common_pb2.Message:
    return common_pb2.Message(
        id=msg_id or uuid.uuid4().hex,
        conversation_id=conversation_id,
        direction=common_pb2.DIRECTION_INBOUND if inbound else common_pb2.DIRECTION_OUTBOUND,
        channel="WHATSAPP",
        author_type=author or ("CUSTOMER" if inbound else "BOT"),
        content_type=content_type,
        content_json=json.dumps(content or {"text": text}),
        created_at=Timestamp(seconds=seconds),
    )


def _case(conversation_id: str, queue: str = "") -> CaseToOpen:
    return CaseToOpen(
        conversation_id=conversation_id,
        channel="WHATSAPP",
        end_user="4915112345678",
        queue=queue,
        priority=0,
        skills=("billing",),
        rule="vip",
        tags=("vip",),
        metadata={"language": "de"},
        transcript=[
            _msg(conversation_id, "Where is my order 1234?", seconds=1_700_000_000),
            _msg(
                conversation_id,
                "I could not find a delivery date.",
                inbound=False,
                seconds=1_700_000_005,
            ),
            _msg(
                conversation_id,
                "",
                content_type="IMAGE",
                seconds=1_700_000_010,
                content={"url": "https://example.invalid/p.jpg", "caption": "parcel"},
            ),
            _msg(conversation_id, "I want a human.", seconds=1_700_000_020),
        ],
        transcript_truncated=False,
        idempotency_key=f"open-{conversation_id}",
    )


def _settings(peer: RtPeer, **overrides: str) -> RtSettings:
    env = {
        "CCBRIDGE_RT_URL": peer.url,
        "CCBRIDGE_RT_TOKEN": peer.bridge_token,
        "CCBRIDGE_RT_USER": peer.bridge_user,
        "CCBRIDGE_RT_TIMEOUT_S": "10",
    }
    env.update(overrides)
    return RtSettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **env})


async def _history(client: httpx.AsyncClient, ticket: str) -> list[dict[str, Any]]:
    response = await client.get(
        f"/ticket/{ticket}/history", params={"fields": "Type,Creator,Data", "per_page": 100}
    )
    response.raise_for_status()
    return list(response.json()["items"])


async def _bodies(client: httpx.AsyncClient, txn_ids: list[str]) -> list[str]:
    bodies = []
    for txn in txn_ids:
        response = await client.get(
            f"/transaction/{txn}/attachments", params={"fields": "ContentType,Content"}
        )
        response.raise_for_status()
        bodies.append(response.json()["items"][0]["Content"])
    return bodies


async def _reply(agent: httpx.AsyncClient, ticket: str, html: str) -> str:
    response = await agent.post(
        f"/ticket/{ticket}/correspond", json={"Content": html, "ContentType": "text/html"}
    )
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def _mine(events: list[CaseEvent], ticket: str) -> list[CaseEvent]:
    return [e for e in events if e.external_id == ticket]


async def _poll_all(adapter: RtAdapter) -> list[CaseEvent]:
    events = await adapter.poll()
    await adapter.commit_poll(events)
    return events


# --- pure helpers ---------------------------------------------------------------------


def test_settings_report_every_bad_key() -> None:
    with pytest.raises(SettingsError) as caught:
        RtSettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_RT_URL": "ftp:/x",
                "CCBRIDGE_RT_POLL_PAGE": "500",
                "CCBRIDGE_RT_TIMEOUT_S": "soon",
            }
        )
    text = str(caught.value)
    for key in (
        "CCBRIDGE_RT_URL",
        "CCBRIDGE_RT_TOKEN",
        "CCBRIDGE_RT_POLL_PAGE",
        "CCBRIDGE_RT_TIMEOUT_S",
    ):
        assert key in text
    settings = RtSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_RT_URL": "http://rt.example/rt/",
            "CCBRIDGE_RT_TOKEN": "1-2-abc",
        }
    )
    assert settings.url == "http://rt.example/rt"
    assert settings.queue == "Chat Handover"
    assert "1-2-abc" not in repr(settings)


def test_helpers() -> None:
    assert html_to_text(
        "<p>Hi, I am <b>Alice</b> &amp; co.<br>Line&nbsp;2</p>"
        "<ul><li>a</li><li>b</li></ul><style>p{}</style>"
    ) == ("Hi, I am Alice & co.\nLine 2\n\n- a\n- b")
    assert requestor_address("WHATSAPP", "+49 151 2345", "c1", "x.invalid") == (
        "whatsapp-49-151-2345@x.invalid"
    )
    assert message_marker("abc-123") == "(ccb:abc-123)"
    assert message_marker("it's 50%_off").startswith("(ccb:sha256-")


# --- against RT ---------------------------------------------------------------------------


async def test_open_case_is_idempotent_and_carries_the_transcript(
    make_adapter: Callable[..., RtAdapter], bridge_http: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    first = await adapter.open_case(_case(conversation))
    again = await make_adapter().open_case(_case(conversation))  # a retry, another replica
    assert not first.existing
    assert again.existing and again.external_id == first.external_id

    ticket = (await bridge_http.get(f"/ticket/{first.external_id}")).json()
    assert ticket["Status"] == "new"
    assert ticket["Requestor"][0]["id"] == "whatsapp-4915112345678@customers.ccbridge.invalid"
    values = {cf["name"]: cf["values"] for cf in ticket["CustomFields"]}
    assert values["Infobip Conversation"] == [conversation]
    create = (await _history(bridge_http, first.external_id))[0]
    assert create["Type"] == "Create"
    content = (await _bodies(bridge_http, [create["id"]]))[0]
    assert "[2023-11-14 22:13:20] customer: Where is my order 1234?" in content
    assert "[2023-11-14 22:13:25] bot: I could not find a delivery date." in content
    assert "customer: [image] https://example.invalid/p.jpg parcel" in content
    assert "Skills: billing" in content


async def test_customer_messages_in_order_each_once(
    make_adapter: Callable[..., RtAdapter],
    bridge_http: httpx.AsyncClient,
    redis_client: aioredis.Redis,
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    texts = ["first", "second - Grüße 👋", "third"]
    messages = [_msg(conversation, text) for text in texts]
    ids = [await adapter.post_customer_message(ticket, conversation, m, m.id) for m in messages]
    # A plain retry of the second message: answered from Redis.
    assert (
        await adapter.post_customer_message(ticket, conversation, messages[1], messages[1].id)
        == ids[1]
    )
    # A crash between RT's answer and the Redis write leaves the key "pending": the next
    # attempt (another replica) finds the transaction in RT instead of posting again.
    await redis_client.set(f"ccb:rt:msg:{{{conversation}}}:{messages[2].id}", "pending")
    assert (
        await make_adapter().post_customer_message(
            ticket, conversation, messages[2], messages[2].id
        )
        == ids[2]
    )

    history = await _history(bridge_http, ticket)
    posted = [t["id"] for t in history if t["Type"] == "Correspond"]
    assert posted == ids
    assert await _bodies(bridge_http, posted) == texts


def _lose_posts_to(suffix: str) -> Callable[[str, str], bool]:
    """Network fault: a POST to a path ending in ``suffix`` reaches RT, its answer is lost."""
    return lambda method, path: method == "POST" and path.endswith(suffix)


async def test_lost_answer_is_not_posted_twice(
    rt_peer: RtPeer,
    redis_client: aioredis.Redis,
    make_adapter: Callable[..., RtAdapter],
    bridge_http: httpx.AsyncClient,
) -> None:
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await make_adapter().open_case(_case(conversation))).external_id
    message = _msg(conversation, "did this arrive?")
    async with lossy_proxy("127.0.0.1", rt_peer.port, _lose_posts_to("/correspond")) as port:
        flaky = RtAdapter(
            _settings(rt_peer, CCBRIDGE_RT_URL=f"http://127.0.0.1:{port}/rt"),
            ConnectorStore(redis_client),
        )
        try:
            with pytest.raises(FarSideError) as lost:
                await flaky.post_customer_message(ticket, conversation, message, message.id)
            assert lost.value.retryable
        finally:
            await flaky.aclose()
    healthy = make_adapter()
    # Outcome unknown: the attempt's lock is kept, so an immediate retry waits.
    with pytest.raises(FarSideError) as busy:
        await healthy.post_customer_message(ticket, conversation, message, message.id)
    assert busy.value.retryable and busy.value.retry_after
    await redis_client.delete(f"ccb:rt:msglock:{{{conversation}}}:{message.id}")  # expired
    txn = await healthy.post_customer_message(ticket, conversation, message, message.id)
    posted = [t["id"] for t in await _history(bridge_http, ticket) if t["Type"] == "Correspond"]
    assert posted == [txn]


async def test_lost_create_answer_is_not_a_second_ticket(
    rt_peer: RtPeer,
    redis_client: aioredis.Redis,
    make_adapter: Callable[..., RtAdapter],
    bridge_http: httpx.AsyncClient,
) -> None:
    conversation = f"c-{uuid.uuid4().hex}"
    async with lossy_proxy("127.0.0.1", rt_peer.port, _lose_posts_to("/ticket")) as port:
        flaky = RtAdapter(
            _settings(rt_peer, CCBRIDGE_RT_URL=f"http://127.0.0.1:{port}/rt"),
            ConnectorStore(redis_client),
        )
        try:
            with pytest.raises(FarSideError) as lost:
                await flaky.open_case(_case(conversation))
            assert lost.value.retryable
        finally:
            await flaky.aclose()
    with pytest.raises(FarSideError) as busy:
        await make_adapter().open_case(_case(conversation))
    assert busy.value.retryable and busy.value.retry_after
    await redis_client.delete(f"ccb:rt:open:{{{conversation}}}")  # expired
    opened = await make_adapter().open_case(_case(conversation))
    assert opened.existing
    found = await bridge_http.get(
        "/tickets", params={"query": f"'CF.{{Infobip Conversation}}' = '{conversation}'"}
    )
    assert [t["id"] for t in found.json()["items"]] == [opened.external_id]


async def test_agent_reply_polled_once_and_cursor_survives_restart(
    make_adapter: Callable[..., RtAdapter], agent: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    # Written before the bridge ever polled: the cursor was set when the case was opened.
    reply = await _reply(agent, ticket, "<p>Hi, I am <b>Alice</b>.</p><p>Parcel left today.</p>")
    comment = await agent.post(
        f"/ticket/{ticket}/comment",
        json={"Content": "internal: carrier DHL", "ContentType": "text/plain"},
    )
    assert comment.status_code == 201

    uncommitted = _mine(await adapter.poll(), ticket)
    assert uncommitted == [
        AgentMessage(
            external_id=ticket,
            event_id=f"rt-txn-{reply}",
            message_id=f"rt-txn-{reply}",
            text="Hi, I am Alice.\n\nParcel left today.",
            agent_name="agent1",
        )
    ]
    # Not committed (Session did not take it): the next poll yields it again.
    events = _mine(await adapter.poll(), ticket)
    assert events == uncommitted
    await adapter.commit_poll(events)
    assert _mine(await _poll_all(adapter), ticket) == []
    await adapter.aclose()  # "restart": a new instance reads the cursor from Redis
    assert _mine(await _poll_all(make_adapter()), ticket) == []


async def test_customer_posts_are_not_agent_replies(
    make_adapter: Callable[..., RtAdapter], rt_peer: RtPeer, agent: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    await adapter.post_customer_message(ticket, conversation, _msg(conversation, "hi"), "k1")
    # The customer writes through RT's mail gateway (Creator = the requestor).
    mail = (
        "From: whatsapp-4915112345678@customers.ccbridge.invalid\nSubject: chat\n"
        "Content-Type: text/plain; charset=utf-8\n\nby mail\n"
    )
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{rt_peer.url}/REST/1.0/NoAuth/mail-gateway",
            data={
                "queue": "Chat Handover",
                "action": "correspond",
                "ticket": ticket,
                "message": mail,
            },
        )
    assert response.text.startswith("ok"), response.text
    reply = await _reply(agent, ticket, "<div>Hello from agent1</div>")
    events = _mine(await _poll_all(adapter), ticket)
    assert [(e.event_id, getattr(e, "text", "")) for e in events] == [
        (f"rt-txn-{reply}", "Hello from agent1")
    ]


async def test_tickets_no_handover_opened_are_ignored(
    make_adapter: Callable[..., RtAdapter], bridge_http: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    await adapter.open_case(_case(f"c-{uuid.uuid4().hex}"))  # sets the cursor
    created = await bridge_http.post(
        "/ticket",
        json={
            "Queue": "Chat Handover",
            "Subject": "by e-mail",
            "Requestor": "someone@example.org",
            "Content": "not a chat",
        },
    )
    assert created.status_code == 201, created.text
    other = created.json()["id"]
    await _reply(agent, other, "<p>answer by e-mail</p>")
    assert (await agent.put(f"/ticket/{other}", json={"Status": "resolved"})).status_code == 200
    assert _mine(await _poll_all(adapter), other) == []


async def test_resolve_by_agent_is_a_case_closed_event(
    make_adapter: Callable[..., RtAdapter], agent: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    reply = await _reply(agent, ticket, "<p>Done, bye!</p>")
    resolved = await agent.put(f"/ticket/{ticket}", json={"Status": "resolved"})
    assert resolved.status_code == 200, resolved.text
    events = _mine(await _poll_all(adapter), ticket)
    assert [type(e) for e in events] == [AgentMessage, CaseClosedEvent]
    assert events[0].event_id == f"rt-txn-{reply}"
    closed = events[1]
    assert isinstance(closed, CaseClosedEvent) and closed.reason == "resolved"
    # The bridge's own close is not reported back.
    assert await adapter.close_case(ticket, conversation, "infobip_closed", "x") is True


async def test_close_case_resolves(
    make_adapter: Callable[..., RtAdapter], bridge_http: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    assert await adapter.close_case(ticket, conversation, "infobip_closed", "c1") is False
    assert (await bridge_http.get(f"/ticket/{ticket}")).json()["Status"] == "resolved"
    assert await adapter.close_case(ticket, conversation, "infobip_closed", "c1") is True
    assert _mine(await _poll_all(adapter), ticket) == []


async def test_a_reply_not_delivered_is_one_comment_the_poller_ignores(
    make_adapter: Callable[..., RtAdapter], bridge_http: httpx.AsyncClient
) -> None:
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    await _poll_all(adapter)
    reason = "not sendable on SMS: attachment #1: channel SMS cannot take IMAGE"
    for _ in range(2):  # a retried report adds no second comment
        await adapter.report_message_failed(
            ticket, conversation, "rt-txn-99", reason, "failed:rt-txn-99"
        )
    comments = [t for t in await _history(bridge_http, ticket) if t["Type"] == "Comment"]
    assert len(comments) == 1
    (body,) = await _bodies(bridge_http, [comments[0]["id"]])
    assert "NOT delivered" in body and reason in body and "rt-txn-99" in body
    assert _mine(await _poll_all(adapter), ticket) == []


async def test_lease_lets_one_adapter_poll_a_queue(
    make_adapter: Callable[..., RtAdapter], agent: httpx.AsyncClient
) -> None:
    first, second = make_adapter(), make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await first.open_case(_case(conversation))).external_id
    reply = await _reply(agent, ticket, "<p>one</p>")
    assert [e.event_id for e in _mine(await first.poll(), ticket)] == [f"rt-txn-{reply}"]
    assert await second.poll() == []  # the first holds the lease
    await first.aclose()  # releases it (uncommitted: the event comes again)
    assert [e.event_id for e in _mine(await _poll_all(second), ticket)] == [f"rt-txn-{reply}"]


async def test_routed_queue_and_build(rt_peer: RtPeer, redis_client: aioredis.Redis) -> None:
    settings = RtSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_RT_URL": rt_peer.url,
            "CCBRIDGE_RT_TOKEN": rt_peer.bridge_token,
        }
    )
    adapter = build(settings, ConnectorStore(redis_client))
    try:
        assert adapter.name == "rt" and adapter.mode == "poll"
        with pytest.raises(FarSideError) as caught:  # no such queue: RT refuses (403)
            await adapter.open_case(_case(f"c-{uuid.uuid4().hex}", queue="No Such Queue"))
        assert caught.value.retryable is False and caught.value.status == 403
        assert "No Such Queue" in str(caught.value)
        with pytest.raises(FarSideError) as missing:
            await adapter.post_customer_message("999999", "c-x", _msg("c-x", "hi"), "k")
        assert missing.value.retryable is False
    finally:
        await adapter.aclose()


async def test_rt_down_is_retryable(
    rt_peer: RtPeer, make_adapter: Callable[..., RtAdapter]
) -> None:
    if not rt_peer.managed:
        pytest.skip("RT is not managed by this test session")
    adapter = make_adapter()
    conversation = f"c-{uuid.uuid4().hex}"
    ticket = (await adapter.open_case(_case(conversation))).external_id
    rt_peer.stop()
    try:
        with pytest.raises(FarSideError) as caught:
            await adapter.post_customer_message(
                ticket, conversation, _msg(conversation, "anyone?"), "down-1"
            )
        assert caught.value.retryable is True
        with pytest.raises(FarSideError) as polled:
            await adapter.poll()
        assert polled.value.retryable is True
    finally:
        rt_peer.start()
    # Recovery: the same key is posted once.
    txn = await adapter.post_customer_message(
        ticket, conversation, _msg(conversation, "anyone?"), "down-1"
    )
    assert txn.isdigit()
