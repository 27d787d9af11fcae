"""A rolling upgrade on one Redis: Session pods of an older release (run from ``git
archive`` of its commit) and of this one side by side, then the old ones gone. Live
handovers queued and backed off by the old code, and traffic through both while they
coexist, reach both sides exactly once and in order (docs/deploy.md, "Upgrades"). The
older releases: the one before the delivery lanes (d3ac8b9, one schedule ``ccb:due``) and
the one before the schedule shards (e58c588, ``ccb:due:in`` / ``ccb:due:out``)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.mesh import Mesh, running_mesh, start_component, wait_for

# Each older release → the schedule keys it writes.
OLD_SCHEDULES = {"d3ac8b9": ("ccb:due",), "e58c588": ("ccb:due:in", "ccb:due:out")}
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class OldRelease:
    code: Path  # its ``protos/`` folder, for PYTHONPATH
    schedules: tuple[str, ...]


@pytest.fixture(scope="module", params=sorted(OLD_SCHEDULES))
def old_release(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> OldRelease:
    """An old release's code and the schedule keys it writes."""
    release: str = request.param
    if shutil.which("git") is None:
        pytest.skip("git is needed to check out the old release")
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{release}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip(f"commit {release} is not in this clone's history")
    target = tmp_path_factory.mktemp("old-release")
    archive = target / "old.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), release],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="fully_trusted")
    return OldRelease(target / "protos", OLD_SCHEDULES[release])


@pytest.fixture(scope="module")
def mesh(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, old_release: OldRelease
) -> Iterator[Mesh]:
    """A fresh mesh for each old release."""
    log_dir = Path(tmp_path_factory.mktemp("upgrade-mesh-logs"))
    # The old release predates mutual TLS: this mesh is plaintext (docs/deploy.md,
    # "Upgrades": the switch to mTLS is not a mixed-version rollout).
    with running_mesh(
        redis_url, log_dir, {"CCBRIDGE_RECONCILE_INTERVAL_S": "2"}, mtls=False
    ) as handle:
        yield handle


def _start_session(mesh: Mesh, name: str, code: Path, port: int) -> None:
    env = {**mesh.env, "PYTHONPATH": str(code), "CCBRIDGE_SESSION_PORT": str(port)}
    mesh.group.start(name, env, port, module="ccbridge.services.session")
    mesh.group.wait_ready(name, "grpc")


def _route_to_sessions(mesh: Mesh, *ports: int) -> None:
    """Restarts the gateway and the connector with Session at these pods (round robin)."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    mesh.env["SESSION_ADDR"] = target
    for name in ("connector", "gateway"):
        mesh.group.stop(name)
        start_component(mesh, name)


def _agent_texts(mesh: Mesh, cid: str) -> list[str]:
    return [m["content"]["text"] for m in mesh.agent_messages(cid)]


def test_old_and_new_session_pods_share_live_handovers(mesh: Mesh, old_release: OldRelease) -> None:
    old_code = old_release.code
    new_port = mesh.ports["session"]
    old_port = next(p for p in range(new_port + 1, new_port + 200) if p not in mesh.ports.values())
    client = redis.Redis.from_url(mesh.redis_url)

    # 1. Only the old release runs: handovers open and talk both ways.
    mesh.group.stop("session")
    _start_session(mesh, "session-old", old_code, old_port)
    _route_to_sessions(mesh, old_port)
    cids = [mesh.conversation(history=2)["id"] for _ in range(4)]
    for cid in cids:
        assert mesh.escalate(cid).status_code == 202
    cases = {
        cid: wait_for("the case", lambda cid=cid: mesh.case_for(cid))["caseId"] for cid in cids
    }
    for cid in cids:
        wait_for("ACTIVE", lambda cid=cid: mesh.handover(cid).get("state") == "ACTIVE")
    sent: dict[str, list[str]] = {cid: [] for cid in cids}
    replies: dict[str, list[str]] = {cid: [] for cid in cids}

    def talk(round_: str) -> None:
        for cid in cids:
            for i in range(3):
                text = f"{round_} user {i}"
                assert mesh.send(cid, text)["webhook_status"] == 200
                sent[cid].append(text)
            for i in range(2):
                text = f"{round_} agent {i}"
                answer = mesh.ccaas.post(f"/_sim/cases/{cases[cid]}/reply", json={"text": text})
                assert answer.json()["bridgeStatus"] == 200
                replies[cid].append(text)

    def delivered() -> bool:
        return all(
            len(mesh.customer_texts(cid)) >= len(sent[cid])
            and len(_agent_texts(mesh, cid)) >= len(replies[cid])
            for cid in cids
        )

    talk("old")
    wait_for("the old release's deliveries", delivered)

    # 2. Both far sides fail: the old release queues work and backs off, in its layout.
    mesh.ccaas.post("/_sim/down").raise_for_status()
    mesh.infobip.post(
        "/_sim/failures",
        json={"count": 100000, "status": 503, "method": "POST", "path_prefix": "/ccaas/1/"},
    ).raise_for_status()
    talk("queued")
    wait_for(
        "the old release's back-offs",
        lambda: all(
            int(client.hget(f"ccb:h:{{{cid}}}", "in_attempts") or 0) > 0
            and int(client.hget(f"ccb:h:{{{cid}}}", "out_attempts") or 0) > 0
            for cid in cids
        ),
    )
    assert sum(client.zcard(key) for key in old_release.schedules) > 0
    newer = [k for k in ("ccb:due:in", "ccb:due:out") if k not in old_release.schedules]
    assert not client.keys("ccb:due:*:{s*}") and not (newer and client.exists(*newer))

    # 3. The old pod dies mid-flight (its lease and schedule left behind); a new pod
    # takes over what the old one queued.
    mesh.group.kill("session-old")
    _start_session(mesh, "session", Path(mesh.env["PYTHONPATH"]), new_port)
    _route_to_sessions(mesh, new_port)
    mesh.infobip.delete("/_sim/failures").raise_for_status()
    mesh.ccaas.post("/_sim/up").raise_for_status()
    wait_for("the old release's queues, delivered by the new one", delivered, timeout_s=120)

    # 4. An old pod again next to the new one (a rollout under way): traffic through
    # both, with slow Create Message calls so that both want the same heads at once.
    _start_session(mesh, "session-old", old_code, old_port)
    _route_to_sessions(mesh, old_port, new_port)
    mesh.infobip.post(
        "/_sim/failures",
        json={"count": 100000, "status": 0, "delay_ms": 150, "method": "POST"},
    ).raise_for_status()
    talk("mixed")
    talk("mixed again")
    wait_for("deliveries with both releases running", delivered, timeout_s=120)
    mesh.infobip.delete("/_sim/failures").raise_for_status()

    # 5. The old pod leaves (the rollout completes); the new one carries on alone.
    mesh.group.stop("session-old")
    _route_to_sessions(mesh, new_port)
    talk("new")
    wait_for("deliveries by the new release alone", delivered, timeout_s=120)

    for cid in cids:  # each message once, in order, both ways
        assert mesh.customer_texts(cid) == sent[cid]
        assert _agent_texts(mesh, cid) == replies[cid]
        handover = mesh.handover(cid)
        assert (handover["inboxPending"], handover["outboxPending"]) == (0, 0)
        assert handover.get("deadLetters", 0) == 0
    wait_for(
        "the old schedule adopted",
        lambda: not any(client.zcard(key) for key in old_release.schedules),
    )
    client.close()
