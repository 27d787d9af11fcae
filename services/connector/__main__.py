"""Entry point of the connector service: ``python -m ccbridge.services.connector``.

What the service is made of; the runtime (services/runtime/component.py) starts and stops
it. Resources (Redis client, the Session channel, adapters' HTTP clients) are created in
the running loop and closed in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.base import Adapter
from ccbridge.services.connector.poller import Poller
from ccbridge.services.connector.registry import create_adapters
from ccbridge.services.connector.servicer import ConnectorServicer
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.component import (
    Background,
    Closer,
    Component,
    Running,
    Servicer,
    run_service,
)
from ccbridge.services.runtime.lease import Liveness
from ccbridge.services.runtime.redis import create_redis, redis_ready

SERVICE_NAME = connector_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name


@dataclass(frozen=True)
class ConnectorParts:
    """The connector service's own objects."""

    adapters: dict[str, Adapter]
    pollers: list[Poller]


RunningConnector = Running[ConnectorParts]


async def build(
    settings: ConnectorSettings,
    metrics: CollectorRegistry,
    *,
    adapters: Mapping[str, Adapter] | None = None,
) -> Component[ConnectorParts]:
    """Creates every part; ``adapters`` replaces the configured ones (tests)."""
    redis = create_redis(settings.common.redis_url)
    channel = create_channel(
        settings.session_addr,
        settings.common.mesh_tls,
        "session",
        keepalive_ms=settings.common.grpc_keepalive_ms,
    )
    # Its key, <prefix>:connector:live:<replica>, stays among the connector's own keys.
    liveness = Liveness(redis, f"{settings.common.redis_prefix}:connector")
    store = ConnectorStore(redis, settings.common.redis_prefix, liveness)
    try:
        built = (
            dict(adapters)
            if adapters is not None
            else await create_adapters(settings.adapters, store)
        )
    except BaseException:
        await channel.close()
        await redis.aclose()
        raise
    reporter = SessionReporter(channel)
    lease_ttl_s = max(30.0, settings.poll_interval_s * 5)
    pollers = [
        Poller(
            name,
            adapter,
            reporter,
            store.poll_lease(name, lease_ttl_s),
            interval_s=settings.poll_interval_s,
        )
        for name, adapter in built.items()
        if adapter.mode == "poll"
    ]

    closers: list[Closer] = [redis.aclose, channel.close]
    closers += [adapter.aclose for adapter in built.values()]
    return Component(
        name="connector",
        servicers=[
            Servicer(
                connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
                ConnectorServicer(built, reporter),
                SERVICE_NAME,
            )
        ],
        metrics=metrics,
        parts=ConnectorParts(built, pollers),
        ready=redis_ready(redis),
        background=[
            *([_heartbeat(liveness)] if pollers else []),
            *(Background(f"poller {p.name}", p.start, p.stop) for p in pollers),
        ],
        closers=closers,
    )


def _heartbeat(liveness: Liveness) -> Background:
    """Renews this replica's liveness key while it polls (its poll leases name it).
    Started before the pollers; should their first lease come before the first renewal,
    a successor may take it over once and the fencing token keeps the two apart."""
    task: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal task
        task = asyncio.create_task(liveness.run(), name="liveness")

    async def stop() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await liveness.stop()

    return Background("liveness", start, stop)


def main() -> None:
    run_service("connector", ConnectorSettings.from_env, build)


if __name__ == "__main__":
    main()
