"""gRPC client channels to peer services.

Addresses come from ``<PEER>_ADDR`` settings. ``dns:///`` addresses (headless Kubernetes
Services) are balanced with round_robin across every replica; callers set a deadline on
every call. Channels are mutual TLS (services/runtime/mesh_tls.py): the process presents
its own certificate and accepts only a server whose certificate names the ``peer`` it
means to reach (its DNS SAN), whatever address it dialled.

Addresses may also list replicas without DNS (``ipv4:10.0.0.1:50051,10.0.0.2:50051``);
round_robin spreads calls over them the same way.

A frozen replica (SIGSTOP, a hung VM, a partition that drops packets) keeps its TCP
connections open, so only HTTP/2 keepalive pings reveal it: every connection is pinged
every ``keepalive_ms`` (idle or not) and closed when a ping is not answered within
``keepalive_ms``; round_robin then sends calls to the other replicas only, so a frozen
replica stops receiving calls within about 2 × ``keepalive_ms``. Calls already on it
fail UNAVAILABLE without response headers and are retried by the retry policy on
another replica. Servers permit these pings (server.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc
import orjson

from ccbridge.services.runtime.mesh_tls import INSECURE_WARNING, KeyMaterial, MeshTls, Watched
from ccbridge.services.runtime.metrics import ClientCallMetrics
from ccbridge.services.runtime.metrics import current as current_metrics

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


# Default of CCBRIDGE_GRPC_KEEPALIVE_MS (CommonSettings.grpc_keepalive_ms).
KEEPALIVE_MS = 1000

_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    # Reconnect fast after a peer restarts (the default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def channel_options(keepalive_ms: int) -> list[tuple[str, Any]]:
    """The options of every channel, with pings every ``keepalive_ms`` (module docstring)."""
    return [
        *_OPTIONS,
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms),
        # What actually closes the connection on an unanswered ping in grpcio 1.85
        # (keepalive_timeout alone left it open: the default, 60 s, applied).
        ("grpc.http2.ping_timeout_ms", keepalive_ms),
        # Idle connections too: a replica that froze while nothing was sent to it is
        # dropped before the next call is routed to it.
        ("grpc.keepalive_permit_without_calls", 1),
        # No cap on pings between data frames (the default, 2, would stop pinging an
        # idle connection).
        ("grpc.http2.max_pings_without_data", 0),
    ]


def create_channel(
    address: str, tls: MeshTls, peer: str, *, keepalive_ms: int = KEEPALIVE_MS
) -> grpc.aio.Channel:
    """Opens a channel to the component ``peer`` (``session``, ``history``, ...) at
    ``address`` (``host:port``, ``dns:///name:port`` or ``ipv4:a:port,b:port``): mutual
    TLS, or plaintext when ``tls.insecure`` (development). Created while a component is
    built, its calls are counted in the component's metrics (services/runtime/metrics.py)."""
    metrics = current_metrics()
    interceptors = [ClientCallMetrics(metrics)] if metrics is not None else None
    if tls.insecure:
        log.warning(INSECURE_WARNING)
        return grpc.aio.insecure_channel(
            address, options=channel_options(keepalive_ms), interceptors=interceptors
        )
    return ReloadingChannel(
        address, tls, peer, keepalive_ms=keepalive_ms, interceptors=interceptors
    )


# How often a channel looks at its certificate files (a stat of three files).
RELOAD_CHECK_S = 30.0
# A replaced channel is closed after this long: longer than the servers' maximum
# connection age plus its grace (server.py), so no call or stream is cut by it.
RETIRE_GRACE_S = 6 * 60.0


def credentials(material: KeyMaterial) -> grpc.ChannelCredentials:
    """Channel credentials from one read of the certificate, key and CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )


class _Rebinding:
    """A multicallable of the channel in use: taken again after a reload."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: tuple[Any, ...], kw: Any) -> None:
        self._owner, self._kind, self._args, self._kw = owner, kind, args, kw
        self._generation = -1
        self._bound: Any = None

    def _current(self) -> Any:
        generation, channel = self._owner.current()
        if generation != self._generation:
            self._bound = getattr(channel, self._kind)(*self._args, **self._kw)
            self._generation = generation
        return self._bound


class _UnaryUnary(_Rebinding, grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)


class _UnaryStream(_Rebinding, grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)


class _StreamUnary(_Rebinding, grpc.aio.StreamUnaryMultiCallable[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)


class _StreamStream(_Rebinding, grpc.aio.StreamStreamMultiCallable[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A mutual-TLS channel that takes rotated certificate files: at most every
    ``check_every_s`` a call looks at the files, and when they changed (and the new key
    matches the new certificate) opens a new channel with them; calls from then on use
    it, calls and streams under way finish on the old one, closed after
    :data:`RETIRE_GRACE_S`. Stubs built on it keep working across reloads."""

    def __init__(
        self,
        address: str,
        tls: MeshTls,
        peer: str,
        *,
        check_every_s: float = RELOAD_CHECK_S,
        keepalive_ms: int = KEEPALIVE_MS,
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    ) -> None:
        self._address, self._peer, self._check_every_s = address, peer, check_every_s
        self._interceptors = interceptors
        self._keepalive_ms = keepalive_ms
        self._watched = Watched(tls)
        self._channel = self._open()
        self._generation = 0
        self._next_check = time.monotonic() + check_every_s
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    def _open(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            self._address,
            credentials(self._watched.material),
            options=[
                *channel_options(self._keepalive_ms),
                ("grpc.ssl_target_name_override", self._peer),
            ],
            interceptors=self._interceptors,
        )

    @property
    def generation(self) -> int:
        """How many times the channel was re-created with new files."""
        return self._generation

    def current(self) -> tuple[int, grpc.aio.Channel]:
        """The channel in use (re-created first when the files changed)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_every_s
            if self._watched.refresh():
                old, self._channel = self._channel, self._open()
                self._generation += 1
                task = asyncio.get_running_loop().create_task(old.close(RETIRE_GRACE_S))
                self._retiring[task] = old
                task.add_done_callback(lambda done: self._retiring.pop(done, None))
        return self._generation, self._channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _UnaryUnary(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _UnaryStream(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _StreamUnary(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _StreamStream(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        retiring = dict(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for old in retiring.values():
            await old.close(grace)
        await self._channel.close(grace)

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()


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
