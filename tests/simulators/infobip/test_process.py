"""The simulator as a separate process (``python -m ccbridge.simulators.infobip``), and the
``infobip`` CLI commands against it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccbridge.services.infobip import cli as cli_infobip
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[3]
KEY = "proc-key"


@pytest.fixture
def sim_process() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ccbridge.simulators.infobip",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=2.0) as http:
            for _ in range(400):
                try:
                    if http.get("/_sim/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
                time.sleep(0.05)
            else:
                raise RuntimeError("simulator did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def infobip_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in (
        "INFOBIP_BASE_URL",
        "INFOBIP_API_KEY",
        "INFOBIP_WEBHOOK_SECRET",
        "INFOBIP_WEBHOOK_BASIC_USER",
        "INFOBIP_WEBHOOK_BASIC_PASSWORD",
        "INFOBIP_WEBHOOK_HMAC_ALGORITHM",
    ):
        monkeypatch.delenv(key, raising=False)
    yield


async def test_process_serves_the_api(sim_process: str) -> None:
    async with httpx.AsyncClient(base_url=sim_process, timeout=5.0) as http:
        created = (await http.post("/_sim/conversations", json={"history": 3})).json()
        response = await http.get(
            f"/ccaas/1/conversations/{created['id']}/messages",
            headers={"Authorization": f"App {KEY}"},
        )
        assert response.status_code == 200
        assert response.json()["pagination"]["totalItems"] == 3


async def test_cli_configure_webhook_and_subscribe(
    sim_process: str,
    infobip_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("INFOBIP_BASE_URL", sim_process)
    monkeypatch.setenv("INFOBIP_API_KEY", KEY)
    monkeypatch.setenv("INFOBIP_WEBHOOK_SECRET", "hmac-secret-0123456789")
    webhook = "https://gw.example.com/webhooks/infobip/0123456789abcdef0123"
    code = await asyncio.to_thread(
        cli_infobip.main, ["infobip", "configure-webhook", "--url", webhook]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["statusCode"] == "SUCCESS"
    subscribe = ["infobip", "subscribe", "--url", "https://gw.example.com/webhooks/infobip/events"]
    code = await asyncio.to_thread(cli_infobip.main, [*subscribe, "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["action"] == "created"
    async with httpx.AsyncClient(base_url=sim_process, timeout=5.0) as http:
        config = (await http.get("/_sim/config")).json()
    assert config["webhook_url"] == webhook
    [subscription] = config["subscriptions"]
    assert subscription["events"] == [
        "CONVERSATION_MESSAGE_RECEIVED",
        "CONVERSATION_STATUS_UPDATED",
    ]
    assert subscription["profile"]["webhook"]["notifyUrl"].endswith("/webhooks/infobip/events")
    # A second subscribe changes nothing (idempotent), and the secret never shows.
    code = await asyncio.to_thread(cli_infobip.main, subscribe)
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("unchanged: subscription ccbridge")
    assert "hmac-secret-0123456789" not in captured.err + captured.out


@pytest.mark.parametrize(
    "url",
    [
        "https://gw.example.com/infobip",
        "https://gw.example.com/webhooks/infobip/events",
        "ftp://gw.example.com/webhooks/infobip/token",
        "https://gw.example.com/webhooks/infobip/token?x=1",
    ],
)
def test_cli_rejects_bad_webhook_urls(
    url: str, infobip_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_infobip.main(["infobip", "configure-webhook", "--url", url]) == 2
    assert capsys.readouterr().err.startswith("ccbridge infobip: ")


def test_cli_reports_missing_settings(
    infobip_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_infobip.main(
        ["infobip", "subscribe", "--url", "https://gw.example.com/webhooks/infobip/events"]
    )
    assert code == 2
    err = capsys.readouterr().err
    for key in ("INFOBIP_BASE_URL", "INFOBIP_API_KEY", "INFOBIP_WEBHOOK_SECRET"):
        assert key in err
