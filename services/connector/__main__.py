"""Entry point of the connector service: ``python -m ccbridge.services.connector``.

``serve`` runs until SIGTERM; ``start`` runs the same server in-process (tests, ``ccbridge
up``) and returns a handle with ``.port`` and ``.stop()``. Resources (Redis client, the
Session channel, adapters' HTTP clients) are created in the running loop and closed in
reverse order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis

from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.base import Adapter
from ccbridge.services.connector.poller import Poller
from ccbridge.services.connector.registry import create_adapters
from ccbridge.services.connector.servicer import ConnectorServicer
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.entry import run_component
from ccbridge.services.runtime.redis import create_redis
from ccbridge.services.runtime.server import ServiceHealth, create_server, serve_until_signalled

SERVICE_NAME = connector_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name


@dataclass
class ConnectorServer:
    """The connector service's parts; ``stop`` closes them in reverse order."""

    server: grpc.aio.Server
    port: int
    health: ServiceHealth
    adapters: dict[str, Adapter]
    pollers: list[Poller]
    redis: aioredis.Redis
    channel: grpc.aio.Channel
    _closed: bool = field(default=False, repr=False)

    async def stop_pollers(self) -> None:
        for poller in self.pollers:
            await poller.stop()

    async def close_resources(self) -> None:
        if self._closed:
            return
        self._closed = True
        for adapter in reversed(self.adapters.values()):
            await adapter.aclose()
        await self.channel.close()
        await self.redis.aclose()

    async def stop(self, grace_s: float = 0.5) -> None:
        await self.health.enter_shutdown()
        await self.stop_pollers()
        await self.server.stop(grace_s)
        await self.close_resources()


async def build(
    settings: ConnectorSettings, adapters: Mapping[str, Adapter] | None = None
) -> ConnectorServer:
    """Creates every part (not started). ``adapters`` replaces the configured ones."""
    redis = create_redis(settings.common.redis_url)
    channel = create_channel(settings.session_addr)
    try:
        built = dict(adapters) if adapters is not None else await create_adapters(settings, redis)
    except BaseException:
        await channel.close()
        await redis.aclose()
        raise
    reporter = SessionReporter(channel)
    store = ConnectorStore(redis, settings.common.redis_prefix)
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

    def register(server: grpc.aio.Server) -> Iterable[str]:
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server(
            ConnectorServicer(built, reporter), server
        )
        return (SERVICE_NAME,)

    async def ready() -> bool:
        return bool(await redis.ping())

    server, port, health = create_server(settings.address, register, ready)
    return ConnectorServer(server, port, health, built, pollers, redis, channel)


async def start(
    settings: ConnectorSettings, adapters: Mapping[str, Adapter] | None = None
) -> ConnectorServer:
    """Starts the service in the running loop (bind port 0 for tests)."""
    parts = await build(settings, adapters)
    try:
        await parts.server.start()
        await parts.health.start()
    except BaseException:
        await parts.stop(0)
        raise
    for poller in parts.pollers:
        poller.start()
    return parts


async def serve(settings: ConnectorSettings) -> None:
    """Runs the service until SIGTERM/SIGINT."""
    parts = await build(settings)
    try:
        for poller in parts.pollers:
            poller.start()
        await serve_until_signalled(
            parts.server,
            parts.health,
            grace_s=settings.common.shutdown_grace_s,
            on_drain=parts.stop_pollers,
        )
    finally:
        await parts.stop_pollers()
        await parts.close_resources()


def main() -> None:
    run_component("connector", ConnectorSettings.from_env, serve)


if __name__ == "__main__":
    main()
