"""The shared metrics (services/runtime/metrics.py): the per-component /metrics listener
and the hooks of the gRPC server and channels, far-side HTTP client and Redis batches,
each against real servers on loopback."""

from __future__ import annotations

import dataclasses

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.component import Component, start
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.metrics import RuntimeMetrics, collecting
from ccbridge.services.runtime.redis import create_batch
from ccbridge.services.runtime.settings import CommonSettings
from tests.support.far_side import Reply, closed_port, far_side
from tests.support.redis_server import free_port


@dataclasses.dataclass(frozen=True)
class _Settings:
    common: CommonSettings
    address: str = "127.0.0.1:0"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_component_serves_its_registry_on_its_own_port() -> None:
    scrapes: list[int] = []

    async def build(settings: _Settings, metrics: CollectorRegistry) -> Component[None]:
        gauge = Gauge("test_scrapes", "refreshes before scrapes", registry=metrics)

        async def refresh() -> None:
            scrapes.append(1)
            gauge.set(len(scrapes))

        return Component("test", [], metrics, None, scrape=[refresh])

    common = CommonSettings(
        "redis://unused", "INFO", "json", 0.5, drain_delay_s=0.0, metrics_port=free_port()
    )
    running = await start(build, _Settings(common))
    try:
        assert running.metrics_port == common.metrics_port
        # Calls through a channel made for a component (as its build makes them).
        client_metrics = RuntimeMetrics(CollectorRegistry(), "caller")
        with collecting(client_metrics):
            channel = create_channel(running.address, INSECURE, "test")
        async with channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5
                )
        base = f"http://127.0.0.1:{running.metrics_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            answer = await http.get("/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            # The listener serves nothing else.
            assert (await http.get("/")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
        samples = _samples(answer.text)
        service = (("method", "Check"), ("service", "grpc.health.v1.Health"))
        assert samples[("ccbridge_grpc_server_handled_total", (("code", "OK"), *service))] == 1
        assert samples[("ccbridge_grpc_server_handled_total", (("code", "NOT_FOUND"), *service))]
        assert samples[("ccbridge_grpc_server_handling_seconds_count", service)] == 2
        assert samples[("test_scrapes", ())] == 1.0
        assert any(name == "process_cpu_seconds_total" for name, _ in samples)
        assert any(name == "python_gc_objects_collected_total" for name, _ in samples)
        assert (
            client_metrics.registry.get_sample_value(
                "ccbridge_grpc_client_handled_total",
                {"service": "grpc.health.v1.Health", "method": "Check", "code": "OK"},
            )
            == 1
        )
    finally:
        await running.stop()
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{common.metrics_port}/metrics")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_client_calls_are_counted_by_code() -> None:
    async def build(settings: _Settings, metrics: CollectorRegistry) -> Component[None]:
        return Component("test", [], metrics, None)

    running = await start(
        build, _Settings(CommonSettings("redis://unused", "INFO", "json", 0.5, drain_delay_s=0))
    )
    registry = CollectorRegistry()
    try:
        with collecting(RuntimeMetrics(registry, "caller")):
            channel = create_channel(running.address, INSECURE, "test")
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    finally:
        await running.stop()
    name = "ccbridge_grpc_client_handled_total"
    health = {"service": "grpc.health.v1.Health", "method": "Check"}
    assert _value(registry, name, **health, code="OK") == 1
    assert _value(registry, name, **health, code="NOT_FOUND") == 1


async def test_far_side_calls_by_system_operation_and_status() -> None:
    registry = CollectorRegistry()
    replies = iter([Reply.json({"ok": True}, 201), Reply.json({"e": 1}, 503)])
    async with far_side(lambda seen: next(replies)) as far:
        with collecting(RuntimeMetrics(registry, "test")):
            client = HttpClient(
                base_url=far.url, timeout_s=5, max_answer_bytes=1024, system="infobip"
            )
        async with client:
            await client.request("POST", "/x", json_body={}, operation="create message")
            await client.request("POST", "/x", json_body={}, operation="create message")
    name = "ccbridge_farside_requests_total"
    op = {"system": "infobip", "operation": "create message"}
    assert _value(registry, name, **op, status="201") == 1
    assert _value(registry, name, **op, status="503") == 1
    assert _value(registry, "ccbridge_farside_request_duration_seconds_count", **op) == 2


async def test_far_side_failures_are_error_or_timeout() -> None:
    registry = CollectorRegistry()
    with collecting(RuntimeMetrics(registry, "test")):
        client = HttpClient(timeout_s=1, max_answer_bytes=10, system="webhook")
    async with client:
        with pytest.raises(HttpFailure):
            await client.request("POST", f"http://127.0.0.1:{closed_port()}/", operation="x")
    assert (
        _value(
            registry,
            "ccbridge_farside_requests_total",
            system="webhook",
            operation="x",
            status="error",
        )
        == 1
    )


async def test_redis_batches_are_timed(redis_url: str) -> None:
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry)
    client = aioredis.Redis.from_url(redis_url)
    with collecting(metrics):
        batch = create_batch(client)
    metrics.component = "session"
    try:
        await batch.execute([("PING",), ("PING",)])
        await batch.execute([("PING",)])
    finally:
        await batch.aclose()
        await client.aclose()
    name = "ccbridge_redis_command_duration_seconds_count"
    assert _value(registry, name, component="session") == 2
