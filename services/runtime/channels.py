"""gRPC client channels to peer services.

Addresses come from ``<PEER>_ADDR`` settings. ``dns:///`` addresses (headless Kubernetes
Services) are balanced with round_robin across every replica; callers set a deadline on
every call. Channels are mutual TLS (services/runtime/mesh_tls.py): the process presents
its own certificate and accepts only a server whose certificate names the ``peer`` it
means to reach (its DNS SAN), whatever address it dialled.
"""

from __future__ import annotations

import logging

import grpc
import orjson

from ccbridge.services.runtime.mesh_tls import INSECURE_WARNING, KeyMaterial, MeshTls

log = logging.getLogger(__name__)

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


_OPTIONS = [
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
]


def create_channel(address: str, tls: MeshTls, peer: str) -> grpc.aio.Channel:
    """Opens a channel to the component ``peer`` (``session``, ``history``, ...) at
    ``address``: mutual TLS, or plaintext when ``tls.insecure`` (development)."""
    if tls.insecure:
        log.warning(INSECURE_WARNING)
        return grpc.aio.insecure_channel(address, options=_OPTIONS)
    return grpc.aio.secure_channel(
        address,
        credentials(KeyMaterial.load(tls)),
        options=[*_OPTIONS, ("grpc.ssl_target_name_override", peer)],
    )


def credentials(material: KeyMaterial) -> grpc.ChannelCredentials:
    """Channel credentials from one read of the certificate, key and CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )


def create_blocking_channel(address: str, tls: MeshTls, peer: str) -> grpc.Channel:
    """A synchronous channel (the ``ccbridge`` CLI, ``ccbridge up``'s readiness checks),
    with the same security as :func:`create_channel`."""
    if tls.insecure:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(
        address,
        credentials(KeyMaterial.load(tls)),
        options=[("grpc.ssl_target_name_override", peer)],
    )
