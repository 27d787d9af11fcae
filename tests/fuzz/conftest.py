"""Fixtures of the fuzz suites: how many cases to run, hypothesis' settings, the gateway
as a real process in front of the gateway tests' peer doubles, and RSS readings.

``CCBRIDGE_FUZZ_EXAMPLES`` sets the cases of each suite: unset, every suite runs a small
sample (the normal ``pytest`` stays fast); ``make fuzz`` sets it to 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.gateway.conftest import Peers, running_peers
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_ENV = "CCBRIDGE_FUZZ_EXAMPLES"


def fuzz_examples(sample: int) -> int:
    """Cases for one suite: ``CCBRIDGE_FUZZ_EXAMPLES`` when set, else ``sample``."""
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(raw) if raw else sample


def long_run() -> bool:
    """True under ``make fuzz`` (``CCBRIDGE_FUZZ_EXAMPLES`` set)."""
    return bool(os.environ.get(EXAMPLES_ENV, "").strip())


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of one fuzz test: no deadline (no timing assertions), no
    example database in the checkout, and derandomized in the short sample so that CI
    runs the same cases each time (the long run explores)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=not long_run(),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
async def fuzz_peers() -> AsyncIterator[Peers]:
    """The gateway tests' Session and Connector doubles (real grpc.aio servers)."""
    async with running_peers() as peers:
        yield peers


@dataclass
class GatewayProcess:
    """``python -m ccbridge.gateway`` on a free loopback port."""

    proc: asyncio.subprocess.Process
    base_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None


@contextlib.asynccontextmanager
async def gateway_process(env: dict[str, str], log: Path) -> AsyncIterator[GatewayProcess]:
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "CCBRIDGE_HTTP_PORT": str(port),
        "LOG_FORMAT": "json",
        "CCBRIDGE_SHUTDOWN_GRACE_S": "2",
        "CCBRIDGE_DRAIN_DELAY_S": "0",
    }
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ccbridge.gateway",
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=5.0) as client:
            for _ in range(400):
                assert running.alive(), "gateway exited during startup (see its log)"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("gateway did not become ready")
        yield running
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
