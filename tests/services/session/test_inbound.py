"""Inbound messages made ready for the CCaaS (services/session/inbound.py), against the
Infobip simulator on loopback: a Subscriptions message's type read with Get Messages
(``messageIds``), never guessed; a failed or empty read is a retryable failure; media
URLs on Infobip become gateway links, others stay; the relay delivers an untyped
message with Infobip's type, and drops one Infobip lists as a TYPING_INDICATOR."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import orjson
import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.media import InfobipFile, MediaLinks, MediaProxySettings, verify
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.session.delivery import Failure
from ccbridge.services.session.inbound import InboundContent
from ccbridge.simulators.infobip import Failure as SimFailure
from tests.services.session.test_relay import MEDIA_OFF, Setup
from tests.simulators.ccaas.support import serve_app
from tests.simulators.infobip.harness import API_KEY, Sim, served_sim
from tests.support.far_side import Recorder

SECRET = Secret("media-secret-0123456789abcdef")
MEDIA_ON = MediaProxySettings(
    enabled=True,
    public_url="https://bridge.example.com",
    secrets=(SECRET,),
    ttl_s=3600,
    max_bytes=1 << 20,
)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with served_sim() as sim:
        yield sim


def event_message(sent: dict[str, object]) -> common_pb2.Message:
    """What the gateway makes of a Subscriptions event: everything but the type."""
    return common_pb2.Message(
        id=str(sent["id"]),
        conversation_id=str(sent["conversationId"]),
        direction=common_pb2.DIRECTION_INBOUND,
        channel=str(sent["channel"]),
        content_json=orjson.dumps(sent["content"]).decode(),
    )


async def test_types_are_read_once_per_conversation(sim: Sim) -> None:
    conversation = sim.state.create_conversation(channel="WHATSAPP", history=3)
    sent = [
        sim.state.end_user_message(conversation.id, kind, content)[0]
        for kind, content in (
            ("IMAGE", {"url": "https://cdn.example.com/blob", "caption": "the parcel"}),
            ("DOCUMENT", {"url": "https://cdn.example.com/invoice"}),
            ("LOCATION", {"latitude": 51.178844, "longitude": -1.826323, "address": "A"}),
        )
    ]
    typed = common_pb2.Message(id="already", conversation_id=conversation.id, content_type="TEXT")
    client = sim.client()
    try:
        inbound = InboundContent(client, MediaLinks(MEDIA_OFF, sim.url or ""))
        ready = await inbound.ready(conversation.id, [*map(event_message, sent), typed])
    finally:
        await client.aclose()
    assert [m.content_type for m in ready] == ["IMAGE", "DOCUMENT", "LOCATION", "TEXT"]
    assert orjson.loads(ready[2].content_json)["latitude"] == 51.178844
    assert ready[3] == typed


async def test_one_get_messages_call_with_message_ids(sim: Sim) -> None:
    conversation = sim.state.create_conversation(channel="WHATSAPP")
    sent = [
        sim.state.end_user_message(conversation.id, "AUDIO", {"url": f"https://x/{i}"})[0]
        for i in range(3)
    ]
    recorder = Recorder(sim.app)
    async with serve_app(recorder) as url:
        client = InfobipClient(url, Secret(API_KEY), max_retries=0)
        try:
            inbound = InboundContent(client, MediaLinks(MEDIA_OFF, url))
            ready = await inbound.ready(conversation.id, [event_message(m) for m in sent])
        finally:
            await client.aclose()
    assert [m.content_type for m in ready] == ["AUDIO"] * 3
    [call] = recorder.requests
    assert call.method == "GET" and call.path.endswith("/messages")
    assert parse_qs(call.query)["messageIds"] == [m["id"] for m in sent]


async def test_a_message_infobip_does_not_list_is_never_typed(sim: Sim) -> None:
    conversation = sim.state.create_conversation(channel="WHATSAPP")
    unknown = common_pb2.Message(id="not-at-infobip", conversation_id=conversation.id)
    client = sim.client(max_retries=0)
    try:
        inbound = InboundContent(client, MediaLinks(MEDIA_OFF, sim.url or ""))
        with pytest.raises(Failure) as caught:
            await inbound.ready(conversation.id, [unknown])
        assert caught.value.retryable and "not-at-infobip" in str(caught.value)
        sim.state.inject_failure(SimFailure(remaining=1, status=500))
        with pytest.raises(Failure) as failed:
            await inbound.ready(conversation.id, [unknown])
        assert failed.value.retryable and "GetMessages" in str(failed.value)
    finally:
        await client.aclose()


async def test_media_on_infobip_becomes_a_gateway_link(sim: Sim) -> None:
    assert sim.url is not None
    conversation = sim.state.create_conversation(channel="RCS")
    on_infobip = f"{sim.url}/_sim/media/abc"
    message = common_pb2.Message(
        id="m1",
        conversation_id=conversation.id,
        content_type="RCS_FILE",
        content_json=orjson.dumps(
            {"file": {"url": on_infobip}, "thumbnail": {"url": "https://cdn.example.com/t"}}
        ).decode(),
    )
    client = sim.client()
    try:
        inbound = InboundContent(client, MediaLinks(MEDIA_ON, sim.url))
        [ready] = await inbound.ready(conversation.id, [message])
    finally:
        await client.aclose()
    content = orjson.loads(ready.content_json)
    link = content["file"]["url"]
    assert link.startswith("https://bridge.example.com/media/")
    assert verify([SECRET], link.rsplit("/", 1)[1], now=time.time()) == InfobipFile(on_infobip)
    assert content["thumbnail"]["url"] == "https://cdn.example.com/t"  # not Infobip's: as is
    assert orjson.loads(message.content_json)["file"]["url"] == on_infobip  # input unchanged
    huge = f"{sim.url}/_sim/media/{'x' * 4000}"
    assert MediaLinks(MEDIA_ON, sim.url).link(huge) == huge  # too long for a link: as is


async def test_the_relay_delivers_an_untyped_message_with_infobips_type(
    sim: Sim, redis_client: aioredis.Redis
) -> None:
    assert sim.url is not None
    conversation = sim.state.create_conversation(channel="WHATSAPP")
    sent, _ = sim.state.end_user_message(
        conversation.id, "CONTACT", {"contacts": [{"name": {"first_name": "Ana"}}]}
    )
    s = Setup(redis_client, sim.url, API_KEY)
    try:
        await s.active(conversation.id)
        await s.store.ingest([event_message(sent)])
        claims, _ = await s.relay.claim([conversation.id])
        await s.relay.deliver(claims)
        [request] = s.connector.requests
        [delivered] = request.cases[0].messages
        assert delivered.content_type == "CONTACT"
        assert await s.inbox(conversation.id) == []
        # Infobip failing: nothing posted, the message stays, the failure is counted.
        video, _ = sim.state.end_user_message(conversation.id, "VIDEO", {"url": "https://x/v"})
        await s.store.ingest([event_message(video)])
        sim.state.inject_failure(SimFailure(remaining=10, status=500))
        claims, _ = await s.relay.claim([conversation.id])
        await s.relay.deliver(claims)
        assert len(s.connector.requests) == 1
        assert len(await s.inbox(conversation.id)) == 1
        [(_, _, attempts, failure)] = s.failures
        assert attempts == 1 and failure.retryable
    finally:
        await s.infobip.aclose()
        await s.store.raw.aclose()


async def test_a_typing_indicator_read_back_is_dropped_not_delivered(
    sim: Sim, redis_client: aioredis.Redis
) -> None:
    """The Subscriptions webhook has no typing event: an end user's typing comes as a
    message event, its type read back only at delivery. It leaves the inbox unposted, by
    the relay and by the full step's one-message path alike; the text after it goes."""
    assert sim.url is not None
    conversation = sim.state.create_conversation(channel="WHATSAPP")
    typing, _ = sim.state.end_user_message(conversation.id, "TYPING_INDICATOR", {})
    text, _ = sim.state.end_user_message(conversation.id, "TEXT", {"text": "hello?"})
    s = Setup(redis_client, sim.url, API_KEY)
    try:
        await s.active(conversation.id)
        await s.store.ingest([event_message(typing), event_message(text)])
        claims, _ = await s.relay.claim([conversation.id])
        await s.relay.deliver(claims)
        assert s.connector.sent() == {conversation.id: [text["id"]]}
        assert await s.inbox(conversation.id) == []
        assert s.failures == []
        # Only a typing indicator waiting: no call at all, and it still leaves the inbox.
        again, _ = sim.state.end_user_message(conversation.id, "TYPING_INDICATOR", {})
        await s.store.ingest([event_message(again)])
        claims, _ = await s.relay.claim([conversation.id])
        await s.relay.deliver(claims)
        assert len(s.connector.requests) == 1
        assert await s.inbox(conversation.id) == []
        inbound = InboundContent(s.infobip, MediaLinks(MEDIA_OFF, sim.url))
        [ready] = await inbound.ready(conversation.id, [event_message(again)])
        assert inbound.dropped(ready) and not inbound.dropped(event_message(text))
    finally:
        await s.infobip.aclose()
        await s.store.raw.aclose()
