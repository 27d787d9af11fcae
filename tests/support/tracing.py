"""Tracing on in the test process: the product's own setup (services/runtime/tracing.py)
with the SDK's in-memory exporter instead of OTLP, and the OTLP receiver double the
end-to-end test exports to."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ccbridge.services.runtime.tracing import Tracing, setup_tracing


@contextlib.contextmanager
def traced(component: str = "test") -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    """Tracing set up as a component does (every instrumentation installed), spans kept
    in memory; removed again on exit (OpenTelemetry's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(component, "otlp", environ={}, exporter=exporter, set_global=False)
    assert tracing is not None
    try:
        yield tracing, exporter
    finally:
        tracing.shutdown()


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver (the collector's ``TraceService.Export``) on a free
    loopback port, keeping every span with its service name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[tuple[str, trace_pb2.Span]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    self._spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, trace_pb2.Span]]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(0)


def attributes(span: trace_pb2.Span) -> dict[str, object]:
    """An OTLP span's attributes as a plain dict (string, int, bool and double values)."""
    out: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        out[attribute.key] = getattr(value, kind) if kind else None
    return out
