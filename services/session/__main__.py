"""Entry point of the Session service (`ccbridge serve session`,
`python -m ccbridge.services.session`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from ccbridge.connector.v1 import connector_pb2_grpc
from ccbridge.history.v1 import history_pb2_grpc
from ccbridge.routing.v1 import routing_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.entry import run_component
from ccbridge.services.runtime.redis import create_redis
from ccbridge.services.runtime.server import ServiceHealth, create_server, serve_until_signalled
from ccbridge.services.session.servicer import SessionServicer
from ccbridge.services.session.settings import SessionSettings
from ccbridge.services.session.store import SessionStore
from ccbridge.services.session.worker import ConversationWorker, Peers
from ccbridge.session.v1 import session_pb2, session_pb2_grpc


@dataclass
class RunningSession:
    """A started Session service (used by ``serve`` and by tests)."""

    server: grpc.aio.Server
    port: int
    health: ServiceHealth
    worker: ConversationWorker | None
    store: SessionStore
    settings: SessionSettings
    servicer: SessionServicer
    _closers: list[Callable[[], Awaitable[object]]]

    async def drain(self) -> None:
        self.servicer.start_draining()
        if self.worker is not None:
            await self.worker.stop(self.settings.common.shutdown_grace_s)

    async def close_resources(self) -> None:
        """Closes clients in reverse order of creation."""
        for close in reversed(self._closers):
            await close()

    async def stop(self) -> None:
        """Test helper: drain, stop the server, close clients."""
        await self.health.enter_shutdown()
        await self.drain()
        await self.server.stop(1.0)
        await self.close_resources()


async def start(settings: SessionSettings, *, start_server: bool = True) -> RunningSession:
    """Builds and (by default) starts the service with its worker."""
    redis = create_redis(settings.common.redis_url)
    store = SessionStore(
        redis,
        prefix=settings.common.redis_prefix,
        dedupe_ttl_s=settings.dedupe_ttl_s,
        closed_retention_s=settings.closed_retention_s,
    )
    history_ch = create_channel(settings.history_addr)
    routing_ch = create_channel(settings.routing_addr)
    connector_ch = create_channel(settings.connector_addr)
    infobip = InfobipClient(
        settings.infobip_base_url,
        settings.infobip_api_key,
        timeout_s=settings.infobip_timeout_s,
        agent_id=settings.infobip_agent_id,
    )
    peers = Peers(
        history_pb2_grpc.HistoryServiceStub(history_ch),
        routing_pb2_grpc.RoutingServiceStub(routing_ch),
        connector_pb2_grpc.ConnectorServiceStub(connector_ch),
        infobip,
    )
    worker = ConversationWorker(store, peers, settings) if settings.workers_enabled else None
    servicer = SessionServicer(store, worker)

    def register(server: grpc.aio.Server) -> list[str]:
        session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server)
        return [session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name]

    async def ready() -> bool:
        return bool(await redis.ping())

    server, port, health = create_server(f"{settings.bind_host}:{settings.port}", register, ready)
    running = RunningSession(
        server,
        port,
        health,
        worker,
        store,
        settings,
        servicer,
        [redis.aclose, history_ch.close, routing_ch.close, connector_ch.close, infobip.aclose],
    )
    if start_server:
        await server.start()
        await health.start()
        if worker is not None:
            worker.start()
    return running


async def serve(settings: SessionSettings) -> None:
    """Runs until SIGTERM/SIGINT, then drains workers and stops gracefully."""
    running = await start(settings, start_server=False)
    if running.worker is not None:
        running.worker.start()
    try:
        await serve_until_signalled(
            running.server,
            running.health,
            grace_s=settings.common.shutdown_grace_s,
            on_drain=running.drain,
        )
    finally:
        await running.close_resources()


def main() -> None:
    run_component("session", SessionSettings.from_env, serve)


if __name__ == "__main__":
    main()
