"""The one service skeleton: start (bind, serve, readiness, background) and the one stop
order, on a real grpc.aio server on 127.0.0.1:0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from ccbridge.services.runtime.component import Background, Component, start
from ccbridge.services.runtime.settings import CommonSettings
from tests.support.redis_server import free_port


@dataclass(frozen=True)
class _Settings:
    common: CommonSettings
    address: str = "127.0.0.1:0"


SETTINGS = _Settings(CommonSettings("redis://unused", "INFO", "json", 0.5, drain_delay_s=0.0))


def _builder(events: list[str], *, fail_at_start: bool = False) -> Any:
    async def build(settings: _Settings, metrics: CollectorRegistry) -> Component[list[str]]:
        Counter("test_built", "built components", registry=metrics).inc()

        async def ready() -> bool:
            return True

        def job(name: str) -> Background:
            def begin() -> None:
                if fail_at_start and name == "second":
                    raise RuntimeError("cannot start")
                events.append(f"start {name}")

            async def end() -> None:
                events.append(f"stop {name}")

            return Background(name, begin, end)

        def closer(name: str) -> Any:
            async def close() -> None:
                events.append(f"close {name}")

            return close

        return Component(
            name="test",
            servicers=[],
            metrics=metrics,
            parts=events,
            ready=ready,
            background=[job("first"), job("second")],
            drain=[lambda: events.append("drain")],
            closers=[closer("redis"), closer("channel")],
        )

    return build


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(reply.status)


async def test_start_serves_and_stop_runs_the_one_order() -> None:
    events: list[str] = []
    running = await start(_builder(events), SETTINGS)
    assert running.port != 0 and running.parts is events
    assert await _health(running.address) == health_pb2.HealthCheckResponse.SERVING
    assert running.metrics.get_sample_value("test_built_total") == 1.0
    assert events == ["start first", "start second"]
    await running.stop()
    await running.stop()  # idempotent
    assert running.health.shutting_down
    assert events[2:] == [
        "drain",
        "stop second",
        "stop first",
        "close channel",
        "close redis",
    ]
    with pytest.raises(grpc.aio.AioRpcError):
        await _health(running.address)


async def test_a_failed_start_stops_what_started_and_closes_everything() -> None:
    events: list[str] = []
    settings = _Settings(SETTINGS.common, f"127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError, match="cannot start"):
        await start(_builder(events, fail_at_start=True), settings)
    assert events == ["start first", "stop first", "close channel", "close redis"]
    with pytest.raises(grpc.aio.AioRpcError):  # the server is not left serving
        await _health(settings.address)
