"""End to end with tracing on: the whole mesh as processes, exporting OTLP/gRPC to a
receiver double in the test. One trace runs from an Infobip webhook through the gateway,
Session (the message waits in Redis in between) and the connector to the CCaaS post, and
one from an agent reply through the gateway, the connector and Session to Infobip's
Create Message, with the conversation id as a span attribute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.mesh import Mesh, running_mesh, wait_for
from tests.support.tracing import OtlpReceiver, attributes

pytestmark = pytest.mark.e2e

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
CID = "ccbridge.conversation_id"
Spans = list[tuple[str, trace_pb2.Span]]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def mesh(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[Mesh]:
    log_dir = Path(tmp_path_factory.mktemp("mesh-logs"))
    tracing = {
        "CCBRIDGE_TRACING": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running_mesh(redis_url, log_dir, tracing) as handle:
        yield handle


def _url(span: trace_pb2.Span) -> str:
    found = attributes(span)
    return str(found.get("url.full") or found.get("http.url") or "")


def _trace(spans: Spans, trace_id: bytes) -> Spans:
    return [(service, span) for service, span in spans if span.trace_id == trace_id]


def _carries(span: trace_pb2.Span, cid: str) -> bool:
    """The span is about conversation ``cid``: its attribute, or one of its links'."""
    if attributes(span).get(CID) == cid:
        return True
    return any(
        a.key == CID and a.value.string_value == cid for link in span.links for a in link.attributes
    )


def _active(mesh: Mesh) -> tuple[str, str]:
    cid = mesh.conversation(history=1)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    case = mesh.case_for(cid)
    assert case is not None
    return cid, case["caseId"]


def test_one_trace_from_the_infobip_webhook_to_the_ccaas_post(
    mesh: Mesh, receiver: OtlpReceiver
) -> None:
    cid, _case = _active(mesh)
    mesh.send(cid, "traced hello")
    wait_for("the CCaaS post", lambda: "traced hello" in mesh.customer_texts(cid))
    ccaas = f"127.0.0.1:{mesh.ports['ccaas-sim']}/webhook"

    def inbound_trace() -> Spans | None:
        spans = receiver.spans()
        webhooks = [
            span
            for service, span in spans
            if service == "ccbridge-gateway"
            and span.kind == SERVER
            and str(attributes(span).get("http.route", "")).startswith("/webhooks/infobip")
            and attributes(span).get(CID) == cid
        ]
        for webhook in webhooks:
            found = _trace(spans, webhook.trace_id)
            delivered = any(
                service == "ccbridge-session"
                and span.name in ("session.relay inbox", "session.deliver inbox")
                and _carries(span, cid)
                for service, span in found
            )
            posted = any(
                service == "ccbridge-connector" and span.kind == CLIENT and ccaas in _url(span)
                for service, span in found
            )
            # Spans are exported in batches: wait for the connector's server span too.
            relayed = any(
                service == "ccbridge-connector"
                and span.kind == SERVER
                and span.name.endswith("/PostCustomerMessages")
                for service, span in found
            )
            if delivered and posted and relayed:
                return found
        return None

    found = wait_for("one trace from the webhook to the CCaaS post", inbound_trace)
    services = {service for service, _span in found}
    assert {"ccbridge-gateway", "ccbridge-session", "ccbridge-connector"} <= services
    # The connector's gRPC server span of the relay's call is in it.
    assert any(
        service == "ccbridge-connector"
        and span.kind == SERVER
        and span.name.endswith("/PostCustomerMessages")
        for service, span in found
    )
    # The webhook's path token is in no span of any component.
    token = mesh.env["CCBRIDGE_WEBHOOK_TOKEN"]
    for service, span in receiver.spans():
        assert token not in span.name, service
        assert all(token not in str(value) for value in attributes(span).values()), service


REPLY_HOPS = {
    ("ccbridge-connector", "/ccbridge.connector.v1.ConnectorService/HandleWebhook"),
    ("ccbridge-session", "/ccbridge.session.v1.SessionService/ReportCaseEvents"),
}


def test_one_trace_from_an_agent_reply_to_infobip_create_message(
    mesh: Mesh, receiver: OtlpReceiver
) -> None:
    cid, case_id = _active(mesh)
    answer = mesh.ccaas.post(f"/_sim/cases/{case_id}/reply", json={"text": "traced reply"})
    assert answer.json()["bridgeStatus"] == 200
    wait_for("the reply at Infobip", lambda: mesh.agent_messages(cid))
    create_message = f"/ccaas/1/conversations/{cid}/messages"

    def reply_trace() -> Spans | None:
        spans = receiver.spans()
        deliveries = [
            span
            for service, span in spans
            if service == "ccbridge-session"
            and span.name == "session.deliver outbox"
            and attributes(span).get(CID) == cid
        ]
        for delivery in deliveries:
            found = _trace(spans, delivery.trace_id)
            sent = any(
                service == "ccbridge-session"
                and span.kind == CLIENT
                and create_message in _url(span)
                for service, span in found
            )
            came_in = any(
                service == "ccbridge-gateway"
                and span.kind == SERVER
                and attributes(span).get("http.route") == "/webhooks/ccaas/{connector}"
                for service, span in found
            )
            # Each process exports on its own schedule: wait for every hop's server span.
            hops = {(service, span.name) for service, span in found if span.kind == SERVER}
            if sent and came_in and REPLY_HOPS <= hops:
                return found
        return None

    found = wait_for(
        f"one trace from the agent reply to Create Message via {REPLY_HOPS}", reply_trace
    )
    names = {(service, span.name) for service, span in found if span.kind == SERVER}
    assert REPLY_HOPS <= names
