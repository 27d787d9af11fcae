"""The Prometheus series ccbridge exports, by name (docs/operations.md, "Metrics"), for
tests and for the alert rules and dashboard to check themselves against.

``METRIC_NAMES`` is every family name as it appears in a scrape (counters with their
``_total``; histograms by their base name: ``_bucket``/``_sum``/``_count`` samples).
``SERIES_BY_PROCESS`` says which processes serve each one (tests/e2e/test_metrics.py
scrapes them all); process metrics (``process_*``, ``python_*``) come from every one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

GRPC_COMPONENTS = ("session", "history", "routing", "connector")
PROCESSES = ("gateway", *GRPC_COMPONENTS)

# Session: what it does and what Redis holds.
HANDOVERS = "ccbridge_handovers"  # gauge {state}
OPENINGS = "ccbridge_openings_total"  # counter {outcome: ok|failed|rejected}
OPENING_DURATION = "ccbridge_opening_duration_seconds"  # histogram
BACKLOG = "ccbridge_backlog_messages"  # gauge {direction: inbound|outbound}
BACKLOG_AGE = "ccbridge_backlog_oldest_age_seconds"  # gauge {direction}
DELIVERIES = "ccbridge_deliveries_total"  # counter {direction, outcome}
DELIVERY_RETRIES = "ccbridge_delivery_retries_total"  # counter {direction}
DEAD_LETTERS = "ccbridge_dead_letters"  # gauge
DEAD_LETTER_AGE = "ccbridge_dead_letter_oldest_age_seconds"  # gauge
DEAD_LETTERS_TOTAL = "ccbridge_dead_letters_total"  # counter {direction}
# Every gRPC component (and the gateway: its gRPC client calls and process metrics).
LEASE_TAKEOVERS = "ccbridge_lease_takeovers_total"  # counter {kind}
FARSIDE_REQUESTS = "ccbridge_farside_requests_total"  # counter {system, operation, status}
FARSIDE_DURATION = "ccbridge_farside_request_duration_seconds"  # histogram {system, operation}
REDIS_DURATION = "ccbridge_redis_command_duration_seconds"  # histogram {component}
GRPC_SERVER_HANDLED = "ccbridge_grpc_server_handled_total"  # {service, method, code}
GRPC_SERVER_SECONDS = "ccbridge_grpc_server_handling_seconds"  # histogram {service, method}
GRPC_CLIENT_HANDLED = "ccbridge_grpc_client_handled_total"  # {service, method, code}
PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_collections_total",
)
# Gateway.
GATEWAY_REQUESTS = "ccbridge_gateway_requests_total"
GATEWAY_REQUEST_DURATION = "ccbridge_gateway_request_duration_seconds"
GATEWAY_INGEST = "ccbridge_gateway_ingest_messages_total"
GATEWAY_GRPC_ERRORS = "ccbridge_gateway_grpc_errors_total"
GATEWAY_AUTH_FAILURES = "ccbridge_gateway_webhook_auth_failures_total"
GATEWAY_EVENTS_REJECTED = "ccbridge_gateway_infobip_events_rejected_total"
GATEWAY_LAST_WEBHOOK = "ccbridge_gateway_last_webhook_timestamp_seconds"  # gauge {source}

SESSION_ONLY = (
    HANDOVERS,
    OPENINGS,
    OPENING_DURATION,
    BACKLOG,
    BACKLOG_AGE,
    DELIVERIES,
    DELIVERY_RETRIES,
    DEAD_LETTERS,
    DEAD_LETTER_AGE,
    DEAD_LETTERS_TOTAL,
)
SHARED = (
    LEASE_TAKEOVERS,
    FARSIDE_REQUESTS,
    FARSIDE_DURATION,
    REDIS_DURATION,
    GRPC_SERVER_HANDLED,
    GRPC_SERVER_SECONDS,
    GRPC_CLIENT_HANDLED,
    *PROCESS_METRICS,
)
GATEWAY_ONLY = (
    GATEWAY_REQUESTS,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_INGEST,
    GATEWAY_GRPC_ERRORS,
    GATEWAY_AUTH_FAILURES,
    GATEWAY_EVENTS_REJECTED,
    GATEWAY_LAST_WEBHOOK,
)
METRIC_NAMES: tuple[str, ...] = (*SESSION_ONLY, *SHARED, *GATEWAY_ONLY)

SERIES_BY_PROCESS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "session": (*SESSION_ONLY, *SHARED),
        "history": SHARED,
        "routing": SHARED,
        "connector": SHARED,
        "gateway": (*SHARED, *GATEWAY_ONLY),
    }
)
