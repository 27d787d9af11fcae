"""The `ccbridge` command as a user runs it: installed entry point, from another folder."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ccbridge.services.local.supervisor import free_port, port_open
from ccbridge.services.runtime.ports import METRICS_PORT_ENV, PORT_ENV

pytestmark = pytest.mark.e2e


def test_demo_plays_a_whole_handover(tmp_path: Path) -> None:
    ports = (*PORT_ENV.values(), *METRICS_PORT_ENV.values())
    env = {**os.environ, **{var: str(free_port()) for var in ports}}
    env.pop("REDIS_URL", None)  # the demo embeds its own Redis
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccbridge.services.cli",
            "up",
            "--demo",
            "--once",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (
        "POST /v1/escalations → 202",
        "opened",
        "3 customer messages arrived",
        "a photo “The box arrived torn” → gateway 200",
        "IMAGE arrived",
        "/media/",  # the photo's link is the gateway's (the CCaaS page can open it)
        "Create Message ×2",
        "a photo (return label) → bridge 200",
        "Create Message IMAGE",
        "shows both photos",
        "conversation CLOSED",
        "handover CLOSED",
    ):
        assert step in result.stdout, result.stdout
    assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or any(
        (tmp_path / "data" / "redis").glob("appendonly*")
    ), "embedded Redis persists (AOF)"


def test_help_works_outside_the_source_tree(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ccbridge.services.cli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for command in ("serve", "up", "sim", "handovers", "dead-letters", "infobip"):
        assert command in result.stdout


def test_installed_wheel_works_without_the_source_tree(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(root),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    wheel = next(wheels.glob("ccbridge-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import ccbridge.services, ccbridge.gateway, ccbridge.simulators.ccaas,"
        " ccbridge.simulators.infobip, ccbridge.session.v1;"
        "from importlib.resources import files;"
        "assert all(m.__file__.startswith(sys.argv[1])"
        " for m in (ccbridge.services, ccbridge.gateway));"
        "import importlib.util;"
        "assert not any(importlib.util.find_spec(n)"
        " for n in ('services', 'gateway', 'simulators'));"
        "assert files('ccbridge.simulators.ccaas').joinpath('ui.html').is_file();"
        "assert files('ccbridge.simulators').joinpath('agent_ui.js').is_file();"
        "assert files('ccbridge.simulators').joinpath('agent_ui.css').is_file();"
        # The Infobip simulator's contract (package data) loads without the source tree.
        "from ccbridge.simulators.infobip.contract import default_contract;"
        "assert default_contract().match('POST', '/ccaas/1/conversations/c/messages');"
        "from ccbridge.simulators.zendesk.contract import SHA256, digest, document_bytes;"
        "assert digest(document_bytes()) == SHA256;"
        "from ccbridge.services.cli import build_parser;"
        " build_parser().parse_args(['serve', 'session'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    scripts = list((target / "bin").glob("ccbridge"))
    assert scripts, "the wheel declares the ccbridge console script"


def test_up_runs_five_processes_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    # The metrics listeners too: `ccbridge up` serves them (checked open below).
    ports = {var: free_port() for var in (*PORT_ENV.values(), *METRICS_PORT_ENV.values())}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "INFOBIP_BASE_URL": "http://127.0.0.1:9",
        "INFOBIP_API_KEY": "k",
        "CCBRIDGE_ESCALATION_TOKEN": "escalation-token",
        "CCBRIDGE_WEBHOOK_TOKEN": "webhook-token-0123456789",
        "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://127.0.0.1:9/case",
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "connector-secret-0123456789",
    }
    env.pop("REDIS_URL", None)
    # A log of an earlier run: this run's logs start fresh (it moves to logs/previous/).
    (tmp_path / "data" / "logs").mkdir(parents=True)
    (tmp_path / "data" / "logs" / "session.log").write_text("stale error of an earlier run\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccbridge.services.cli", "up", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gateway = f"http://127.0.0.1:{ports['CCBRIDGE_HTTP_PORT']}/readyz"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(gateway, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert all(port_open(p) for p in ports.values())
        # The local mesh is mutual TLS with a throwaway CA: the admin commands work with
        # the operator's certificate and not without one.
        pki = tmp_path / "data" / "pki"
        assert all(k.stat().st_mode & 0o777 == 0o600 for k in pki.glob("*.key"))
        session = ["--session", f"127.0.0.1:{ports['CCBRIDGE_SESSION_PORT']}"]
        admin = [sys.executable, "-m", "ccbridge.services.cli", "handovers", *session, "list"]
        operator = {
            "CCBRIDGE_TLS_CERT": str(pki / "operator.crt"),
            "CCBRIDGE_TLS_KEY": str(pki / "operator.key"),
            "CCBRIDGE_TLS_CA": str(pki / "ca.crt"),
        }
        listed = subprocess.run(
            admin, env={**env, **operator}, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        no_cert = subprocess.run(admin, env=env, capture_output=True, text=True, timeout=60)
        assert no_cert.returncode == 2 and "CCBRIDGE_TLS_CERT is required" in no_cert.stderr
        gateway_cert = {**operator, "CCBRIDGE_TLS_CERT": str(pki / "gateway.crt")}
        gateway_cert["CCBRIDGE_TLS_KEY"] = str(pki / "gateway.key")
        refused = subprocess.run(
            admin, env={**env, **gateway_cert}, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not any(port_open(p) for p in ports.values()), "every component stopped"
    assert (tmp_path / "data" / "logs" / "session.log").exists()
    assert "stale error" not in (tmp_path / "data" / "logs" / "session.log").read_text()
    previous = tmp_path / "data" / "logs" / "previous" / "session.log"
    assert "stale error" in previous.read_text()


def test_up_names_every_bad_setting_of_every_component_before_starting_anything(
    tmp_path: Path,
) -> None:
    ports = {var: str(free_port()) for var in PORT_ENV.values()}
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        **ports,
        PORT_ENV["session"]: "not-a-port",
        "CCBRIDGE_ESCALATION_TOKEN": "short",
        "CCBRIDGE_ROUTING_RULES": str(tmp_path / "missing-rules.yaml"),
        "CCBRIDGE_REDIS_APPENDFSYNC": "sometimes",
    }
    with socket.socket() as busy:  # the gateway's port, taken by someone else
        busy.bind(("127.0.0.1", int(ports[PORT_ENV["gateway"]])))
        busy.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ccbridge.services.cli",
                "up",
                "--data-dir",
                str(tmp_path / "d"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr
    assert message.startswith("ccbridge up: nothing was started")
    for problem in (
        "CCBRIDGE_SESSION_PORT must be an integer",  # up's own
        "CCBRIDGE_REDIS_APPENDFSYNC must be one of",
        "CCBRIDGE_ESCALATION_TOKEN must be at least 16 characters  (gateway)",
        "CCBRIDGE_WEBHOOK_TOKEN is required",  # gateway
        "INFOBIP_API_KEY is required (a secret)  (session, history)",  # once, both named
        "CCBRIDGE_WEBHOOK_CONNECTOR_URL is required",  # connector
        "missing-rules.yaml",  # routing's rules file, read as routing reads it
        f"port {ports[PORT_ENV['gateway']]} for gateway is taken: set CCBRIDGE_HTTP_PORT",
    ):
        assert problem in message, message
    assert message.count("INFOBIP_API_KEY is required") == 1
    assert "✓" not in result.stdout, "nothing started"
    assert not any(port_open(int(p)) for p in ports.values() if p.isdigit()), "nothing runs"
    assert not (tmp_path / "d" / "logs").exists()


def test_demo_prints_commands_that_work(tmp_path: Path) -> None:
    """The "Try it yourself" lines run as printed (``ccbridge`` is this interpreter's)."""
    env = {**os.environ, **{var: str(free_port()) for var in PORT_ENV.values()}}
    env.pop("REDIS_URL", None)
    env.pop("SESSION_ADDR", None)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccbridge.services.cli", "up", "--demo", "--data-dir", str(data)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("ccbridge is up"):
                break
        else:
            raise AssertionError("".join(seen))
        printed = "".join(seen)
        assert "\x1b[" not in printed, "no terminal codes in a pipe"
        steps = [line.strip()[2:] for line in seen if line.strip().startswith("$ ")]
        assert any("/v1/escalations" in step and "Bearer " in step for step in steps)
        ccbridge = f"{sys.executable} -m ccbridge.services.cli"
        script = "set -e\n" + "\n".join(
            f"{ccbridge} {step.removeprefix('ccbridge ')}" if step.startswith("ccbridge ") else step
            for step in steps
        )
        clean = {k: v for k, v in env.items() if not k.startswith(("CCBRIDGE_", "INFOBIP_"))}
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ACTIVE" in result.stdout or "OPENING" in result.stdout
        assert "5 ok, 0 failed" in result.stdout, result.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_local_run_keeps_secrets_off_command_lines_and_files_private(tmp_path: Path) -> None:
    """`ccbridge up --demo`: no secret on any process's command line (``ps`` shows them to
    every user), logs and Redis data readable by the user only."""
    secrets = {
        "CCBRIDGE_ESCALATION_TOKEN": "escalation-token-for-the-ps-test",
        "CCBRIDGE_WEBHOOK_TOKEN": "webhook-token-for-the-ps-test",
        "INFOBIP_WEBHOOK_SECRET": "hmac-secret-for-the-ps-test",
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "connector-secret-for-the-ps-test",
        "INFOBIP_API_KEY": "api-key-for-the-ps-test",
    }
    env = {**os.environ, **{var: str(free_port()) for var in PORT_ENV.values()}, **secrets}
    env.pop("REDIS_URL", None)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccbridge.services.cli", "up", "--demo", "--data-dir", str(data)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("ccbridge is up"):
                break
        else:
            raise AssertionError("".join(seen))
        pids = [proc.pid, *_descendants(proc.pid)]
        assert len(pids) >= 8  # up, redis, two simulators, five components
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            for value in secrets.values():
                assert value not in cmdline, (pid, cmdline)
            assert "requirepass" not in cmdline
        assert "redis://:" not in "".join(seen)  # the status lines show no Redis password
        # Every setting of the run, secrets included, for the operator's shell: 0600.
        assert stat.S_IMODE((data / "operator.env").stat().st_mode) == 0o600
        for folder in (data / "logs", data / "redis"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            for path in folder.rglob("*"):
                if path.is_file():
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
