"""The fault matrix (issue 13; docs/faults.md): the whole mesh as real processes, traffic
both ways over many conversations while a component, Redis or a far side fails, and per
direction sent / acknowledged / delivered / lost / duplicated / out of order.

Every case must come out N / N / N / 0 / 0 / 0: each acknowledged message delivered once,
in order. The one exception is the ``everysec`` Redis case, where what Redis's persistence
allows is asserted: at most the writes acknowledged in the second before a crash are lost
(a process SIGKILL loses none: the page cache survives it; a host crash can). Timings are
reported (the table, the JSON summary), never asserted.

A fast subset runs in the default ``pytest``; the whole matrix, larger, under
``-m faults`` (``make faults``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.faults.conftest import FAST, FAULT_ENV, Scale, full_scale, start_redis
from tests.faults.harness import CaseResult, Driver, Tally, Traffic, background, write_summary
from tests.support.mesh import (
    Mesh,
    replica_role,
    running_mesh,
    scale_out,
    start_component,
    wait_for,
)
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_server import RedisServer, free_port

COMPONENTS = ("gateway", "session", "connector", "history", "routing")


@dataclass
class Run:
    """What a fault acts on while the traffic runs."""

    mesh: Mesh
    driver: Driver
    redis: RedisServer | None  # None on Redis Cluster (no case crashes a cluster node)
    scale: Scale
    crashes: list[float] = field(default_factory=list)  # time.time() of Redis crashes


def _restart(run: Run, name: str) -> None:
    run.mesh.group.kill(name)
    run.driver.mark(f"SIGKILL {name}")
    start_component(run.mesh, name)
    run.driver.mark(f"{name} ready again", fault_ended=True)


def kill_each_component(run: Run) -> None:
    names = COMPONENTS * run.scale.kill_rounds
    for i, name in enumerate(names):
        run.driver.wait_progress((i + 1) / (len(names) + 1))
        _restart(run, name)


def crash_redis(run: Run) -> None:
    assert run.redis is not None
    for fraction in (0.3, 0.7):
        run.driver.wait_progress(fraction)
        run.redis.kill()
        run.crashes.append(time.time())
        run.driver.mark("SIGKILL redis")
        time.sleep(1.0)
        run.redis.start()
        run.driver.mark("redis restarted from its AOF", fault_ended=True)


def _hold_redis_fault(run: Run, what: str, start: list[str], end: list[str]) -> None:
    """Puts Redis in a state where it refuses writes with an error reply (not a lost
    connection) for half the outage, then back: every answer meanwhile must be 503 +
    Retry-After (counted by the driver), and nothing acknowledged may be lost."""
    run.driver.wait_progress(0.3)
    assert run.redis is not None
    with redis.Redis.from_url(run.redis.url) as client:
        client.execute_command(*start)
        run.driver.mark(f"Redis {what}")
        time.sleep(max(2.0, run.scale.outage_s / 2))
        client.execute_command(*end)
    run.driver.mark(f"Redis writable again ({' '.join(end)})", fault_ended=True)


def redis_out_of_memory(run: Run) -> None:
    # maxmemory 1 byte under noeviction (Redis's default policy): every write gets OOM.
    _hold_redis_fault(
        run,
        "full: OOM to every write",
        ["CONFIG", "SET", "maxmemory", "1"],
        ["CONFIG", "SET", "maxmemory", "0"],
    )


def redis_read_only(run: Run) -> None:
    # A failover as the old master sees it: made a replica (of a master that is not
    # there, so it keeps its data), every write gets READONLY.
    _hold_redis_fault(
        run,
        "demoted to a replica: READONLY to every write",
        ["REPLICAOF", "127.0.0.1", str(free_port())],
        ["REPLICAOF", "NO", "ONE"],
    )


def ccaas_down(run: Run) -> None:
    run.driver.wait_progress(0.2)
    run.mesh.ccaas.post("/_sim/down").raise_for_status()
    run.driver.mark("CCaaS down")
    time.sleep(run.scale.outage_s)
    run.mesh.ccaas.post("/_sim/up").raise_for_status()
    run.driver.mark("CCaaS up", fault_ended=True)


def _ccaas_fail(run: Run, **failure: Any) -> None:
    run.mesh.ccaas.post("/_sim/fail", json=failure).raise_for_status()
    run.driver.mark(f"CCaaS fails the next calls: {failure}")


def _recovered(run: Run, far_side: str, used_up: Callable[[], bool]) -> None:
    """Marks the end of a far side's injected failures once they are used up (unless
    the traffic ended first: then nothing calls the far side any more)."""
    wait_for(
        f"{far_side}'s injected failures to be used up",
        lambda: used_up() or (run.driver.done and run.driver.all_delivered()),
        timeout_s=900,
    )
    if used_up():
        run.driver.mark(f"{far_side} answers normally again", fault_ended=True)


def _ccaas_recovered(run: Run) -> None:
    _recovered(
        run, "CCaaS", lambda: run.mesh.ccaas.get("/_sim/status").json()["pendingFailures"] == 0
    )


def ccaas_errors(run: Run) -> None:
    run.driver.wait_progress(0.2)
    _ccaas_fail(run, count=run.scale.failures(10), status=500, retryAfter=None)
    _ccaas_recovered(run)


def ccaas_timeouts(run: Run) -> None:
    # The connector gives up after 1 s (CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S): half the
    # hung calls were carried out (their answer comes too late), half then fail.
    run.driver.wait_progress(0.2)
    _ccaas_fail(run, count=run.scale.failures(200), status=0, delayMs=1500)
    _ccaas_fail(run, count=run.scale.failures(200), status=503, delayMs=1500)
    _ccaas_recovered(run)


def infobip_errors(run: Run) -> None:
    run.driver.wait_progress(0.2)
    for failure in (
        {"status": 429, "retry_after": 1, "count": run.scale.failures(20)},
        {"status": 503, "count": run.scale.failures(20)},
        # Stored, then answered 500: the read-back must keep it from being sent twice.
        {"status": 500, "count": run.scale.failures(80), "when": "after"},
    ):
        run.mesh.infobip.post(
            "/_sim/failures",
            json={**failure, "method": "POST", "path_prefix": "/ccaas/1/conversations/"},
        ).raise_for_status()
        run.driver.mark(f"Infobip fails Create Message: {failure}")
    _recovered(
        run, "Infobip", lambda: not run.mesh.infobip.get("/_sim/failures").json()["failures"]
    )


def no_fault(run: Run) -> None:
    del run


def kill_a_session_replica(run: Run) -> None:
    run.driver.wait_progress(0.4)
    run.mesh.group.kill("session-2")
    run.driver.mark("SIGKILL session-2 (not restarted)", fault_ended=True)


@dataclass(frozen=True)
class Case:
    name: str
    fault: Callable[[Run], None]
    fast: bool = False  # also in the default pytest run, small
    appendfsync: str = "everysec"
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    redeliver: bool = False
    cluster: bool = False  # on a local Redis Cluster of three masters (no AOF)


CASES = (
    Case("kill-each-component", kill_each_component, fast=True),
    Case("redis-sigkill-always", crash_redis, fast=True, appendfsync="always"),
    Case("redis-sigkill-everysec", crash_redis),
    Case("redis-oom", redis_out_of_memory, fast=True),
    Case("redis-readonly", redis_read_only, fast=True),
    Case("ccaas-down", ccaas_down, fast=True),
    Case("ccaas-500", ccaas_errors),
    Case("ccaas-timeouts", ccaas_timeouts, env={"CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S": "1"}),
    Case("infobip-429-5xx", infobip_errors),
    Case("redeliveries", no_fault, redeliver=True),
    Case(
        "scale-out",
        kill_a_session_replica,
        replicas={"gateway": 2, "session": 3, "connector": 2},
    ),
    # Redis Cluster: the sharded schedule, held events and far-side gates across masters.
    Case("kill-each-component-cluster", kill_each_component, fast=True, cluster=True),
    Case("ccaas-down-cluster", ccaas_down, cluster=True),
    Case(
        "scale-out-cluster",
        kill_a_session_replica,
        replicas={"gateway": 2, "session": 3, "connector": 2},
        cluster=True,
    ),
)


def _params() -> list[Any]:
    params = [pytest.param(c, FAST, id=f"{c.name}-fast") for c in CASES if c.fast]
    full = full_scale()
    params += [
        pytest.param(c, full, id=c.name, marks=[pytest.mark.faults, pytest.mark.timeout(3600)])
        for c in CASES
    ]
    return params


def _run_case(
    case: Case,
    scale: Scale,
    redis_url: str,
    redis: RedisServer | None,
    tmp_path: Path,
    fault_report: Path,
) -> tuple[list[Tally], Driver, Run]:
    with running_mesh(redis_url, tmp_path / "logs", {**FAULT_ENV, **case.env}) as mesh:
        if case.replicas:
            scale_out(mesh, case.replicas)
        gateways = [
            f"http://127.0.0.1:{port}"
            for name, port in mesh.ports.items()
            if replica_role(name) == "gateway"
        ]
        traffic = Traffic(scale.conversations, scale.messages, redeliver=case.redeliver)
        driver = Driver(mesh, traffic, gateways)
        driver.create_conversations()
        run = Run(mesh, driver, redis, scale)
        started = time.monotonic()
        with background(lambda: case.fault(run)):
            driver.run()
            driver.mark("all traffic acknowledged")
        driver.settle(timeout_s=180 + scale.outage_s)
        driver.mark("settled")
        tallies = driver.tally(run.crashes)
        acked_before_crash = sum(len(driver.acked_between(t - 1.0, t)) for t in run.crashes)
        notes: dict[str, Any] = (
            {"redis": "cluster of three masters"}
            if case.cluster
            else {"redis appendfsync": case.appendfsync}
        )
        if run.crashes:
            notes["acknowledged in the second before a Redis crash"] = acked_before_crash
        result = CaseResult(
            f"{case.name}[{scale.name}]",
            time.monotonic() - started,
            tallies,
            driver.timeline(),
            notes,
        )
        print("\n" + result.table())
        write_summary(fault_report, result)
    return tallies, driver, run


@pytest.mark.parametrize(("case", "scale"), _params())
def test_fault_case(
    case: Case,
    scale: Scale,
    tmp_path: Path,
    redis_servers: list[RedisServer],
    fault_report: Path,
) -> None:
    with contextlib.ExitStack() as stack:
        redis: RedisServer | None = None
        if case.cluster:
            cluster = RedisClusterServers().start()
            stack.callback(cluster.stop)
            url = cluster.url
        else:
            redis = start_redis(redis_servers, appendfsync=case.appendfsync)
            url = redis.url
        tallies, driver, run = _run_case(case, scale, url, redis, tmp_path, fault_report)
    for t in tallies:
        assert not t.refused, f"{t.direction}: {t.refused} refused or never acknowledged"
        assert t.sent == t.acknowledged, t
        assert not t.duplicated and not t.out_of_order, t
        assert not t.server_errors, f"{t.direction}: {driver.server_errors[t.direction]}"
        if case.appendfsync == "everysec" and run.crashes:
            # What everysec allows: only writes acknowledged in the last second before a
            # crash may be gone (a process crash keeps them in the page cache: 0).
            assert t.lost == t.lost_in_last_second, t
        else:
            assert not t.lost, f"{t.direction}: acknowledged but never delivered {t.lost_keys}"
            assert t.delivered == t.acknowledged, t
    if case.appendfsync == "everysec":
        acked_before_crash = sum(len(driver.acked_between(t - 1.0, t)) for t in run.crashes)
        assert sum(t.lost for t in tallies) <= acked_before_crash
