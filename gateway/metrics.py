"""Prometheus metrics of the gateway, in a registry owned by one app instance.

A per-app :class:`CollectorRegistry` (not the process-global one) keeps apps created by
tests independent. Label children are cached because the request path is hot.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from ccbridge.services.runtime.metrics import RuntimeMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """Request counts and latency by route, ingest outcomes, gRPC errors by code, the
    last accepted Infobip webhook by source."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Process metrics and the series every component shares (the gateway records
        # its gRPC client calls there: the channels open under ``collecting(runtime)``).
        self.runtime = RuntimeMetrics(self.registry, "gateway")
        self.requests = Counter(
            "ccbridge_gateway_requests_total",
            "HTTP requests answered, by route and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ccbridge_gateway_request_duration_seconds",
            "HTTP request latency by route.",
            ("route",),
            registry=self.registry,
        )
        self.ingest = Counter(
            "ccbridge_gateway_ingest_messages_total",
            "Infobip messages handled by the webhooks, by outcome "
            "(accepted, duplicate, ignored by Session, skipped at the edge).",
            ("source", "outcome"),
            registry=self.registry,
        )
        self.grpc_errors = Counter(
            "ccbridge_gateway_grpc_errors_total",
            "Failed gRPC calls to peers, by RPC and code.",
            ("rpc", "code"),
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "ccbridge_gateway_webhook_auth_failures_total",
            "Webhook requests refused 401, by route and reason.",
            ("route", "reason"),
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "ccbridge_gateway_infobip_events_rejected_total",
            "Infobip events refused, by reason (too_old: older than the event-age "
            "window; close_before_handover: a CLOSED older than the handover).",
            ("reason",),
            registry=self.registry,
        )
        self.last_webhook = Gauge(
            "ccbridge_gateway_last_webhook_timestamp_seconds",
            "When this gateway last accepted an Infobip webhook request (Unix time), by "
            "source (legacy: the messages webhook; events: the subscription's events).",
            ("source",),
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = ("r", route, method, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, method, str(status))
        child.inc()  # type: ignore[attr-defined]
        hist = self._children.get(("l", route))
        if hist is None:
            hist = self._children[("l", route)] = self.latency.labels(route)
        hist.observe(seconds)  # type: ignore[attr-defined]

    def count_ingest(self, source: str, outcome: str, n: int) -> None:
        if n:
            key = ("i", source, outcome)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.ingest.labels(source, outcome)
            child.inc(n)  # type: ignore[attr-defined]

    def webhook_accepted(self, source: str) -> None:
        key = ("w", source)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.last_webhook.labels(source)
        child.set(time.time())  # type: ignore[attr-defined]

    def count_grpc_error(self, rpc: str, code: str) -> None:
        self.grpc_errors.labels(rpc, code).inc()

    def count_auth_failure(self, route: str, reason: str) -> None:
        self.auth_failures.labels(route, reason).inc()

    def count_event_rejected(self, reason: str, n: int = 1) -> None:
        if n:
            self.events_rejected.labels(reason).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
