"""Keepalive pings (services/runtime/channels.py) on an idle connection: the server
permits them (server.py) instead of ending the connection with GOAWAY too_many_pings,
which would cut calls and reconnect every few seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.services.routing.settings import RoutingSettings
from ccbridge.services.runtime.channels import KEEPALIVE_MS, create_channel
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.server import create_server
from ccbridge.services.runtime.settings import SettingsError

PING_MS = KEEPALIVE_MS  # grpc sends no two pings less than 1 s apart
IDLE_S = 5.0  # a server that refuses pings ends the connection at the third (~3 s)


async def _state_changes(server_keepalive_ms: int) -> list[grpc.ChannelConnectivity]:
    """The channel's state changes while its connection idles for ``IDLE_S``."""
    server, port, keeper = create_server(
        "127.0.0.1:0", lambda s: [], tls=INSECURE, keepalive_ms=server_keepalive_ms
    )
    await server.start()
    await keeper.start()
    changes: list[grpc.ChannelConnectivity] = []
    try:
        async with create_channel(
            f"127.0.0.1:{port}", INSECURE, "session", keepalive_ms=PING_MS
        ) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )

            async def watch() -> None:
                state = channel.get_state()
                while True:
                    await channel.wait_for_state_change(state)
                    state = channel.get_state()
                    changes.append(state)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(IDLE_S)
            watcher.cancel()
    finally:
        await keeper.enter_shutdown()
        await server.stop(0)
    return changes


async def test_an_idle_connection_keeps_being_pinged_without_goaway() -> None:
    assert await _state_changes(PING_MS) == []


@pytest.mark.parametrize("server_keepalive_ms", [10 * PING_MS])
async def test_a_server_permitting_fewer_pings_would_end_the_connection(
    server_keepalive_ms: int,
) -> None:
    # What the test above guards against: the check sees the GOAWAY.
    assert await _state_changes(server_keepalive_ms) != []


def test_the_interval_is_a_setting() -> None:
    env = {"CCBRIDGE_MESH_INSECURE": "true"}
    assert RoutingSettings.from_env(env).common.grpc_keepalive_ms == KEEPALIVE_MS == 1000
    custom = {**env, "CCBRIDGE_GRPC_KEEPALIVE_MS": "3000"}
    assert RoutingSettings.from_env(custom).common.grpc_keepalive_ms == 3000
    # grpc sends no two pings closer than 1 s: a lower value would not do what it says.
    with pytest.raises(SettingsError, match="CCBRIDGE_GRPC_KEEPALIVE_MS"):
        RoutingSettings.from_env({**env, "CCBRIDGE_GRPC_KEEPALIVE_MS": "500"})
