"""Entry point of the history service: ``python -m ccbridge.services.history``.

``serve`` runs it until SIGTERM/SIGINT; ``start`` runs it in the current loop and returns
a handle (tests bind ``127.0.0.1:0``). Readiness is always true: the service needs no
Redis, and an Infobip outage is reported per call (UNAVAILABLE), not by draining.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from ccbridge.history.v1 import history_pb2, history_pb2_grpc
from ccbridge.services.history.servicer import HistoryServicer
from ccbridge.services.history.settings import HistorySettings
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.entry import run_component
from ccbridge.services.runtime.server import ServiceHealth, create_server, serve_until_signalled

SERVICE_NAME = history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name


async def _build(
    settings: HistorySettings, address: str
) -> tuple[grpc.aio.Server, int, ServiceHealth, InfobipClient]:
    client = InfobipClient(
        settings.infobip_base_url,
        settings.infobip_api_key,
        timeout_s=settings.infobip_timeout_s,
        max_retries=settings.infobip_max_retries,
    )
    servicer = HistoryServicer(client, default_limit=settings.history_limit)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        history_pb2_grpc.add_HistoryServiceServicer_to_server(servicer, server)
        return (SERVICE_NAME,)

    try:
        server, port, keeper = create_server(address, register, ready=None)
    except BaseException:
        await client.aclose()
        raise
    return server, port, keeper, client


@dataclass
class RunningHistory:
    """A history server started by :func:`start`."""

    server: grpc.aio.Server
    port: int
    keeper: ServiceHealth
    client: InfobipClient
    grace_s: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.keeper.enter_shutdown()
        await self.server.stop(self.grace_s)
        await self.client.aclose()


async def start(
    settings: HistorySettings,
    *,
    address: str | None = None,
) -> RunningHistory:
    """Starts the server in the running loop (``address`` defaults to the settings')."""
    server, port, keeper, client = await _build(settings, address or settings.address)
    await server.start()
    await keeper.start()
    return RunningHistory(server, port, keeper, client, settings.common.shutdown_grace_s)


async def serve(settings: HistorySettings) -> None:
    """Runs the history service until SIGTERM/SIGINT."""
    server, _, keeper, client = await _build(settings, settings.address)
    try:
        await serve_until_signalled(server, keeper, grace_s=settings.common.shutdown_grace_s)
    finally:
        await client.aclose()


def main() -> None:
    run_component("history", HistorySettings.from_env, serve)


if __name__ == "__main__":
    main()
