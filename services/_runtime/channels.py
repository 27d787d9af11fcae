"""gRPC client channels to peer services.

Addresses come from ``<PEER>_ADDR`` settings. ``dns:///`` addresses (headless Kubernetes
Services) are balanced with round_robin across every replica; callers set a deadline on
every call.
"""

from __future__ import annotations

import json

import grpc

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # No retryPolicy: an UNAVAILABLE from a peer may be the far side's outage, which
        # Session retries with its own back-off (honouring Retry-After). gRPC still
        # retries transparently calls that never reached a server.
    }
)


def create_channel(address: str) -> grpc.aio.Channel:
    """Opens an insecure channel (mesh traffic stays inside the cluster network)."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # Reconnect fast after a peer restarts (the default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
