"""The gateway's HTTP edge with tracing on: one server span per request, named by the
route template (the raw path holds the webhook token, which no span attribute carries),
with the conversation id as an attribute, and each ingested message carrying that
span's trace context for its delivery (services/runtime/tracing.py)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from ccbridge.connector.v1 import connector_pb2
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, running_gateway
from tests.gateway.test_infobip_legacy import CONV, URL, infobip_message, ingested
from tests.support.tracing import traced


async def test_a_webhook_is_one_server_span_and_its_messages_carry_its_context(
    peers: Peers,
) -> None:
    peers.session.open(CONV)
    with traced("gateway") as (_tracing, exporter):
        async with running_gateway(peers.env()) as (client, _app):
            response = await client.post(URL, json=infobip_message("m-traced"))
            assert response.status_code == 200
            probe = await client.get("/healthz")
            assert probe.status_code == 200
        finished = exporter.get_finished_spans()
    [server] = [s for s in finished if s.kind is SpanKind.SERVER]  # none for /healthz
    assert server.name == "POST /webhooks/infobip/{token}"
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "/webhooks/infobip/{token}"
    assert attributes["ccbridge.conversation_id"] == CONV
    for span in finished:
        for value in (span.attributes or {}).values():
            assert WEBHOOK_TOKEN not in str(value), (span.name, value)
    [message] = ingested(peers)
    context = server.context
    assert context is not None
    assert message.trace_parent == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )
    # The messages went over a long-lived IngestStream: opened by this request, it
    # belongs to no request's trace (each message carries its own context instead).
    [stream] = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert stream.name.endswith("/IngestStream")
    assert stream.parent is None and stream.context.trace_id != context.trace_id


async def test_a_callers_trace_context_is_ignored_but_passed_on_untouched(peers: Peers) -> None:
    """The public edge starts its own trace: a caller picks no trace id, forces no
    sampling and sends no baggage through the mesh; the app still sees every header."""
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with traced("gateway") as (_tracing, exporter):
        async with running_gateway(peers.env()) as (client, _app):
            response = await client.post(
                "/webhooks/ccaas/rt",
                content=b"{}",
                headers={"traceparent": theirs, "baggage": "tenant=evil"},
            )
            assert response.status_code == 200
        finished = exporter.get_finished_spans()
    [server] = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.name == "POST /webhooks/ccaas/{connector}"
    assert server.parent is None
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" != theirs.split("-")[1]
    [call] = peers.connector.calls
    request = call.request
    assert isinstance(request, connector_pb2.HandleWebhookRequest)
    headers = {h.name: h.value for h in request.headers}
    assert (headers["traceparent"], headers["baggage"]) == (theirs, "tenant=evil")
