"""The whole mesh as separate processes on loopback, as in production, with the Infobip
and CCaaS simulators at the edges (the only doubles) and a real Redis. Shared by the
end-to-end tests and the connector conformance suite."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

import ccbridge
from ccbridge.services.local.mesh_ca import create_mesh_pki
from ccbridge.services.local.run import ORDER, start_mesh, start_simulators
from ccbridge.services.local.supervisor import ProcessGroup, free_port, mesh_env
from ccbridge.services.runtime.channels import create_blocking_channel
from ccbridge.services.runtime.ports import ADDR_ENV, METRICS_PORT_ENV, PORT_ENV
from tests.support.infobip_contract import assert_conforms
from tests.support.redis_server import flush_db

CODE_ROOT = Path(ccbridge.__file__).resolve().parent.parent  # the protos/ folder


@dataclass
class Mesh:
    """Handles to a running mesh: clients for the gateway and both simulators."""

    group: ProcessGroup
    env: dict[str, str]
    ports: dict[str, int]
    redis_url: str
    # Where each process serves /metrics: the gRPC components (and their replicas) on
    # their own port, the gateway on its HTTP port.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    gateway: httpx.Client = field(init=False)
    infobip: httpx.Client = field(init=False)
    ccaas: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.gateway = httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['gateway']}", timeout=30
        )
        self.infobip = httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['infobip-sim']}", timeout=30
        )
        self.ccaas = httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['ccaas-sim']}", timeout=30
        )

    def grpc_channel(self, name: str) -> grpc.Channel:
        """A channel to a component, with the operator's certificate (as ``ccbridge``'s
        admin commands)."""
        return create_blocking_channel(f"127.0.0.1:{self.ports[name]}", self.group.probe_tls, name)

    # -- chatbot / Infobip side --------------------------------------------------------------
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['CCBRIDGE_ESCALATION_TOKEN']}"}

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/infobip/{self.env['CCBRIDGE_WEBHOOK_TOKEN']}"

    def conversation(self, history: int = 10, **extra: Any) -> dict[str, Any]:
        doc = {
            "history": history,
            "channel": "WHATSAPP",
            "endUser": "385981234567",
            "businessSender": "447492263897",
            **extra,
        }
        response = self.infobip.post("/_sim/conversations", json=doc)
        response.raise_for_status()
        return dict(response.json())

    def escalate(self, cid: str, **extra: Any) -> httpx.Response:
        return self.gateway.post(
            "/v1/escalations", headers=self.auth, json={"conversationId": cid, **extra}
        )

    def send(self, cid: str, text: str) -> dict[str, Any]:
        response = self.infobip.post(f"/_sim/conversations/{cid}/send", json={"text": text})
        response.raise_for_status()
        return dict(response.json())

    def handover(self, cid: str) -> dict[str, Any]:
        return dict(self.gateway.get(f"/v1/handovers/{cid}", headers=self.auth).json())

    def agent_messages(self, cid: str) -> list[dict[str, Any]]:
        return list(
            self.infobip.get(f"/_sim/conversations/{cid}/agent-messages").json()["messages"]
        )

    # -- CCaaS side ----------------------------------------------------------------------------
    def case_for(self, cid: str) -> dict[str, Any] | None:
        cases = self.ccaas.get("/_sim/cases", params={"conversationId": cid}).json()["cases"]
        if not cases:
            return None
        return dict(self.ccaas.get(f"/_sim/cases/{cases[0]['caseId']}").json())

    def customer_texts(self, cid: str) -> list[str]:
        case = self.case_for(cid)
        if case is None:
            return []
        return [
            m["content"].get("text", "") for m in case["messages"] if m.get("from") == "customer"
        ]


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Polls ``probe`` until it returns something truthy (no timing assertions: a
    timeout only bounds how long a broken mesh keeps the suite waiting)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}"[:2000])


def inbound_text(cid: str, message_id: str, text: str) -> dict[str, Any]:
    """An inbound Infobip message (legacy webhook body) from the test end user."""
    return {
        "id": message_id,
        "conversationId": cid,
        "channel": "WHATSAPP",
        "from": "385981234567",
        "to": "447492263897",
        "direction": "INBOUND",
        "contentType": "TEXT",
        "content": {"text": text},
    }


def post_until_accepted(client: httpx.Client, path: str, doc: Mapping[str, object]) -> None:
    """Plays Infobip: a 5xx or connection error means 'try again later'."""
    for _ in range(600):
        try:
            response = client.post(path, json=doc)
            if response.status_code == 200:
                return
            assert response.status_code >= 500, response.text
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway never accepted the message")


def replica_role(name: str) -> str:
    """The component a process runs: ``session-2`` is a second ``session``."""
    role, _, number = name.rpartition("-")
    return role if number.isdigit() and role in PORT_ENV else name


def start_component(mesh: Mesh, name: str) -> None:
    """Starts component (or replica) ``name`` on its port in ``mesh.ports`` and waits
    until it is ready."""
    role = replica_role(name)
    env = mesh.env
    if role != name:
        env = {**mesh.env, PORT_ENV[role]: str(mesh.ports[name])}
        if role in METRICS_PORT_ENV and name in mesh.metrics_ports:
            env[METRICS_PORT_ENV[role]] = str(mesh.metrics_ports[name])
    mesh.group.start(name, env, mesh.ports[name], identity=role)
    mesh.group.wait_ready(name, "http:/readyz" if role == "gateway" else "grpc", peer=role)


def scale_out(mesh: Mesh, replicas: Mapping[str, int]) -> list[str]:
    """Runs ``replicas[role]`` processes of each role on the mesh's Redis (``{"session":
    3}``: ``session``, ``session-2``, ``session-3``), their peers dialing every replica
    through an ``ipv4:`` target list (round robin). Restarts the processes already
    running so they take the lists. Returns the names of the replicas added."""
    names = {role: [role] for role in ORDER}
    for role, count in replicas.items():
        names[role] += [f"{role}-{i}" for i in range(2, count + 1)]
        for name in names[role][1:]:
            mesh.ports[name] = free_port()
            if role in METRICS_PORT_ENV and role in mesh.metrics_ports:
                mesh.metrics_ports[name] = free_port()
        if role in ADDR_ENV:
            mesh.env[ADDR_ENV[role]] = "ipv4:" + ",".join(
                f"127.0.0.1:{mesh.ports[n]}" for n in names[role]
            )
    for role in reversed(ORDER):
        mesh.group.stop(role)
    for role in ORDER:  # servers before their callers, as start_mesh
        for name in names[role]:
            start_component(mesh, name)
    return [name for role in ORDER for name in names[role][1:]]


@contextlib.contextmanager
def running_mesh(
    redis_url: str,
    log_dir: Path,
    extra_env: Mapping[str, str],
    *,
    mtls: bool = True,
    own_env: Mapping[str, Mapping[str, str]] | None = None,
    metrics: bool = False,
) -> Iterator[Mesh]:
    """Both simulators and the five components as processes on loopback, with short
    timers (crash recovery and outages resolve in seconds) and ``extra_env`` on top.
    ``mtls``: every gRPC hop is mutual TLS with a throwaway CA (``mesh.group.pki``; the
    operator's certificate for the tests' own calls); else plaintext. ``own_env``: settings
    of single components (e.g. their own Redis users). ``metrics``: the gRPC components
    serve /metrics on ports of their own (``mesh.metrics_ports``); off by default, as in
    production settings, so the many meshes of the suite pick four ports fewer each (every
    port picked before its process binds it is a chance of a collision).

    The Infobip simulator runs with ``--contract strict`` and records every exchange; on
    a normal exit all of them (what the mesh sent, what the simulator answered and
    POSTed) are validated against Infobip's published documents."""
    flush_db(redis_url)
    ports = {name: free_port() for name in (*ORDER, "infobip-sim", "ccaas-sim")}
    base = {
        "PATH": "/usr/bin:/bin",
        # The components run the code under test (a worktree's), not the installed copy.
        "PYTHONPATH": str(CODE_ROOT),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "CCBRIDGE_ESCALATION_TOKEN": secrets.token_urlsafe(16),
        "CCBRIDGE_WEBHOOK_TOKEN": secrets.token_urlsafe(24),
        "INFOBIP_WEBHOOK_SECRET": secrets.token_urlsafe(16),
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": secrets.token_urlsafe(16),
        "INFOBIP_API_KEY": "e2e-key",
        "INFOBIP_BASE_URL": f"http://127.0.0.1:{ports['infobip-sim']}",
        "CCBRIDGE_WEBHOOK_CONNECTOR_URL": f"http://127.0.0.1:{ports['ccaas-sim']}/webhook",
        "CCBRIDGE_CONNECTORS": "webhook",
        "CCBRIDGE_LEASE_TTL_MS": "2000",
        "CCBRIDGE_RETRY_BASE_MS": "100",
        "CCBRIDGE_RETRY_MAX_MS": "1000",
        "CCBRIDGE_SCHEDULER_POLL_MS": "20",
        "CCBRIDGE_RECONCILE_INTERVAL_S": "5",
        "CCBRIDGE_SHUTDOWN_GRACE_S": "2",
        # Used only with CCBRIDGE_MEDIA_PROXY=true (tests/e2e/test_inbound_media.py).
        "CCBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
        "CCBRIDGE_MEDIA_SECRET": secrets.token_urlsafe(24),
        **extra_env,
    }
    if not mtls:
        base["CCBRIDGE_MESH_INSECURE"] = "true"
    # Each component's metrics port is its process's own setting (not in the shared
    # environment): replicas a test starts from ``mesh.env`` serve none, and take no port.
    metrics_ports = {name: free_port() for name in METRICS_PORT_ENV} if metrics else {}
    env = mesh_env(base, ports, redis_url)
    own = {name: dict(values) for name, values in (own_env or {}).items()}
    for name, port in metrics_ports.items():
        own.setdefault(name, {})[METRICS_PORT_ENV[name]] = str(port)
    pki = create_mesh_pki(log_dir / "pki") if mtls else None
    group = ProcessGroup(log_dir=log_dir, pki=pki, own_env=own)
    handle: Mesh | None = None
    record = log_dir / "infobip-exchanges.jsonl"
    try:
        start_simulators(
            group,
            env,
            ports["infobip-sim"],
            ports["ccaas-sim"],
            ports["gateway"],
            contract="strict",
            record=record,
        )
        start_mesh(group, env, ports, quiet=True, metrics_ports=metrics_ports)
        handle = Mesh(group, env, ports, redis_url, {**metrics_ports, "gateway": ports["gateway"]})
        yield handle
        assert_conforms(record)
    except BaseException:
        for proc in group.procs.values():
            print(f"--- {proc.name} log ---\n{proc.tail(60)}")
        raise
    finally:
        if handle is not None:
            handle.gateway.close()
            handle.infobip.close()
            handle.ccaas.close()
        group.stop_all()
