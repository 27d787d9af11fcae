"""A frozen replica (SIGSTOP: its TCP connections stay open, nothing answers) stops
receiving calls within about 2 s, and rejoins once it runs again.

Three routing processes behind one ``ipv4:`` target list (replicas without Kubernetes);
each answers its own default connector (``r0``, ``r1``, ``r2``), so every answer names
the replica that gave it. Calls are fired at a steady rate, as a peer does, whatever the
answers take."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.local.mesh_ca import create_mesh_pki
from ccbridge.services.local.supervisor import ProcessGroup, free_port
from ccbridge.services.runtime.channels import KEEPALIVE_MS, create_channel
from ccbridge.services.runtime.mesh_tls import MeshTls
from tests.support.mesh import CODE_ROOT

pytestmark = pytest.mark.e2e

REPLICAS = 3
FROZEN = "r1"
CALL_EVERY_S = 0.02
DEADLINE_S = 5.0  # CCBRIDGE_GRPC_TIMEOUT_S's default
# The goal is 2 × KEEPALIVE_MS; the rest is margin for a loaded machine. Only calls
# started after it are held to "never sent to the frozen replica".
SETTLE_S = 2 * KEEPALIVE_MS / 1000 + 2.0
WINDOW_S = 3.0


@dataclass(frozen=True)
class Outcome:
    started: float
    answer: str  # the replica that answered, or the status code's name


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[ProcessGroup]:
    pki = create_mesh_pki(tmp_path / "pki")
    group = ProcessGroup(log_dir=tmp_path / "logs", pki=pki)
    try:
        for i in range(REPLICAS):
            port = free_port()
            env = {
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(CODE_ROOT),
                **pki["routing"].env(),  # mutual TLS, as in production
                "CCBRIDGE_ROUTING_PORT": str(port),
                "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": f"r{i}",
                "CCBRIDGE_DRAIN_DELAY_S": "0",
            }
            group.start(f"r{i}", env, port, module="ccbridge.services.routing")
        for name in list(group.procs):
            group.wait_ready(name, "grpc", peer="routing")
        yield group
    finally:
        for proc in group.procs.values():  # a stopped process takes no SIGTERM
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGCONT)
        group.stop_all()


async def _route(stub: routing_pb2_grpc.RoutingServiceStub, outcomes: list[Outcome]) -> None:
    started = time.monotonic()
    try:
        answer = await stub.Route(routing_pb2.RouteRequest(), timeout=DEADLINE_S)
        outcomes.append(Outcome(started, answer.decision.connector))
    except grpc.aio.AioRpcError as exc:
        outcomes.append(Outcome(started, exc.code().name))


async def _fire(
    stub: routing_pb2_grpc.RoutingServiceStub, outcomes: list[Outcome], seconds: float
) -> None:
    """Calls at a steady rate for ``seconds``, then waits for every answer."""
    calls = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        calls.append(asyncio.create_task(_route(stub, outcomes)))
        await asyncio.sleep(CALL_EVERY_S)
    await asyncio.gather(*calls)


async def _until_answered_by(
    stub: routing_pb2_grpc.RoutingServiceStub, replicas: set[str], timeout_s: float = 60.0
) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not replicas <= seen:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered"
        outcomes: list[Outcome] = []
        await _fire(stub, outcomes, 0.5)
        seen |= {o.answer for o in outcomes}


async def test_a_frozen_replica_stops_receiving_calls_and_rejoins(
    replicas: ProcessGroup,
) -> None:
    target = "ipv4:" + ",".join(f"127.0.0.1:{p.port}" for p in replicas.procs.values())
    assert replicas.pki is not None
    caller = replicas.pki["session"]  # Session is who calls routing
    tls = MeshTls(str(caller.cert), str(caller.key), str(caller.ca))
    async with create_channel(target, tls, "routing") as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        everyone = {f"r{i}" for i in range(REPLICAS)}
        await _until_answered_by(stub, everyone)

        replicas.procs[FROZEN].popen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        outcomes: list[Outcome] = []
        # The frozen replica stays frozen until every call has its answer: a call sent
        # to it could only end by its deadline.
        await _fire(stub, outcomes, SETTLE_S + WINDOW_S)
        replicas.procs[FROZEN].popen.send_signal(signal.SIGCONT)

        settled = [o for o in outcomes if o.started >= frozen_at + SETTLE_S]
        assert len(settled) >= 10
        assert {o.answer for o in settled} <= everyone - {FROZEN}, "still sent to the frozen one"
        # Calls caught on the frozen replica's connection before it was dropped got no
        # answer headers: the channel's retry policy sent them to another replica.
        answers = {o.answer for o in outcomes}
        assert answers <= everyone - {FROZEN}, answers

        await _until_answered_by(stub, everyone)
