"""Entry point of the routing service: ``python -m ccbridge.services.routing``.

``serve`` runs until SIGTERM; ``start`` runs the same server in-process (tests, ``ccbridge
up``) and returns a handle with ``.port`` and ``.stop()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.routing.rules import RulesError
from ccbridge.services.routing.servicer import RoutingServicer
from ccbridge.services.routing.settings import RoutingSettings
from ccbridge.services.routing.store import RulesStore
from ccbridge.services.runtime.entry import run_component
from ccbridge.services.runtime.server import ServiceHealth, create_server, serve_until_signalled

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name


@dataclass
class RoutingServer:
    """A running routing server (``start``)."""

    server: grpc.aio.Server
    port: int
    health: ServiceHealth
    store: RulesStore

    async def stop(self, grace_s: float = 0.5) -> None:
        await self.health.enter_shutdown()
        await self.store.stop()
        await self.server.stop(grace_s)


def _build(settings: RoutingSettings) -> tuple[grpc.aio.Server, int, ServiceHealth, RulesStore]:
    store = RulesStore(
        settings.rules_path,
        default_connector=settings.default_connector,
        reload_s=settings.reload_s,
    )
    store.load_initial()  # fail fast on a missing or invalid file

    def register(server: grpc.aio.Server) -> Iterable[str]:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(RoutingServicer(store), server)
        return (SERVICE_NAME,)

    async def ready() -> bool:
        return store.loaded

    server, port, health = create_server(settings.address, register, ready)
    return server, port, health, store


async def start(settings: RoutingSettings) -> RoutingServer:
    """Starts the service in the running loop (bind port 0 for tests)."""
    server, port, health, store = _build(settings)
    await server.start()
    await health.start()
    store.start()
    return RoutingServer(server, port, health, store)


async def serve(settings: RoutingSettings) -> None:
    """Runs the service until SIGTERM/SIGINT."""
    server, _, health, store = _build(settings)
    store.start()
    try:
        await serve_until_signalled(
            server, health, grace_s=settings.common.shutdown_grace_s, on_drain=store.stop
        )
    finally:
        await store.stop()


def main() -> None:
    run_component("routing", RoutingSettings.from_env, serve, fatal=(RulesError,))


if __name__ == "__main__":
    main()
