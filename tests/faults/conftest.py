"""Fixtures of the fault matrix (tests/faults, docs/faults.md): its sizes, the JSON
summary, and a mesh of real processes on a Redis of its own (the cases crash it).

Sizes come from the environment so that ``make faults`` runs the whole matrix large while
the default ``pytest`` runs a fast subset small:

- ``CCBRIDGE_FAULTS_CONVERSATIONS``, ``CCBRIDGE_FAULTS_MESSAGES``: conversations per case
  and end-user messages per conversation of the whole matrix (default 20 and 100; an
  agent reply follows every second message);
- ``CCBRIDGE_FAULTS_OUTAGE_S``: how long the CCaaS stays down (default 60);
- ``CCBRIDGE_FAULTS_REPORT``: where the JSON summary goes, the tables next to it as
  ``.txt`` (default: the test session's temp dir).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer

# The fault suite's settings on top of running_mesh's short timers: openings and
# deliveries keep retrying through a minute-long outage (with the production back-off,
# 25 attempts last ~20 minutes; with the tests' 1 s cap, 25 would last ~20 s).
FAULT_ENV = {
    "CCBRIDGE_OPEN_MAX_ATTEMPTS": "1000",
    "CCBRIDGE_DELIVERY_MAX_ATTEMPTS": "1000",
}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class Scale:
    """How big a run of a case is."""

    name: str
    conversations: int
    messages: int
    outage_s: float
    kill_rounds: int  # how often each component is killed

    @property
    def user_messages(self) -> int:
        return self.conversations * self.messages

    def failures(self, per: int) -> int:
        """Injected far-side failures: one per ``per`` end-user messages (at least 2)."""
        return max(2, self.user_messages // per)


FAST = Scale("fast", conversations=4, messages=16, outage_s=4, kill_rounds=1)


def full_scale() -> Scale:
    return Scale(
        "full",
        conversations=_int_env("CCBRIDGE_FAULTS_CONVERSATIONS", 20),
        messages=_int_env("CCBRIDGE_FAULTS_MESSAGES", 100),
        outage_s=float(_int_env("CCBRIDGE_FAULTS_OUTAGE_S", 60)),
        kill_rounds=2,
    )


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = os.environ.get("CCBRIDGE_FAULTS_REPORT", "").strip()
    path = Path(raw) if raw else tmp_path_factory.mktemp("faults") / "faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_suffix(".txt")):  # the figures of this run only
        stale.unlink(missing_ok=True)
    return path


@pytest.fixture
def redis_servers() -> Iterator[list[RedisServer]]:
    """The Redis servers a test starts (``start_redis``): stopped and removed at its end."""
    servers: list[RedisServer] = []
    yield servers
    for server in servers:
        server.stop()


def start_redis(
    servers: list[RedisServer], *, appendfsync: str = "everysec", replica_of: int | None = None
) -> RedisServer:
    replica = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of is not None else []
    server = RedisServer(appendfsync=appendfsync, extra=replica).start()
    servers.append(server)
    return server
