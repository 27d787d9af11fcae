"""Redis is a hop too: the whole mesh on a TLS-only redis-server (``rediss://``), session
and connector each logged in as its own ACL user with only the commands and keys of
services/runtime/redis_acl.py, the default user off. A handover runs both ways, an
operator lists dead letters and handovers, and Redis's ACL LOG shows that nothing was
denied; each user is refused the other's keys and the server's configuration."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ccbridge.services.local.mesh_ca import MeshCa
from ccbridge.services.runtime.redis_acl import REDIS_COMPONENTS, acl_setuser
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.support.mesh import Mesh, running_mesh, wait_for
from tests.support.redis_server import free_port, redis_binary

pytestmark = pytest.mark.e2e

ADMIN = "ccbridge-admin"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A redis-server with only a TLS port; (admin URL, each component's own URL)."""
    folder = tmp_path_factory.mktemp("tls-redis")
    issued = MeshCa.create(folder / "pki").issue("redis")
    port = free_port()
    admin_password = secrets.token_urlsafe(24)
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(issued.cert),
            "--tls-key-file", str(issued.key),
            "--tls-ca-cert-file", str(issued.ca),
            "--tls-auth-clients", "no",
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--user", ADMIN, "on", f">{admin_password}", "~*", "&*", "+@all",
            "--user", "default", "off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    tls = f"ssl_ca_certs={issued.ca}"
    admin_url = f"rediss://{ADMIN}:{admin_password}@127.0.0.1:{port}/0?{tls}"
    try:
        client = redis.Redis.from_url(admin_url)
        wait_for("TLS redis-server", lambda: _pings(client), timeout_s=10)
        own = {}
        for component in REDIS_COMPONENTS:
            password = secrets.token_urlsafe(24)
            client.execute_command(*acl_setuser(component, password))
            user = f"ccbridge-{component}"
            own[component] = f"rediss://{user}:{password}@127.0.0.1:{port}/0?{tls}"
        client.close()
        yield admin_url, own
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.ConnectionError):
        return bool(client.ping())
    return False


@pytest.fixture(scope="module")
def acl_mesh(
    tls_redis: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    admin_url, own = tls_redis
    log_dir = Path(tmp_path_factory.mktemp("acl-mesh-logs"))
    own_env = {component: {"REDIS_URL": url} for component, url in own.items()}
    with running_mesh(admin_url, log_dir, {}, own_env=own_env) as handle:
        yield handle


def test_a_handover_runs_with_one_least_privilege_user_per_component(acl_mesh: Mesh) -> None:
    mesh = acl_mesh
    admin = redis.Redis.from_url(mesh.redis_url)
    admin.execute_command("ACL", "LOG", "RESET")
    cid = mesh.conversation(history=3)["id"]
    assert mesh.escalate(cid).status_code == 202
    case = wait_for("the case", lambda: mesh.case_for(cid))
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    for text in ("one", "two"):
        assert mesh.send(cid, text)["webhook_status"] == 200
    wait_for("both messages", lambda: mesh.customer_texts(cid) == ["one", "two"])
    reply = mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/reply", json={"text": "hi"})
    assert reply.json()["bridgeStatus"] == 200
    wait_for("the agent reply", lambda: len(mesh.agent_messages(cid)) == 1)
    with mesh.grpc_channel("session") as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        stub.ListDeadLetters(session_pb2.ListDeadLettersRequest(), timeout=10)
        listed = stub.ListHandovers(
            session_pb2.ListHandoversRequest(state=session_pb2.HANDOVER_STATE_ACTIVE), timeout=10
        )
        assert cid in [h.conversation_id for h in listed.handovers]
    closed = mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/close", json={"reason": "done"})
    assert closed.json()["bridgeStatus"] == 200
    wait_for("CLOSED", lambda: mesh.handover(cid).get("state") == "CLOSED")
    denied = admin.execute_command("ACL", "LOG")
    assert denied == [], denied
    admin.close()


def test_each_user_is_refused_what_it_does_not_need(
    tls_redis: tuple[str, dict[str, str]],
) -> None:
    _, own = tls_redis
    session = redis.Redis.from_url(own["session"])
    connector = redis.Redis.from_url(own["connector"])
    try:
        for client, foreign_key in ((session, "ccb:rt:cursor:q"), (connector, "ccb:h:{c}")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.get(foreign_key)
            for command in (("CONFIG", "GET", "dir"), ("FLUSHALL",), ("KEYS", "*")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
        assert session.set("ccb:h:{c}", "x") and connector.set("ccb:rt:cursor:q", "1")
    finally:
        session.close()
        connector.close()
