"""Session fixtures: the real Session gRPC server on port 0 against the test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import grpc
import pytest

from ccbridge.services.runtime.component import start
from ccbridge.services.session.__main__ import RunningSession, build
from ccbridge.services.session.settings import SessionSettings
from ccbridge.session.v1 import session_pb2_grpc


def session_settings(redis_url: str, **overrides: str) -> SessionSettings:
    env: Mapping[str, str] = {
        "REDIS_URL": redis_url,
        "CCBRIDGE_SESSION_PORT": "0",
        "CCBRIDGE_DRAIN_DELAY_S": "0",
        "INFOBIP_BASE_URL": "http://127.0.0.1:9",
        "INFOBIP_API_KEY": "test-key",
        # Peers on a closed port: these tests exercise the API, not the worker.
        "HISTORY_ADDR": "127.0.0.1:9",
        "ROUTING_ADDR": "127.0.0.1:9",
        "CONNECTOR_ADDR": "127.0.0.1:9",
        "CCBRIDGE_WORKERS_ENABLED": "false",
        **overrides,
    }
    return SessionSettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **env})


@pytest.fixture
async def session_api(
    redis_url: str, redis_client: object
) -> AsyncIterator[tuple[RunningSession, session_pb2_grpc.SessionServiceStub]]:
    running = await start(build, session_settings(redis_url))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield running, session_pb2_grpc.SessionServiceStub(channel)
    finally:
        await channel.close()
        await running.stop()
