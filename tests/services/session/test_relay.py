"""The inbox relay (services/session/relay.py) against the real Redis: which
conversations it claims, what it sends, what it pops, and what a failure leaves behind.
The connector is a recording stand-in for the gRPC stub (the e2e tests run the real one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import redis.asyncio as aioredis

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.media import MediaLinks, MediaProxySettings
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.session.delivery import Delivery, Failure, RetryPolicy
from ccbridge.services.session.inbound import InboundContent
from ccbridge.services.session.relay import InboxRelay
from ccbridge.services.session.store import Lane, SessionStore
from tests.support.far_side import closed_port

Answer = Callable[[connector_pb2.CaseMessages], connector_pb2.CaseDeliveryResult]


def _message(mid: str, cid: str) -> common_pb2.Message:
    message = common_pb2.Message(
        id=mid, conversation_id=cid, channel="WHATSAPP", to="4470", content_type="TEXT"
    )
    setattr(message, "from", "3859")
    return message


def _all(case: connector_pb2.CaseMessages) -> connector_pb2.CaseDeliveryResult:
    return connector_pb2.CaseDeliveryResult(delivered=len(case.messages))


class FakeConnector:
    """Records PostCustomerMessages requests; answers with ``answer`` per case, or raises
    ``error``."""

    def __init__(self) -> None:
        self.requests: list[connector_pb2.PostCustomerMessagesRequest] = []
        self.answer: Answer = _all
        self.error: grpc.StatusCode | None = None

    async def PostCustomerMessages(
        self,
        request: connector_pb2.PostCustomerMessagesRequest,
        timeout: float,  # noqa: ASYNC109
    ) -> connector_pb2.PostCustomerMessagesResponse:
        self.requests.append(request)
        if self.error is not None:
            raise grpc.aio.AioRpcError(
                self.error, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom"
            )
        return connector_pb2.PostCustomerMessagesResponse(
            results=[self.answer(case) for case in request.cases]
        )

    def sent(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for request in self.requests:
            for case in request.cases:
                out.setdefault(case.conversation_id, []).extend(m.id for m in case.messages)
        return out


class RecordingDelivery(Delivery):
    """The shared failure handling, recording what it was given."""

    def __init__(self, store: SessionStore) -> None:
        super().__init__(store, RetryPolicy(base_ms=100, max_ms=1000, max_attempts=5))
        self.failures: list[tuple[str, str, int, Failure]] = []

    async def failed(
        self, lane: Lane, cid: str, token: str, payload: bytes, attempts: int, failure: Failure
    ) -> bool:
        assert lane is Lane.INBOX
        mid = common_pb2.Message.FromString(payload).id
        self.failures.append((cid, mid, attempts, failure))
        return await super().failed(lane, cid, token, payload, attempts, failure)


MEDIA_OFF = MediaProxySettings(
    enabled=False,
    public_url="",
    secrets=(),
    ttl_s=60,
    max_bytes=1,
)


class Setup:
    def __init__(self, r: aioredis.Redis, infobip_url: str = "", api_key: str = "k") -> None:
        infobip_url = infobip_url or f"http://127.0.0.1:{closed_port()}"
        self.r = r
        self.store = SessionStore(r)
        self.connector = FakeConnector()
        self.delivery = RecordingDelivery(self.store)
        self.failures = self.delivery.failures
        # Typed messages need no Infobip call; untyped ones read it (test_inbound.py).
        self.infobip = InfobipClient(infobip_url, Secret(api_key), max_retries=0)
        self.relay = InboxRelay(
            self.store,
            self.connector,  # type: ignore[arg-type]
            self.delivery,
            InboundContent(self.infobip, MediaLinks(MEDIA_OFF, infobip_url)),
            lease_ttl_ms=5000,
            call_timeout_s=5.0,
            window=32,
        )

    async def active(self, cid: str, *ids: str, state: str = "ACTIVE") -> None:
        assert await self.store.create(cid, [], {})
        ok, _ = await self.store.transition(
            cid,
            allowed=("OPENING",),
            new_state=state,
            values={"connector": "webhook", "external_id": f"CASE-{cid}"},
        )
        assert ok
        await self.store.ingest([_message(mid, cid) for mid in ids])

    async def inbox(self, cid: str) -> list[str]:
        return [
            common_pb2.Message.FromString(p).id
            for p in await self.store.peek(self.store.k_in(cid), 100)
        ]


@pytest.fixture
async def setup(redis_client: aioredis.Redis) -> AsyncIterator[Setup]:
    setup = Setup(redis_client)
    yield setup
    await setup.infobip.aclose()
    await setup.store.raw.aclose()


async def test_claims_only_inbox_only_conversations(setup: Setup) -> None:
    s = setup
    await s.active("ok", "m1", "m2")
    await s.active("empty")
    await s.active("closing", "m1", state="CLOSING")
    await s.active("agent", "m1")
    await s.store.queue_agent_message("agent", _message("a1", "agent"))
    await s.active("backoff", "m1")
    await s.store.transition("backoff", allowed=("ACTIVE",), values={"in_next_at": "9" * 13})
    await s.active("leased", "m1")
    token, _, _, _ = await s.store.begin_step(Lane.INBOX, "leased", 5000)
    assert token is not None
    assert await s.store.create("opening", [], {})

    claims, others = await s.relay.claim(
        ["ok", "empty", "closing", "agent", "backoff", "leased", "opening", "missing"]
    )
    # A queued agent message does not keep the inbox from the relay: the outbox is
    # another lane.
    assert [c.conversation_id for c in claims] == ["ok", "agent"]
    assert others == ["empty", "closing", "backoff", "leased", "opening", "missing"]
    claim = claims[0]
    assert (claim.connector, claim.external_id, claim.in_attempts) == ("webhook", "CASE-ok", 0)
    assert [common_pb2.Message.FromString(p).id for p in claim.head] == ["m1", "m2"]
    assert await s.r.get(s.store.k_lease(Lane.INBOX, "ok")) == claim.token.encode()
    # The lease keeps a second sweep (or replica) away.
    again, _ = await s.relay.claim(["ok"])
    assert again == []


async def test_delivers_in_order_pops_and_releases(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1", "a2", "a3")
    await s.active("b", "b1")
    await s.store.remember_transcript("a", ["a2"])  # already shown to the agent
    claims, _ = await s.relay.claim(["a", "b"])
    woke = await s.relay.deliver(claims)

    assert len(s.connector.requests) == 1  # one call for both conversations
    assert s.connector.sent() == {"a": ["a1", "a3"], "b": ["b1"]}
    assert await s.inbox("a") == [] and await s.inbox("b") == []
    assert await s.r.exists(s.store.k_lease(Lane.INBOX, "a"), s.store.k_lease(Lane.INBOX, "b")) == 0
    assert woke == []  # nothing left: both leave the schedule
    assert await s.r.zscore(s.store.k_due(Lane.INBOX, "a"), "a") is None
    assert s.failures == []


async def test_partial_failure_keeps_the_rest_in_order(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1", "a2", "a3")
    await s.active("b", "b1", "b2")

    def answer(case: connector_pb2.CaseMessages) -> connector_pb2.CaseDeliveryResult:
        if case.conversation_id == "a":
            return connector_pb2.CaseDeliveryResult(
                delivered=1, error="HTTP 503", retryable=True, retry_after_s=2.0
            )
        return _all(case)

    s.connector.answer = answer
    claims, _ = await s.relay.claim(["a", "b"])
    woke = await s.relay.deliver(claims)

    assert await s.inbox("a") == ["a2", "a3"]  # a1 accepted, a2 failed: a2 stays the head
    assert await s.inbox("b") == []
    assert [(cid, mid, attempts) for cid, mid, attempts, _ in s.failures] == [("a", "a2", 1)]
    failure = s.failures[0][3]
    assert failure.retryable and failure.retry_after == 2.0
    assert woke == ["a"]  # the full step takes over (and applies the back-off)
    assert await s.r.exists(s.store.k_lease(Lane.INBOX, "a")) == 0


async def test_a_failed_call_fails_every_case_and_pops_nothing(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1")
    await s.active("b", "b1")
    await s.store.transition("b", allowed=("ACTIVE",), values={"in_attempts": "3"})
    s.connector.error = grpc.StatusCode.UNAVAILABLE
    claims, _ = await s.relay.claim(["a", "b"])
    await s.relay.deliver(claims)
    assert await s.inbox("a") == ["a1"] and await s.inbox("b") == ["b1"]
    got = sorted((cid, attempts, f.retryable) for cid, _mid, attempts, f in s.failures)
    assert got == [("a", 1, True), ("b", 4, True)]  # b's earlier attempts count


async def test_success_after_retries_resets_the_counter(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1")
    await s.store.transition(
        "a", allowed=("ACTIVE",), values={"in_attempts": "2", "in_next_at": "1"}
    )
    claims, _ = await s.relay.claim(["a"])
    await s.relay.deliver(claims)
    rec = await s.store.get("a")
    assert rec is not None and rec.get_int("in_attempts") == 0
    assert await s.inbox("a") == []


async def test_a_lost_lease_pops_nothing(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1")
    claims, _ = await s.relay.claim(["a"])
    await s.r.set(s.store.k_lease(Lane.INBOX, "a"), "someone-else")  # expired, taken over
    await s.relay.deliver(claims)
    assert await s.inbox("a") == ["a1"]  # the new holder delivers it (same key: one effect)
    assert await s.r.get(s.store.k_lease(Lane.INBOX, "a")) == b"someone-else"


async def test_an_older_connector_falls_back_to_the_full_step(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1")
    s.connector.error = grpc.StatusCode.UNIMPLEMENTED
    claims, _ = await s.relay.claim(["a"])
    woke = await s.relay.deliver(claims)
    assert s.failures == []  # not the message's fault: no attempt counted
    assert await s.inbox("a") == ["a1"] and woke == ["a"]
    claims, others = await s.relay.claim(["a"])
    assert claims == [] and others == ["a"]  # one call per message for a while


async def test_survives_a_flushed_script_cache(setup: Setup) -> None:
    s = setup
    await s.active("a", "a1", "a2")
    await s.r.script_flush()
    claims, _ = await s.relay.claim(["a"])
    await s.r.script_flush()
    await s.relay.deliver(claims)
    assert s.connector.sent() == {"a": ["a1", "a2"]}
    assert await s.inbox("a") == []


async def test_short_without_an_error_is_not_a_failure(setup: Setup) -> None:
    """A connector that ran out of time answers fewer than sent and no error: what it
    took is popped, the rest waits for the next batch with no attempt counted."""
    s = setup
    await s.active("a", "a1", "a2", "a3")
    s.connector.answer = lambda case: connector_pb2.CaseDeliveryResult(delivered=1)
    claims, _ = await s.relay.claim(["a"])
    woke = await s.relay.deliver(claims)
    assert await s.inbox("a") == ["a2", "a3"]
    assert s.failures == [] and woke == ["a"]
    rec = await s.store.get("a")
    assert rec is not None and rec.get_int("in_attempts") == 0
