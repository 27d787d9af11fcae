"""Starts a throw-away Redis Cluster for tests: three masters (no replicas) from the same
``redis-server`` binary as tests/support/redis_server.py, joined by ``redis-cli --cluster
create``, each on a free loopback port (at most 55535: the cluster bus listens on the
port + 10000)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.redis_server import RedisServer, free_port, redis_binary

MASTERS = 3
_MAX_PORT = 65535 - 10000


def _cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is free too."""
    for _ in range(1000):
        port = free_port()
        if port > _MAX_PORT or port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    cli = Path(redis_binary()).with_name("redis-cli")
    if not cli.exists():
        raise RuntimeError("redis-cli not found next to redis-server")
    return str(cli)


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        [_redis_cli(), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


class RedisClusterServers:
    """Three cluster-enabled redis-server processes joined into one cluster."""

    def __init__(self) -> None:
        taken: set[int] = set()
        self.nodes: list[RedisServer] = []
        for _ in range(MASTERS):
            port = _cluster_port(taken)
            taken.add(port)
            self.nodes.append(
                RedisServer(
                    appendonly=False,
                    port=port,
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",  # in the node's own --dir
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            )

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            _cli(
                self.ports[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            )
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in _cli(p, "CLUSTER", "INFO") for p in self.ports):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not come up")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
