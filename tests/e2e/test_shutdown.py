"""Graceful shutdown as Kubernetes does it (SIGTERM, then a grace period): health flips
to NOT_SERVING, in-flight work finishes, the process exits 0."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.mesh import Mesh, inbound_text, post_until_accepted, start_component, wait_for

pytestmark = pytest.mark.e2e


def _health(mesh: Mesh, name: str, service: str = "") -> int | None:
    try:
        with mesh.grpc_channel(name) as channel:
            return int(
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
                .status
            )
    except grpc.RpcError:
        return None


@pytest.mark.parametrize("name", ["routing", "history", "connector", "session"])
def test_grpc_service_flips_health_and_exits_zero(mesh: Mesh, name: str) -> None:
    assert _health(mesh, name) == health_pb2.HealthCheckResponse.SERVING
    assert _health(mesh, name, "liveness") == health_pb2.HealthCheckResponse.SERVING
    proc = mesh.group.procs[name]
    proc.popen.send_signal(signal.SIGTERM)
    wait_for(
        "NOT_SERVING during the drain",
        lambda: _health(mesh, name) == health_pb2.HealthCheckResponse.NOT_SERVING,
        5,
    )
    # Bounded by Kubernetes' terminationGracePeriodSeconds (30 s in k8s/base).
    code = proc.popen.wait(30)
    mesh.group.procs.pop(name)
    assert code == 0
    start_component(mesh, name)


def test_session_sigterm_mid_relay_leaves_nothing_half_delivered(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    mesh.escalate(cid)
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    texts = [f"graceful {i:03d}" for i in range(150)]
    docs = [inbound_text(cid, f"{cid}-g-{i}", t) for i, t in enumerate(texts)]
    # Accept everything first (one batch), then stop the session while it relays.
    assert mesh.gateway.post(mesh.webhook_path, json=docs).json()["accepted"] == 150
    wait_for("relay under way", lambda: len(mesh.customer_texts(cid)) >= 10)
    proc = mesh.group.procs.pop("session")
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(30) == 0
    start_component(mesh, "session")
    wait_for("every message", lambda: len(mesh.customer_texts(cid)) >= 150)
    assert mesh.customer_texts(cid) == texts
    keys = [
        d["idempotencyKey"]
        for d in mesh.ccaas.get("/_sim/deliveries").json()["deliveries"]
        if d.get("conversationId") == cid and d.get("type") == "case.message"
    ]
    assert len(keys) == len(set(keys)) == 150, "a graceful stop re-sends nothing"


def test_gateway_finishes_in_flight_requests_then_exits_zero(mesh: Mesh) -> None:
    cid = mesh.conversation(history=2)["id"]
    mesh.escalate(cid)
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    session = mesh.group.procs["session"].popen
    gateway = mesh.group.procs["gateway"]
    result: dict[str, object] = {}

    def post() -> None:
        doc = {
            "id": f"inflight-{uuid.uuid4()}",
            "conversationId": cid,
            "channel": "WHATSAPP",
            "from": "385981234567",
            "to": "447492263897",
            "contentType": "TEXT",
            "content": {"text": "in flight"},
        }
        with httpx.Client(
            base_url=f"http://127.0.0.1:{mesh.ports['gateway']}", timeout=30
        ) as client:
            result["status"] = client.post(mesh.webhook_path, json=doc).status_code

    os.kill(session.pid, signal.SIGSTOP)  # the request now waits inside the gateway
    try:
        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(0.5)
        gateway.popen.send_signal(signal.SIGTERM)
        wait_for(
            "/readyz 503 while draining",
            lambda: (
                httpx.get(f"http://127.0.0.1:{mesh.ports['gateway']}/readyz", timeout=1).status_code
                == 503
            ),
            5,
        )
    finally:
        os.kill(session.pid, signal.SIGCONT)
    thread.join(30)
    assert result["status"] == 200, "the in-flight webhook completed"
    assert gateway.popen.wait(30) == 0
    mesh.group.procs.pop("gateway")
    start_component(mesh, "gateway")
    wait_for("the message", lambda: mesh.customer_texts(cid) == ["in flight"])


def test_webhooks_during_a_session_restart_are_stored_once_each(mesh: Mesh) -> None:
    """Concurrent webhook traffic while Session stops gracefully (its ingest streams end;
    the gateway sends unanswered batches again) and starts again: every webhook is
    answered 200 or 503 (Infobip retries), and each conversation's messages reach the
    CCaaS exactly once, in order."""
    cids = [mesh.conversation(history=2)["id"] for _ in range(4)]
    for cid in cids:
        mesh.escalate(cid)
    for cid in cids:
        wait_for("ACTIVE", lambda cid=cid: mesh.handover(cid).get("state") == "ACTIVE")
    texts = {cid: [f"restart {cid[-4:]} {i:03d}" for i in range(60)] for cid in cids}
    accepted = [0]
    lock = threading.Lock()

    def play(cid: str) -> None:
        with httpx.Client(base_url=mesh.gateway.base_url, timeout=10) as client:
            for i, text in enumerate(texts[cid]):
                post_until_accepted(
                    client, mesh.webhook_path, inbound_text(cid, f"{cid}-r-{i}", text)
                )
                with lock:
                    accepted[0] += 1

    players = [threading.Thread(target=play, args=(cid,)) for cid in cids]
    for player in players:
        player.start()
    wait_for("traffic under way", lambda: accepted[0] >= 40)
    proc = mesh.group.procs.pop("session")
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(30) == 0
    start_component(mesh, "session")
    for player in players:
        player.join(120)
        assert not player.is_alive()
    for cid in cids:
        wait_for("every message", lambda cid=cid: len(mesh.customer_texts(cid)) >= 60)
        assert mesh.customer_texts(cid) == texts[cid], "each message once, in order"
