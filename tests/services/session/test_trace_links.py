"""Trace context through the Redis queue (services/runtime/tracing.py): each queued
message keeps the W3C ``traceparent`` of the request that queued it, and the relay's
delivery span — one for a batch of many conversations — is a child of the first
message's context and links to every message's context. Real Redis, a real gRPC
connector double on loopback, both instrumented as in a component; spans in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.media import MediaLinks
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.server import create_server
from ccbridge.services.runtime.settings import Secret
from ccbridge.services.runtime.tracing import Tracing, traceparent
from ccbridge.services.session.inbound import InboundContent
from ccbridge.services.session.relay import InboxRelay
from ccbridge.services.session.store import SessionStore
from tests.services.session.test_relay import MEDIA_OFF, RecordingDelivery, _message
from tests.support.far_side import closed_port
from tests.support.tracing import traced


class Connector(connector_pb2_grpc.ConnectorServiceServicer):
    """Accepts every message of every case; records the cases."""

    def __init__(self) -> None:
        self.cases: list[connector_pb2.CaseMessages] = []

    async def PostCustomerMessages(
        self,
        request: connector_pb2.PostCustomerMessagesRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.PostCustomerMessagesRequest, connector_pb2.PostCustomerMessagesResponse
        ],
    ) -> connector_pb2.PostCustomerMessagesResponse:
        self.cases.extend(request.cases)
        return connector_pb2.PostCustomerMessagesResponse(
            results=[
                connector_pb2.CaseDeliveryResult(delivered=len(case.messages))
                for case in request.cases
            ]
        )


@dataclass
class Traced:
    tracing: Tracing
    spans: InMemorySpanExporter
    store: SessionStore
    relay: InboxRelay
    connector: Connector


@pytest.fixture
async def traced_relay(redis_client: aioredis.Redis) -> AsyncIterator[Traced]:
    with traced("session") as (tracing, spans):
        connector = Connector()  # type: ignore[abstract]

        def register(server: grpc.aio.Server) -> list[str]:
            connector_pb2_grpc.add_ConnectorServiceServicer_to_server(connector, server)
            return ["ccbridge.connector.v1.ConnectorService"]

        server, port, _health = create_server("127.0.0.1:0", register, tls=INSECURE)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        store = SessionStore(redis_client)
        infobip_url = f"http://127.0.0.1:{closed_port()}"
        infobip = InfobipClient(infobip_url, Secret("k"), max_retries=0)
        relay = InboxRelay(
            store,
            connector_pb2_grpc.ConnectorServiceStub(channel),  # type: ignore[arg-type]
            RecordingDelivery(store),
            InboundContent(infobip, MediaLinks(MEDIA_OFF, infobip_url)),
            lease_ttl_ms=5000,
            call_timeout_s=5.0,
            window=32,
        )
        try:
            yield Traced(tracing, spans, store, relay, connector)
        finally:
            await infobip.aclose()
            await store.raw.aclose()
            await channel.close()
            await server.stop(0)


async def _active(store: SessionStore, cid: str) -> None:
    assert await store.create(cid, [], {})
    ok, _ = await store.transition(
        cid,
        allowed=("OPENING",),
        new_state="ACTIVE",
        values={"connector": "webhook", "external_id": f"CASE-{cid}"},
    )
    assert ok


def _queued(mid: str, cid: str, trace_parent: str) -> common_pb2.Message:
    message = _message(mid, cid)
    message.trace_parent = trace_parent
    return message


def _named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


async def test_the_relay_span_links_every_message_it_carries(traced_relay: Traced) -> None:
    t = traced_relay
    for cid in ("conv-a", "conv-b", "conv-c"):
        await _active(t.store, cid)
    tracer = t.tracing.tracer
    # Two webhook requests queue three messages; then a message queued before tracing
    # existed (no context: the stored format it had) and one with a broken context.
    with tracer.start_as_current_span("webhook A", kind=SpanKind.SERVER):
        queued_by_a = traceparent()
        await t.store.ingest([_queued("a1", "conv-a", queued_by_a)])
        await t.store.ingest([_queued("a2", "conv-a", queued_by_a)])
    with tracer.start_as_current_span("webhook B", kind=SpanKind.SERVER):
        await t.store.ingest([_queued("b1", "conv-b", traceparent())])
    await t.store.ingest([_message("c1", "conv-c"), _queued("c2", "conv-c", "00-broken")])
    webhook_a = _named(t.spans, "webhook A").context
    webhook_b = _named(t.spans, "webhook B").context
    assert webhook_a is not None and webhook_b is not None
    t.spans.clear()

    claims, others = await t.relay.claim(["conv-a", "conv-b", "conv-c"])
    assert len(claims) == 3 and others == []
    assert await t.relay.deliver(claims) == []

    # Every message was delivered, those without a usable context too.
    assert sorted(m.id for case in t.connector.cases for m in case.messages) == [
        "a1",
        "a2",
        "b1",
        "c1",
        "c2",
    ]
    relay = _named(t.spans, "session.relay inbox")
    links = sorted(
        (
            link.context.span_id,
            dict(link.attributes or {})["ccbridge.conversation_id"],
            dict(link.attributes or {})["ccbridge.message_id"],
        )
        for link in relay.links
    )
    assert links == sorted(
        [
            (webhook_a.span_id, "conv-a", "a1"),
            (webhook_a.span_id, "conv-a", "a2"),
            (webhook_b.span_id, "conv-b", "b1"),
        ]
    )
    assert all(
        link.context.trace_id in (webhook_a.trace_id, webhook_b.trace_id) for link in relay.links
    )
    # A child of the first message's context: webhook A's trace goes on to the connector.
    assert relay.parent is not None and relay.parent.span_id == webhook_a.span_id
    assert relay.context is not None and relay.context.trace_id == webhook_a.trace_id
    attributes = dict(relay.attributes or {})
    assert attributes["ccbridge.message_count"] == 5
    assert "ccbridge.conversation_id" not in attributes  # three conversations
    calls = [s for s in t.spans.get_finished_spans() if s.name.endswith("/PostCustomerMessages")]
    client = next(s for s in calls if s.kind is SpanKind.CLIENT)
    server = next(s for s in calls if s.kind is SpanKind.SERVER)
    assert client.parent is not None and client.parent.span_id == relay.context.span_id
    assert server.context is not None and server.context.trace_id == webhook_a.trace_id
    # The relay's Redis round trips (Session's own pipelined writer) are spans of it too,
    # named by their commands only.
    round_trips = [
        s
        for s in t.spans.get_finished_spans()
        if s.kind is SpanKind.CLIENT
        and s.instrumentation_scope is not None
        and s.instrumentation_scope.name == "ccbridge"
    ]
    inside = [s for s in round_trips if s.parent and s.parent.span_id == relay.context.span_id]
    assert inside  # the claim before it is a round trip of no trace
    for span in round_trips:
        assert dict(span.attributes or {})["db.system"] == "redis"
        assert all(word.isalpha() and word.isupper() for word in span.name.split()), span.name


async def test_one_conversation_gives_the_relay_span_its_id(traced_relay: Traced) -> None:
    t = traced_relay
    await _active(t.store, "conv-solo")
    await t.store.ingest([_message("s1", "conv-solo")])  # queued with tracing off
    claims, _ = await t.relay.claim(["conv-solo"])
    await t.relay.deliver(claims)
    relay = _named(t.spans, "session.relay inbox")
    assert dict(relay.attributes or {})["ccbridge.conversation_id"] == "conv-solo"
    assert not relay.links
    assert relay.parent is None  # nothing to continue: a trace of its own
