"""The Zendesk simulator as a process for the conformance suite: started before the
mesh (the connector needs its address and credentials), set up with the real
``ccbridge zendesk setup`` command once the gateway is up, and checked on the way out:
the bridge sent nothing the published OpenAPI document does not allow."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from ccbridge.services.local.supervisor import ProcessGroup, free_port
from tests.support.mesh import CODE_ROOT

APP_ID = "5d8cff3cd55b040010928b5b"


@dataclass(frozen=True)
class ZendeskPeer:
    """A running simulator: its URL and the connector settings that reach it."""

    url: str
    env: Mapping[str, str]  # CCBRIDGE_ZENDESK_* for the mesh


@contextlib.contextmanager
def zendesk_sim(log_dir: Path) -> Iterator[ZendeskPeer]:
    port = free_port()
    webhook_secret = secrets.token_hex(16)
    env = {
        "CCBRIDGE_ZENDESK_BASE_URL": f"http://127.0.0.1:{port}",
        "CCBRIDGE_ZENDESK_APP_ID": APP_ID,
        "CCBRIDGE_ZENDESK_KEY_ID": f"app_{secrets.token_hex(8)}",
        "CCBRIDGE_ZENDESK_KEY_SECRET": secrets.token_urlsafe(24),
        "CCBRIDGE_ZENDESK_WEBHOOK_SECRET": webhook_secret,
        "CCBRIDGE_ZENDESK_TIMEOUT_S": "5",
    }
    group = ProcessGroup(log_dir=log_dir)
    group.start(
        "zendesk-sim",
        {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(CODE_ROOT),
            **env,
            # What the simulator gives the webhook the setup command creates.
            "ZENDESK_SIM_WEBHOOK_SECRET": webhook_secret,
        },
        port,
        args=["--port", str(port), "--app-id", APP_ID],
        module="ccbridge.simulators.zendesk",
    )
    try:
        group.wait_ready("zendesk-sim", "http:/_sim/status")
        peer = ZendeskPeer(f"http://127.0.0.1:{port}", env)
        yield peer
        violations = httpx.get(f"{peer.url}/_sim/violations", timeout=30).json()["violations"]
        assert not violations, f"requests the published contract refuses: {violations[:5]}"
    finally:
        group.stop_all()


def run_setup(mesh_env: Mapping[str, str], gateway_port: int) -> dict[str, object]:
    """``ccbridge zendesk setup`` against the simulator, as an operator runs it."""
    env = {k: v for k, v in mesh_env.items() if k != "CCBRIDGE_ZENDESK_WEBHOOK_SECRET"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccbridge.services.cli",
            "zendesk",
            "setup",
            "--target",
            f"http://127.0.0.1:{gateway_port}/webhooks/ccaas/zendesk",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert isinstance(report, dict)
    return report
