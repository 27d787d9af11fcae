"""A real Request Tracker 5 for the test session, run by scripts/rt-peer.sh.

``rt_peer`` (session fixture) installs RT when it is missing (root and apt needed; about
40 s once), resets it to a clean seeded database, starts it on a free loopback port and
stops it at the end. Where RT cannot run (not root, no apt) the tests are skipped with a
hint. ``CCBRIDGE_TEST_RT_ENV=<path of a peer.env>`` uses an RT that is already running
(no reset, no stop). The fixture is registered once, in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "rt-peer.sh"
HINT = (
    "Request Tracker tests need RT 5 from Debian packages: run "
    "`sudo scripts/rt-peer.sh install` (Debian 12, root), then run pytest as root, "
    "or point CCBRIDGE_TEST_RT_ENV at the peer.env of a running RT"
)
SESSION_WAIT_S = 600.0
CANNOT_RUN = 3  # rt-peer.sh: not root / not Debian
NOT_INSTALLED = 4


@dataclass(frozen=True)
class RtPeer:
    """A running RT: its base URL and the API tokens of the bridge and the agent."""

    url: str  # e.g. http://127.0.0.1:41234/rt
    port: int
    bridge_user: str
    bridge_token: str
    agent_user: str
    agent_token: str
    managed: bool  # started by this test session (so stop/start may be used)

    @property
    def rest2(self) -> str:
        return f"{self.url}/REST/2.0"

    def stop(self) -> None:
        """Stops the server (the database stays); for outage tests."""
        _run("stop")

    def start(self) -> None:
        """Starts it again on the same port."""
        _run("start", "--port", str(self.port))


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines as rt-peer.sh writes them (values with spaces single-quoted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            values[key] = value
    return values


def _run(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode in (CANNOT_RUN, NOT_INSTALLED):
        pytest.skip(f"{HINT} ({done.stderr.strip().splitlines()[-1:]})")
    if done.returncode != 0:
        raise RuntimeError(
            f"rt-peer.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return done.stdout


def _peer(values: dict[str, str], *, managed: bool) -> RtPeer:
    return RtPeer(
        url=values["RT_URL"],
        port=int(values["RT_PORT"]),
        bridge_user=values.get("RT_BRIDGE_USER", "bridge"),
        bridge_token=values["RT_BRIDGE_TOKEN"],
        agent_user=values.get("RT_AGENT1_USER", "agent1"),
        agent_token=values["RT_AGENT1_TOKEN"],
        managed=managed,
    )


@pytest.fixture(scope="session")
def rt_peer() -> Iterator[RtPeer]:
    external = os.environ.get("CCBRIDGE_TEST_RT_ENV")
    if external:
        yield _peer(parse_env(Path(external).read_text()), managed=False)
        return
    if os.geteuid() != 0:
        pytest.skip(HINT)
    _run("install", timeout=900)
    with _session_lock():
        peer = _peer(parse_env(_run("reset", "--port", str(free_port()))), managed=True)
        try:
            yield peer
        finally:
            _run("stop")


@contextlib.contextmanager
def _session_lock() -> Iterator[None]:
    """The RT peer is one per machine: a second test session waits for the first one
    instead of resetting RT under its feet."""
    state = Path(os.environ.get("RT_PEER_DIR", "/var/lib/rt-bridge-peer"))
    state.mkdir(parents=True, exist_ok=True)
    with open(state / ".test-session.lock", "w") as lock:
        deadline = time.monotonic() + SESSION_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another test session has used the RT peer for {SESSION_WAIT_S:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
