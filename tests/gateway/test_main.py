"""The gateway as it runs in production: ``python -m ccbridge.gateway`` (uvicorn, real HTTP on
loopback, SIGTERM) and ``ccbridge.gateway.__main__.start`` (in-process, port 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from asyncio.subprocess import Process
from pathlib import Path

import httpx
import pytest

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from tests.gateway.conftest import ESCALATION_TOKEN, WEBHOOK_TOKEN, Peers
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


async def _wait_healthy(client: httpx.AsyncClient, url: str, proc: Process) -> None:
    for _ in range(200):
        assert proc.returncode is None, "gateway exited during startup"
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become healthy")


async def test_python_m_gateway_serves_and_stops_on_sigterm(peers: Peers) -> None:
    port = free_port()
    env = {
        **os.environ,
        **peers.env(CCBRIDGE_HTTP_PORT=str(port), LOG_FORMAT="json", CCBRIDGE_SHUTDOWN_GRACE_S="2"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
            await _wait_healthy(client, "/healthz", proc)
            assert (await client.get("/readyz")).status_code == 200
            peers.session.open("conv-main")
            response = await client.post(
                f"/webhooks/infobip/{WEBHOOK_TOKEN}",
                json={
                    "id": "m1",
                    "conversationId": "conv-main",
                    "content": {"text": "secret text"},
                },
            )
            assert response.status_code == 200
            assert "server" not in response.headers
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    logs = (stdout + stderr).decode()
    assert WEBHOOK_TOKEN not in logs  # access log off; tokens never logged
    assert "secret text" not in logs
    assert "draining" in logs


def test_bad_settings_exit_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCBRIDGE_", "INFOBIP_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "CCBRIDGE_ESCALATION_TOKEN" in lines[0] and "CCBRIDGE_WEBHOOK_TOKEN" in lines[0]


async def test_start_in_process_on_port_zero(peers: Peers) -> None:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="0")
    )
    running = await start(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            response = await client.post(
                "/v1/escalations",
                json={"conversationId": "conv-start"},
                headers={"Authorization": f"Bearer {ESCALATION_TOKEN}"},
            )
            assert response.status_code == 202
            assert response.json()["created"] is True
    finally:
        await running.stop()


def test_the_gateway_process_does_not_load_the_redis_client() -> None:
    """The gateway never talks to Redis: importing redis-py there cost ~8 MiB of RSS."""
    probe = (
        "import sys, ccbridge.gateway.__main__;"
        " print(sorted(m for m in sys.modules if m == 'redis'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.stdout.strip() == "[]"


async def test_stop_turns_readiness_false_and_keeps_serving_during_the_drain(peers: Peers) -> None:
    settings = GatewaySettings.from_env(
        peers.env(CCBRIDGE_HTTP_PORT="0", CCBRIDGE_DRAIN_DELAY_S="600")
    )
    running = await start(settings)
    stopping = asyncio.create_task(running.stop())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            assert (await client.get("/readyz")).status_code == 503
            # Still answering: load balancers see "not ready" before connections are refused.
            assert (await client.get("/healthz")).status_code == 200
            assert not stopping.done()
        running.server.should_exit = True  # what a second SIGTERM does: skip the drain
        await stopping
    finally:
        running.server.should_exit = True
        await stopping
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{running.port}/healthz")
