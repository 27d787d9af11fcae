"""Recovery with two Session replicas on one Redis (issue 13, A.1-A.3), real processes:
the two directions never wait on each other, a far side's backlog drains at once when it
recovers, a killed replica's work resumes without waiting out its leases, and a paused
replica never sends an agent reply its successor sends too.

Each test prints what it measured (``pytest -s``); the assertions are about outcomes
(exactly once, while the other side is still down), never about timing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ccbridge.services.local.supervisor import free_port
from tests.support.mesh import Mesh, running_mesh, start_component, wait_for

pytestmark = pytest.mark.e2e

LEASE_TTL_MS = 15000  # the production default: a takeover must not wait it out
SECOND = "session-b"
CREATE_MESSAGE = {"method": "POST", "path_prefix": "/ccaas/1/conversations/"}


@pytest.fixture(scope="module")
def mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = Path(tmp_path_factory.mktemp("recovery-mesh-logs"))
    env = {
        "CCBRIDGE_LEASE_TTL_MS": str(LEASE_TTL_MS),
        # Production back-offs: a recovered far side must not wait for them.
        "CCBRIDGE_RETRY_BASE_MS": "500",
        "CCBRIDGE_RETRY_MAX_MS": "60000",
        "CCBRIDGE_INFOBIP_READBACK_DELAY_MS": "500",
    }
    # Plaintext: the second Session replica has no certificate of the mesh's CA.
    with running_mesh(redis_url, log_dir, env, mtls=False) as handle:
        port = free_port()
        handle.ports[SECOND] = port
        handle.group.start(
            SECOND,
            {**handle.env, "CCBRIDGE_SESSION_PORT": str(port)},
            port,
            module="ccbridge.services.session",
        )
        handle.group.wait_ready(SECOND, "grpc", peer="session")
        _route_to_sessions(handle)
        yield handle


def _route_to_sessions(mesh: Mesh) -> None:
    """The gateway and the connector call both Session replicas (round robin)."""
    ports = [mesh.ports["session"], mesh.ports[SECOND]]
    mesh.env["SESSION_ADDR"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    for name in ("connector", "gateway"):
        mesh.group.stop(name)
        start_component(mesh, name)


def _restart_session(mesh: Mesh, name: str) -> None:
    env = {**mesh.env, "CCBRIDGE_SESSION_PORT": str(mesh.ports[name])}
    mesh.group.start(name, env, mesh.ports[name], module="ccbridge.services.session")
    mesh.group.wait_ready(name, "grpc", peer="session")


def _open(mesh: Mesh, count: int) -> dict[str, str]:
    """``count`` ACTIVE handovers: conversation id → case id."""
    cids = [mesh.conversation(history=1)["id"] for _ in range(count)]
    for cid in cids:
        assert mesh.escalate(cid).status_code == 202
    cases = {
        cid: wait_for("the case", lambda cid=cid: mesh.case_for(cid))["caseId"] for cid in cids
    }
    for cid in cids:
        wait_for("ACTIVE", lambda cid=cid: mesh.handover(cid).get("state") == "ACTIVE")
    return cases


def _reply(mesh: Mesh, case_id: str, text: str) -> None:
    answer = mesh.ccaas.post(f"/_sim/cases/{case_id}/reply", json={"text": text})
    assert answer.json()["bridgeStatus"] == 200


def _agent_texts(mesh: Mesh, cid: str) -> list[str]:
    return [m["content"]["text"] for m in mesh.agent_messages(cid)]


def _all_replies(mesh: Mesh, expected: dict[str, list[str]]) -> bool:
    return all(len(_agent_texts(mesh, cid)) >= len(texts) for cid, texts in expected.items())


def _lease_holders(client: redis.Redis, lane: str) -> list[str]:
    """The replica ids the lane's held leases name ('' for a token without one)."""
    holders = []
    for key in client.scan_iter(f"ccb:lease:{lane}:*"):
        token = client.get(key)
        if token:
            holders.append(token.decode().partition("@")[2])
    return holders


def test_agent_replies_reach_infobip_while_the_ccaas_is_down(mesh: Mesh) -> None:
    cases = _open(mesh, 4)
    mesh.ccaas.post("/_sim/down").raise_for_status()
    try:
        for cid in cases:  # the inbox backs off behind a down CCaaS
            for i in range(3):
                assert mesh.send(cid, f"user {i}")["webhook_status"] == 200
        client = redis.Redis.from_url(mesh.redis_url)
        wait_for(
            "the inbox back-offs",
            lambda: all(int(client.hget(f"ccb:h:{{{cid}}}", "in_attempts") or 0) for cid in cases),
        )
        started = time.monotonic()
        latencies = []
        for cid, case_id in cases.items():
            sent = time.monotonic()
            _reply(mesh, case_id, f"agent to {cid}")
            wait_for("the agent reply", lambda cid=cid: _agent_texts(mesh, cid))
            latencies.append(time.monotonic() - sent)
        # Every reply arrived while the CCaaS was still down.
        assert mesh.ccaas.get("/_sim/status").json()["down"] is True
        print(
            f"\nagent replies with the CCaaS down: max {max(latencies) * 1000:.0f} ms, "
            f"all in {(time.monotonic() - started) * 1000:.0f} ms"
        )
    finally:
        mesh.ccaas.post("/_sim/up").raise_for_status()
    for cid in cases:
        wait_for("the inbox", lambda cid=cid: len(mesh.customer_texts(cid)) >= 3)
        assert mesh.customer_texts(cid)[-3:] == ["user 0", "user 1", "user 2"]


def _replica_of(mesh: Mesh, name: str) -> str:
    """The replica id a Session process logged when it wrote its liveness key."""
    log_path = mesh.group.procs[name].log_path
    assert log_path is not None
    for line in log_path.read_text(errors="replace").splitlines():
        if '"liveness key written"' in line:
            return str(json.loads(line)["replica"])
    raise AssertionError(f"{name} logged no replica id")


def _queue_replies(mesh: Mesh, cases: dict[str, str], rounds: int) -> dict[str, list[str]]:
    expected: dict[str, list[str]] = {cid: [] for cid in cases}
    for round_ in range(rounds):
        for cid, case_id in cases.items():
            text = f"reply {round_} to {cid}"
            _reply(mesh, case_id, text)
            expected[cid].append(text)
    return expected


def _slow_create_message(mesh: Mesh) -> None:
    mesh.infobip.post(
        "/_sim/failures", json={"count": 100000, "status": 0, "delay_ms": 200, **CREATE_MESSAGE}
    ).raise_for_status()


def test_a_paused_replica_never_sends_a_reply_its_successor_sends(mesh: Mesh) -> None:
    """SIGSTOP of a replica while it holds outbox leases mid-send (Create Message takes
    200 ms) for longer than the lease, then SIGCONT: every reply reaches Infobip exactly
    once."""
    client = redis.Redis.from_url(mesh.redis_url)
    cases = _open(mesh, 6)
    replicas = {_replica_of(mesh, name): name for name in ("session", SECOND)}
    _slow_create_message(mesh)
    try:
        expected = _queue_replies(mesh, cases, 6)
        holders = wait_for("an outbox lease held", lambda: _lease_holders(client, "out"))
        paused = mesh.group.procs[replicas[holders[0]]]
        os.kill(paused.popen.pid, signal.SIGSTOP)
        try:
            time.sleep(LEASE_TTL_MS / 1000 + 1)  # longer than the lease
        finally:
            os.kill(paused.popen.pid, signal.SIGCONT)
        wait_for("every reply", lambda: _all_replies(mesh, expected), timeout_s=120)
        time.sleep(3)  # a late duplicate from the resumed replica would show by now
    finally:
        mesh.infobip.delete("/_sim/failures").raise_for_status()
    for cid, texts in expected.items():
        assert _agent_texts(mesh, cid) == texts, cid


def test_a_killed_replicas_work_resumes_without_waiting_out_its_leases(mesh: Mesh) -> None:
    """SIGKILL of a replica while replies flow (Create Message takes 200 ms, so it holds
    outbox leases mid-send): how long until every reply reached Infobip (each once)."""
    cases = _open(mesh, 6)
    _slow_create_message(mesh)
    victim = "session"
    try:
        expected = _queue_replies(mesh, cases, 6)
        client = redis.Redis.from_url(mesh.redis_url)
        wait_for("outbox leases held", lambda: len(_lease_holders(client, "out")) >= 2)
        killed = time.monotonic()
        mesh.group.kill(victim)
        wait_for("every reply", lambda: _all_replies(mesh, expected), timeout_s=120)
        took = time.monotonic() - killed
        print(f"\nafter SIGKILL of a Session replica mid-send: all replies in {took:.1f} s")
    finally:
        mesh.infobip.delete("/_sim/failures").raise_for_status()
        if victim not in mesh.group.procs:
            _restart_session(mesh, victim)
    for cid, texts in expected.items():
        assert _agent_texts(mesh, cid) == texts, cid


def test_a_far_sides_backlog_drains_at_once_when_it_recovers(mesh: Mesh) -> None:
    """Infobip answers 503 to every Create Message and the CCaaS is down for 20 s while
    both directions queue up (production back-offs, up to a minute): once both answer
    again, how long until everything queued reached them (each once, in order)."""
    cases = _open(mesh, 6)
    mesh.infobip.post(
        "/_sim/failures", json={"count": 1_000_000, "status": 503, **CREATE_MESSAGE}
    ).raise_for_status()
    mesh.ccaas.post("/_sim/down").raise_for_status()
    try:
        expected = _queue_replies(mesh, cases, 2)
        for cid in cases:
            for i in range(2):
                assert mesh.send(cid, f"backlog {i}")["webhook_status"] == 200
        time.sleep(20)  # an outage long enough for the back-offs to grow
    finally:
        mesh.infobip.delete("/_sim/failures").raise_for_status()
        mesh.ccaas.post("/_sim/up").raise_for_status()
    recovered = time.monotonic()

    def drained() -> bool:
        return _all_replies(mesh, expected) and all(
            len(mesh.customer_texts(cid)) >= 2 for cid in cases
        )

    wait_for("the backlog", drained, timeout_s=120)
    took = time.monotonic() - recovered
    print(f"\nbacklog of 6 conversations after a 20 s outage of both far sides: {took:.1f} s")
    for cid, texts in expected.items():
        assert _agent_texts(mesh, cid) == texts, cid
        assert mesh.customer_texts(cid) == ["backlog 0", "backlog 1"], cid


def test_agent_replies_reach_infobip_while_the_ccaas_hangs(mesh: Mesh) -> None:
    """The CCaaS takes the relay's calls and never answers: the inbox's batch waits with
    the inbox leases held, and the agents' replies of those conversations still go."""
    cases = _open(mesh, 4)
    client = redis.Redis.from_url(mesh.redis_url)

    def waiting() -> list[str]:
        return [cid for cid in cases if client.exists(f"ccb:lease:in:{{{cid}}}")]

    mesh.ccaas.post("/_sim/hang").raise_for_status()
    try:
        for cid in cases:
            assert mesh.send(cid, "while it hangs")["webhook_status"] == 200
        held = wait_for("inbox leases held by a waiting call", waiting)
        latencies = []
        for cid in held:
            sent = time.monotonic()
            _reply(mesh, cases[cid], f"agent to {cid}")
            wait_for("the agent reply", lambda cid=cid: _agent_texts(mesh, cid))
            latencies.append(time.monotonic() - sent)
        assert mesh.ccaas.get("/_sim/status").json()["hung"] is True
        assert all("while it hangs" not in mesh.customer_texts(cid) for cid in cases)
        print(f"\nagent replies with the CCaaS hanging: max {max(latencies) * 1000:.0f} ms")
    finally:
        mesh.ccaas.post("/_sim/up").raise_for_status()
    for cid in cases:
        wait_for("the inbox", lambda cid=cid: "while it hangs" in mesh.customer_texts(cid))
        assert mesh.customer_texts(cid).count("while it hangs") == 1
