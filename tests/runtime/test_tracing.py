"""Tracing's switch and its cost when off (services/runtime/tracing.py): off by default
(nothing installed, no span recorded, nothing exported), OTLP when configured; and the
trace and span ids in log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace

import ccbridge
from ccbridge.services.runtime import tracing
from ccbridge.services.runtime.logging import ConsoleFormatter, JsonFormatter
from ccbridge.services.runtime.settings import CommonSettings, EnvReader, SettingsError
from tests.support.tracing import traced

CODE_ROOT = Path(ccbridge.__file__).resolve().parent.parent


def _mode(env: dict[str, str]) -> str:
    reader = EnvReader({"CCBRIDGE_MESH_INSECURE": "true", **env})
    common = CommonSettings.read(reader)
    reader.done("test")
    return common.tracing


def test_off_unless_switched_on_or_an_otlp_endpoint_is_set() -> None:
    assert _mode({}) == "off"
    assert _mode({"CCBRIDGE_TRACING": "otlp"}) == "otlp"
    assert _mode({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "otlp"
    assert _mode({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}) == "otlp"
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "CCBRIDGE_TRACING": "off"}
    assert _mode(off) == "off"
    with pytest.raises(SettingsError, match="CCBRIDGE_TRACING must be one of off, otlp"):
        _mode({"CCBRIDGE_TRACING": "jaeger"})


# Run in a fresh interpreter: what a component does at start with tracing off, and what
# it then has (the test process has the SDK loaded by other tests).
_OFF_PROBE = """
import sys
import aiohttp, grpc, redis.asyncio
from opentelemetry import trace
original = (grpc.aio.server, grpc.aio.insecure_channel, aiohttp.ClientSession.__init__,
            redis.asyncio.Redis.execute_command)
from ccbridge.gateway.app import create_app
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime import tracing
from ccbridge.services.runtime.logging import trace_ids
env = {"CCBRIDGE_MESH_INSECURE": "true", "CCBRIDGE_ESCALATION_TOKEN": "e" * 16,
       "CCBRIDGE_WEBHOOK_TOKEN": "w" * 16}
settings = GatewaySettings.from_env(env)
installed = tracing.setup_tracing("gateway", settings.common.tracing, environ=env)
app = create_app(settings)
with trace.get_tracer("probe").start_as_current_span("work") as span:
    recording = span.is_recording()
    ids = trace_ids()
    parent = tracing.traceparent()

def never():
    raise AssertionError("iterated with tracing off")
    yield

with tracing.delivery_span("session.relay inbox", never()):
    pass
print({
    "mode": settings.common.tracing,
    "installed": installed is not None or tracing.active() is not None,
    "patched": original != (grpc.aio.server, grpc.aio.insecure_channel,
                            aiohttp.ClientSession.__init__, redis.asyncio.Redis.execute_command),
    "loaded": sorted({m.split(".")[1] + "." + m.split(".")[2] for m in sys.modules
                      if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                                       "opentelemetry.instrumentation."))}),
    "middleware": [m.cls.__name__ for m in app.user_middleware],
    "provider": type(trace.get_tracer_provider()).__name__,
    "recording": recording, "ids": ids, "traceparent": parent,
})
"""


def test_off_by_default_installs_nothing_records_nothing_exports_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OFF_PROBE],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(CODE_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = eval(done.stdout.strip().splitlines()[-1], {})  # a printed dict literal
    assert report == {
        "mode": "off",
        "installed": False,
        "patched": False,
        # No tracing SDK, exporter or instrumentation (redis-py 8 loads the SDK's
        # metrics part for its own, unused, observability).
        "loaded": [],
        "middleware": ["RequestContextMiddleware"],
        "provider": "ProxyTracerProvider",
        "recording": False,
        "ids": None,
        "traceparent": "",
    }


def test_sdk_disabled_wins_over_the_switch() -> None:
    assert tracing.setup_tracing("session", "otlp", environ={"OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.active() is None


@pytest.fixture
def spans() -> Iterator[tracing.Tracing]:
    with traced("session") as (installed, _exporter):
        yield installed


def _record() -> logging.LogRecord:
    return logging.LogRecord("ccbridge.test", logging.INFO, __file__, 1, "step done", (), None)


def test_log_lines_carry_the_trace_and_span_ids_of_the_active_span(
    spans: tracing.Tracing,
) -> None:
    outside = json.loads(JsonFormatter("session").format(_record()))
    assert "trace_id" not in outside and "span_id" not in outside
    with spans.tracer.start_as_current_span("step") as span:
        context = span.get_span_context()
        doc = json.loads(JsonFormatter("session").format(_record()))
        line = ConsoleFormatter("session").format(_record())
    assert doc["trace_id"] == format(context.trace_id, "032x")
    assert doc["span_id"] == format(context.span_id, "016x")
    assert line.endswith(f"[trace={doc['trace_id']} span={doc['span_id']}]")


def test_tracing_is_set_up_once_per_process(spans: tracing.Tracing) -> None:
    with pytest.raises(RuntimeError, match="already set up"):
        tracing.setup_tracing("session", "otlp", environ={})


def test_a_stored_traceparent_is_the_active_span(spans: tracing.Tracing) -> None:
    assert tracing.traceparent() == ""  # no span
    with spans.tracer.start_as_current_span("webhook") as span:
        context = span.get_span_context()
        assert tracing.traceparent() == (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        )


def test_the_service_name_defaults_to_the_component_unless_set(
    spans: tracing.Tracing,
) -> None:
    assert spans.provider.resource.attributes["service.name"] == "ccbridge-session"
    assert trace.get_tracer_provider() is not spans.provider  # the global left alone
