"""gRPC client channels to peer services.

Addresses come from ``<PEER>_ADDR`` settings. ``dns:///`` addresses (headless Kubernetes
Services) are balanced with round_robin across every replica; callers set a deadline on
every call.
"""

from __future__ import annotations

import grpc
import orjson

_SERVICE_CONFIG = orjson.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                # Retries UNAVAILABLE from a peer that restarts or shuts down (another
                # replica, or the restarted process, answers). Answers our servicers
                # chose carry `grpc-retry-pushback-ms: -1` (server.py), so a far-side
                # outage reported by a peer is never multiplied here.
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
).decode()  # grpc takes the service config as text


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
