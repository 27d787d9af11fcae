"""RoutingService over real gRPC: Route, Explain, reload on change, broken file keeps the
last good rules, fail fast on an invalid initial file, health."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.routing.__main__ import RunningRouting, build
from ccbridge.services.routing.rules import RulesError
from ccbridge.services.routing.settings import RoutingSettings
from ccbridge.services.routing.store import RulesStore
from ccbridge.services.runtime.component import start

RULES_V1 = """
rules:
  - name: sms
    match: {channel: SMS}
    route: {queue: sms-queue, priority: 3, skills: [texting]}
"""
RULES_V2 = """
default: {connector: rt, queue: fallback}
rules:
  - name: whatsapp-vip
    match: {channel: [WHATSAPP], tags_any: [vip]}
    route: {queue: vip, priority: 9}
"""
_mtime_ns = 1_700_000_000_000_000_000


def write_rules(path: Path, text: str) -> None:
    """Writes the file and moves its mtime forward (coarse clocks must not hide a change)."""
    global _mtime_ns
    path.write_text(text)
    _mtime_ns += 1_000_000_000
    os.utime(path, ns=(_mtime_ns, _mtime_ns))


def settings(env: dict[str, str]) -> RoutingSettings:
    return RoutingSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_ROUTING_PORT": "0",
            "CCBRIDGE_DRAIN_DELAY_S": "0",
            **env,
        }
    )


@pytest.fixture
async def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    write_rules(path, RULES_V1)
    return path


@pytest.fixture
async def routing(rules_file: Path) -> AsyncIterator[RunningRouting]:
    # Reload check on every call so the test does not wait.
    server = await start(
        build,
        settings({"CCBRIDGE_ROUTING_RULES": str(rules_file), "CCBRIDGE_ROUTING_RELOAD_S": "0"}),
    )
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def channel(routing: RunningRouting) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{routing.port}") as ch:
        yield ch


def ctx(
    channel: str = "", tags: tuple[str, ...] = (), **metadata: str
) -> common_pb2.ConversationContext:
    return common_pb2.ConversationContext(
        conversation_id="c-1", channel=channel, tags=tags, metadata=metadata
    )


async def test_route_and_explain(channel: grpc.aio.Channel, rules_file: Path) -> None:
    stub = routing_pb2_grpc.RoutingServiceStub(channel)
    response = await stub.Route(routing_pb2.RouteRequest(context=ctx("SMS")), timeout=5)
    assert response.decision == common_pb2.RoutingDecision(
        connector="webhook", queue="sms-queue", priority=3, skills=["texting"], rule="sms"
    )
    response = await stub.Route(routing_pb2.RouteRequest(context=ctx("VIBER")), timeout=5)
    assert response.decision == common_pb2.RoutingDecision(connector="webhook", rule="default")

    explained = await stub.Explain(routing_pb2.ExplainRequest(context=ctx("VIBER")), timeout=5)
    assert explained.rules_source == str(rules_file)
    assert explained.decision.rule == "default"
    assert [(e.rule, e.matched, list(e.reasons)) for e in explained.evaluations] == [
        ("sms", False, ["channel VIBER in [SMS]: no"])
    ]


async def test_language_falls_back_to_metadata(tmp_path: Path) -> None:
    path = tmp_path / "lang.yaml"
    write_rules(path, "rules:\n  - name: de\n    match: {language: de}\n    route: {queue: de}\n")
    server = await start(build, settings({"CCBRIDGE_ROUTING_RULES": str(path)}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = routing_pb2_grpc.RoutingServiceStub(ch)
            response = await stub.Route(
                routing_pb2.RouteRequest(context=ctx(lang="de-CH")), timeout=5
            )
            assert response.decision.rule == "de"
    finally:
        await server.stop()


async def test_reload_on_change_and_broken_file_keeps_last_good(
    channel: grpc.aio.Channel, rules_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stub = routing_pb2_grpc.RoutingServiceStub(channel)
    request = routing_pb2.RouteRequest(context=ctx("WHATSAPP", ("vip",)))

    write_rules(rules_file, RULES_V2)
    response = await stub.Route(request, timeout=5)
    assert response.decision == common_pb2.RoutingDecision(
        connector="rt", queue="vip", priority=9, rule="whatsapp-vip"
    )

    with caplog.at_level(logging.ERROR, logger="ccbridge.services.routing.store"):
        write_rules(rules_file, RULES_V2 + "    unexpected: key\n")
        response = await stub.Route(request, timeout=5)
    assert response.decision.rule == "whatsapp-vip"  # the last good rules still apply
    assert any(
        "keeping the last good rules" in r.getMessage() and "unexpected" in r.getMessage()
        for r in caplog.records
    )

    os.unlink(rules_file)  # a vanished file also keeps the last good rules
    response = await stub.Route(request, timeout=5)
    assert response.decision.rule == "whatsapp-vip"

    write_rules(rules_file, RULES_V1)
    response = await stub.Route(routing_pb2.RouteRequest(context=ctx("SMS")), timeout=5)
    assert response.decision.rule == "sms"


async def test_background_reload_without_calls(rules_file: Path) -> None:
    store = RulesStore(str(rules_file), default_connector="webhook", reload_s=0.02)
    store.load_initial()
    store.start()
    try:
        write_rules(rules_file, RULES_V2)
        for _ in range(500):
            current = store.current
            if current is not None and current.default.connector == "rt":
                break
            await asyncio.sleep(0.01)
        assert store.current is not None
        assert [r.name for r in store.current.rules] == ["whatsapp-vip"]
    finally:
        await store.stop()


async def test_reload_checks_are_rate_limited(rules_file: Path) -> None:
    now = [100.0]
    store = RulesStore(
        str(rules_file), default_connector="webhook", reload_s=2.0, clock=lambda: now[0]
    )
    store.load_initial()
    write_rules(rules_file, RULES_V2)
    assert [r.name for r in store.rules.rules] == ["sms"]  # checked less than 2 s ago
    now[0] += 2.0
    assert [r.name for r in store.rules.rules] == ["whatsapp-vip"]


async def test_no_rules_file_means_default_route_only() -> None:
    server = await start(build, settings({"CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "rt"}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = routing_pb2_grpc.RoutingServiceStub(ch)
            explained = await stub.Explain(
                routing_pb2.ExplainRequest(context=ctx("SMS")), timeout=5
            )
            assert explained.decision == common_pb2.RoutingDecision(connector="rt", rule="default")
            assert explained.rules_source == ""
            assert list(explained.evaluations) == []
            health = health_pb2_grpc.HealthStub(ch)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop()


async def test_invalid_initial_file_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    write_rules(path, "rules:\n  - name: a\n    route: {queue: [1]}\n")
    with pytest.raises(RulesError, match="queue must be a string"):
        await start(build, settings({"CCBRIDGE_ROUTING_RULES": str(path)}))
    with pytest.raises(RulesError, match="cannot read"):
        await start(build, settings({"CCBRIDGE_ROUTING_RULES": str(tmp_path / "missing.yaml")}))


def test_settings_errors_are_reported_together() -> None:
    from ccbridge.services.runtime.settings import SettingsError

    with pytest.raises(SettingsError) as info:
        RoutingSettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_ROUTING_RELOAD_S": "soon",
                "CCBRIDGE_ROUTING_PORT": "x",
            }
        )
    assert "CCBRIDGE_ROUTING_RELOAD_S" in str(info.value)
    assert "CCBRIDGE_ROUTING_PORT" in str(info.value)
