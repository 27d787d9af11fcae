"""The delivery lanes (services/session/delivery.py) with a running Session worker, a real
Redis, a connector gRPC double on loopback and the Infobip simulator over loopback HTTP:
the outbox is leased and scheduled apart from the inbox, fencing tokens keep a stale
holder out, and the relay and the lane step share one failure handling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.history.v1 import history_pb2_grpc
from ccbridge.routing.v1 import routing_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.lease import Lease
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.session.__main__ import RunningSession, build
from ccbridge.services.session.settings import SessionSettings
from ccbridge.services.session.store import Lane, SessionStore, now_ms
from ccbridge.services.session.worker import ConversationWorker, Peers
from ccbridge.simulators.infobip.server import start_server
from ccbridge.simulators.infobip.state import InfobipSimState
from tests.services.session.conftest import session_settings

END_USER, SENDER = "385981234567", "447492263897"


@dataclass
class ConnectorDouble(connector_pb2_grpc.ConnectorServiceServicer):
    """The connector's delivery RPCs: record, or hang until ``gate`` opens, or fail."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    posting: asyncio.Event = field(default_factory=asyncio.Event)  # a post is waiting
    fail: grpc.StatusCode | None = None
    received: list[tuple[str, str]] = field(default_factory=list)
    batch_calls: int = 0
    single_calls: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    async def _answer(self, context: grpc.aio.ServicerContext) -> None:
        self.posting.set()
        await self.gate.wait()
        if self.fail is not None:
            await context.abort(self.fail, "refused on purpose")

    async def PostCustomerMessages(
        self,
        request: connector_pb2.PostCustomerMessagesRequest,
        context: grpc.aio.ServicerContext,
    ) -> connector_pb2.PostCustomerMessagesResponse:
        self.batch_calls += 1
        await self._answer(context)
        results = []
        for case in request.cases:
            self.received += [(case.conversation_id, m.id) for m in case.messages]
            results.append(connector_pb2.CaseDeliveryResult(delivered=len(case.messages)))
        return connector_pb2.PostCustomerMessagesResponse(results=results)

    async def PostCustomerMessage(
        self,
        request: connector_pb2.PostCustomerMessageRequest,
        context: grpc.aio.ServicerContext,
    ) -> connector_pb2.PostCustomerMessageResponse:
        self.single_calls += 1
        await self._answer(context)
        self.received.append((request.conversation_id, request.message.id))
        return connector_pb2.PostCustomerMessageResponse()


@dataclass
class World:
    redis: aioredis.Redis
    store: SessionStore
    connector: ConnectorDouble
    infobip: InfobipSimState
    session: RunningSession
    infobip_url: str
    connector_port: int
    settings: SessionSettings

    async def active(self, *inbound: str, agent_id: str | None = None) -> str:
        """An ACTIVE handover of a fresh Infobip conversation (assigned to ``agent_id``),
        with inbound messages."""
        cid = self.infobip.create_conversation(
            end_user=END_USER, business_sender=SENDER, agent_id=agent_id
        ).id
        assert await self.store.create(cid, [], {})
        ok, _ = await self.store.transition(
            cid,
            allowed=("OPENING",),
            new_state="ACTIVE",
            values={
                "connector": "webhook",
                "external_id": f"CASE-{cid}",
                "channel": "WHATSAPP",
                "end_user": END_USER,
                "business_sender": SENDER,
            },
        )
        assert ok
        if inbound:
            await self.ingest(cid, *inbound)
        return cid

    async def ingest(self, cid: str, *ids: str) -> None:
        messages = []
        for mid in ids:
            m = common_pb2.Message(
                id=mid, conversation_id=cid, channel="WHATSAPP", to=SENDER, content_type="TEXT"
            )
            setattr(m, "from", END_USER)
            messages.append(m)
        await self.store.ingest(messages)
        if self.session.parts.worker is not None:
            self.session.parts.worker.wake([cid], [Lane.INBOX])

    async def reply(self, cid: str, text: str) -> None:
        message = common_pb2.Message(
            id=f"agent-{text}", content_type="TEXT", content_json=f'{{"text": "{text}"}}'
        )
        assert await self.store.queue_agent_message(cid, message)
        assert self.session.parts.worker is not None
        self.session.parts.worker.wake([cid], [Lane.OUTBOX])

    def replies(self, cid: str) -> list[str]:
        return [m["content"]["text"] for m in self.infobip.agent_messages(cid)]


async def eventually(what: str, probe: Callable[[], Any]) -> Any:
    """Polls ``probe`` until truthy (the bound only ends a broken test; no timing check)."""
    for _ in range(600):
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running_world(
    redis_url: str, redis_client: aioredis.Redis, *, workers: bool, **overrides: str
) -> AsyncIterator[World]:
    double = ConnectorDouble()  # type: ignore[abstract]  # only the delivery RPCs
    server = grpc.aio.server()
    connector_pb2_grpc.add_ConnectorServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    infobip = InfobipSimState(seed=3)
    sim = await start_server(infobip, api_key="test-key")
    env = {
        "CCBRIDGE_WORKERS_ENABLED": "true" if workers else "false",
        "CONNECTOR_ADDR": f"127.0.0.1:{port}",
        "INFOBIP_BASE_URL": sim.url,
        "CCBRIDGE_SCHEDULER_POLL_MS": "20",
        "CCBRIDGE_RETRY_BASE_MS": "60000",  # a failed head stays in back-off for the test
        "CCBRIDGE_RETRY_MAX_MS": "60000",
        "CCBRIDGE_RECONCILE_INFOBIP": "false",
    }
    settings = session_settings(redis_url, **{**env, **overrides})
    running = await start(build, settings)
    try:
        yield World(
            redis_client, running.parts.store, double, infobip, running, sim.url, port, settings
        )
    finally:
        double.gate.set()
        await running.stop()
        await sim.stop()
        await infobip.aclose()
        await server.stop(0)


@pytest.fixture
async def world(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with running_world(redis_url, redis_client, workers=True) as handle:
        yield handle


@pytest.fixture
async def idle_world(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    """No worker running: the test drives the delivery paths itself."""
    async with running_world(redis_url, redis_client, workers=False) as handle:
        yield handle


async def test_agent_reply_is_sent_while_a_relay_batch_holds_the_inbox(world: World) -> None:
    """The relay's batch waits on a hanging CCaaS with the inbox lease held; the agent's
    reply of the same conversation goes out meanwhile, under the outbox lease."""
    w = world
    w.connector.gate.clear()  # the CCaaS hangs
    cid = await w.active("m1", "m2")
    await eventually("the relay's post", w.connector.posting.is_set)
    inbox_lease = await w.redis.get(w.store.k_lease(Lane.INBOX, cid))
    assert inbox_lease is not None

    await w.reply(cid, "hello")
    await eventually("the agent reply at Infobip", lambda: w.replies(cid) == ["hello"])
    # Still the same batch, still waiting: the reply did not wait for it.
    assert not w.connector.received
    assert await w.redis.get(w.store.k_lease(Lane.INBOX, cid)) == inbox_lease
    assert w.connector.batch_calls == 1 and w.connector.single_calls == 0

    w.connector.gate.set()
    await eventually("the inbox at the CCaaS", lambda: len(w.connector.received) == 2)
    assert w.connector.received == [(cid, "m1"), (cid, "m2")]
    assert w.replies(cid) == ["hello"]


async def test_agent_reply_is_not_held_by_the_inbox_back_off(world: World) -> None:
    """A CCaaS outage puts the inbox in back-off (a minute here); the agent's replies
    are scheduled at once all the same, in order."""
    w = world
    w.connector.fail = grpc.StatusCode.UNAVAILABLE
    cid = await w.active("m1")

    async def in_back_off() -> bool:
        rec = await w.store.get(cid)
        return rec is not None and rec.get_int("in_next_at") > now_ms()

    async def inbox_due_later() -> bool:
        due = await w.redis.zscore(w.store.k_due(Lane.INBOX, cid), cid)
        return due is not None and due > now_ms() + 10_000

    await eventually("the inbox's back-off", in_back_off)
    # (The relay hands the failure to the lane step, which schedules the retry.)
    await eventually("the inbox scheduled after its back-off", inbox_due_later)

    await w.reply(cid, "one")
    await w.reply(cid, "two")
    await eventually("both replies", lambda: w.replies(cid) == ["one", "two"])
    # Infobip has both before the outbox pops the last one; the inbox still waits.

    async def outbox_done() -> bool:
        return await w.store.queue_lengths(cid) == (1, 0)

    await eventually("the outbox done", outbox_done)
    assert w.connector.received == []


async def test_a_stale_token_cannot_finish_or_write_after_a_new_holder(
    redis_client: aioredis.Redis,
) -> None:
    """A holder paused past its lease keeps its token; once another holder took the lane
    its pops, finishes, transitions, dead letters and renewals are all refused."""
    store = SessionStore(redis_client)
    assert await store.create("c1", [], {})
    assert (await store.transition("c1", allowed=("OPENING",), new_state="ACTIVE"))[0]
    m1 = common_pb2.Message(id="m1", conversation_id="c1")
    await store.ingest([m1])
    head = m1.SerializeToString()

    stale, _, _, _ = await store.begin_step(Lane.INBOX, "c1", 60_000)
    assert stale is not None
    await redis_client.delete(store.k_lease(Lane.INBOX, "c1"))  # it expired
    fresh, _, _, _ = await store.begin_step(Lane.INBOX, "c1", 60_000)
    assert fresh is not None and int(fresh) > int(stale)  # fencing: always larger

    assert await store.pop_head(Lane.INBOX, "c1", stale, head) == -1
    assert await store.dead_letter(Lane.INBOX, "c1", stale, head, "x", 1) is False
    assert await redis_client.zcard(store.k_dlq) == 0  # the record written first is undone
    ok, why = await store.transition(
        "c1", allowed=("ACTIVE",), lease_token=stale, values={"in_attempts": "9"}
    )
    assert (ok, why) == (False, "lease")
    assert not await store.renew_lease(Lane.INBOX, "c1", stale, 60_000)
    await store.release_lease(Lane.INBOX, "c1", stale)  # a no-op for the stale holder
    assert await redis_client.get(store.k_lease(Lane.INBOX, "c1")) == fresh.encode()
    assert await store.queue_lengths("c1") == (1, 0)
    rec = await store.get("c1")
    assert rec is not None and rec.get_int("in_attempts") == 0

    # The outbox lane is another lease: the inbox's holder does not keep it.
    out, _, _, _ = await store.begin_step(Lane.OUTBOX, "c1", 60_000)
    assert out is not None
    # The fresh holder finishes normally.
    assert await store.pop_head(Lane.INBOX, "c1", fresh, head) == 1
    await store.raw.aclose()


async def test_a_stale_token_cannot_renew_or_release_a_runtime_lease(
    redis_client: aioredis.Redis,
) -> None:
    first = Lease(redis_client, "t:lease:{q}", 60_000)
    second = Lease(redis_client, "t:lease:{q}", 60_000)
    a = await first.acquire()
    assert a is not None and await second.acquire() is None
    await redis_client.delete(first.key)  # expired while the first holder was paused
    b = await second.acquire()
    assert b is not None and int(b) > int(a)
    assert not await first.renew()  # refused, and forgotten
    assert first.token is None
    await first.release()
    assert await redis_client.get(second.key) == b.encode()
    assert await second.hold() == b  # renewed


@pytest.mark.parametrize(
    ("code", "dead_lettered"),
    [(grpc.StatusCode.UNAVAILABLE, False), (grpc.StatusCode.FAILED_PRECONDITION, True)],
)
async def test_relay_and_lane_step_share_one_failure_handling(
    idle_world: World, code: grpc.StatusCode, dead_lettered: bool
) -> None:
    """The same connector failure, met by the batched relay for one conversation and by
    the inbox lane's own step for another, leaves both in the same state: a back-off
    with one attempt counted, or the head in the dead letters and the handover flagged."""
    w = idle_world
    channel = create_channel(f"127.0.0.1:{w.connector_port}", INSECURE, "connector")
    infobip = InfobipClient(w.infobip_url, Secret("test-key"))
    peers = Peers(
        history_pb2_grpc.HistoryServiceStub(channel),
        routing_pb2_grpc.RoutingServiceStub(channel),
        connector_pb2_grpc.ConnectorServiceStub(channel),
        infobip,
    )
    worker = ConversationWorker(w.store, peers, w.settings)  # not started
    w.connector.fail = code
    by_relay = await w.active("r1")
    by_step = await w.active("s1")

    claims, others = await worker.relay.claim([by_relay])
    assert [c.conversation_id for c in claims] == [by_relay] and others == []
    await worker.relay.deliver(claims)
    await worker.run_step(Lane.INBOX, by_step)
    # (The channel itself retries UNAVAILABLE a few times: each path made its call.)
    assert w.connector.batch_calls >= 1 and w.connector.single_calls >= 1

    for cid, first in ((by_relay, "r1"), (by_step, "s1")):
        rec = await w.store.get(cid)
        assert rec is not None
        assert await w.redis.exists(w.store.k_lease(Lane.INBOX, cid)) == 0  # released
        assert code.name in rec.get("failure_reason")
        letters, _ = await w.store.list_dead_letters(cid, 0, 10)
        if dead_lettered:
            assert [common_pb2.Message.FromString(d.message).id for d in letters] == [first]
            assert letters[0].attempts == 1 and letters[0].queue == "inbox"
            assert rec.get("flagged") == "dead_letters"
            assert rec.get_int("dead_letters") == 1
        else:
            assert letters == []
            assert rec.get_int("in_attempts") == 1
            assert rec.get_int("in_next_at") > now_ms()
            assert await w.store.queue_lengths(cid) == (1, 0)
    await infobip.aclose()
    await channel.close()
