"""End to end, the paths users complain about: failed openings, Infobip-side closes,
missed close events, far-side refusals, dead letters and replay, operator closes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.support.mesh import Mesh, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def session(mesh: Mesh) -> Iterator[session_pb2_grpc.SessionServiceStub]:
    with mesh.grpc_channel("session") as channel:
        yield session_pb2_grpc.SessionServiceStub(channel)


def _active(mesh: Mesh, history: int = 3) -> tuple[str, str]:
    cid = mesh.conversation(history=history)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    case = mesh.case_for(cid)
    assert case is not None
    return cid, case["caseId"]


def test_unknown_conversation_fails_and_an_operator_retries(
    mesh: Mesh, session: session_pb2_grpc.SessionServiceStub
) -> None:
    cid = f"ghost-{uuid.uuid4()}"
    assert mesh.escalate(cid).status_code == 202
    failed = wait_for("FAILED", lambda: (h := mesh.handover(cid)).get("state") == "FAILED" and h)
    assert "NOT_FOUND" in failed["failureReason"]
    mesh.infobip.post("/_sim/conversations", json={"id": cid, "history": 2}).raise_for_status()
    retried = session.RetryHandover(session_pb2.RetryHandoverRequest(conversation_id=cid))
    assert retried.handover.state == session_pb2.HANDOVER_STATE_OPENING
    wait_for("ACTIVE after retry", lambda: mesh.handover(cid).get("state") == "ACTIVE")


def test_reconciler_closes_a_case_whose_close_event_was_missed(mesh: Mesh) -> None:
    # Closed at Infobip through its API, no webhook sent: only the reconciler can notice.
    mesh.infobip.put("/_sim/config", json={"emit_api_events": False})
    cid, case_id = _active(mesh)
    response = mesh.infobip.put(
        f"/ccaas/1/conversations/{cid}",
        json={"status": "CLOSED"},
        headers={"Authorization": "App e2e-key"},
    )
    assert response.status_code == 200
    wait_for(
        "the reconciler to close the handover",
        lambda: mesh.handover(cid).get("state") == "CLOSED",
        timeout_s=30,
    )
    case = mesh.ccaas.get(f"/_sim/cases/{case_id}").json()
    assert case["status"] == "closed" and case["closedBy"] == "bridge"


def test_infobip_side_close_closes_the_case(mesh: Mesh) -> None:
    # Register the Subscriptions webhook with the real CLI, as an integrator would.
    env = {**mesh.env, "INFOBIP_WEBHOOK_SECRET": mesh.env["INFOBIP_WEBHOOK_SECRET"]}
    url = f"http://127.0.0.1:{mesh.ports['gateway']}/webhooks/infobip/events"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccbridge.services.cli",
            "infobip",
            "subscribe",
            "--url",
            url,
            "--subscription-id",
            f"e2e-{uuid.uuid4().hex[:8]}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cid, case_id = _active(mesh)
    # The end user writes through the Subscriptions webhook too: one message, once.
    mesh.send(cid, "via both webhooks")
    wait_for("the message", lambda: mesh.customer_texts(cid) == ["via both webhooks"])
    closed = mesh.infobip.post(f"/_sim/conversations/{cid}/close").json()
    assert closed["event_status"] == 200  # the signed event was accepted by the gateway
    wait_for(
        "the case to close",
        lambda: mesh.ccaas.get(f"/_sim/cases/{case_id}").json()["status"] == "closed",
    )
    handover = wait_for("CLOSED", lambda: (h := mesh.handover(cid)).get("state") == "CLOSED" and h)
    assert handover["closedBy"] == "INFOBIP"
    assert mesh.customer_texts(cid) == ["via both webhooks"]


def test_refused_message_is_dead_lettered_and_replayable(
    mesh: Mesh, session: session_pb2_grpc.SessionServiceStub
) -> None:
    cid, _case_id = _active(mesh)
    mesh.ccaas.post("/_sim/fail", json={"count": 1, "status": 422, "retryAfter": None})
    mesh.send(cid, "refused once")
    mesh.send(cid, "after the refusal")
    wait_for("the next message", lambda: "after the refusal" in mesh.customer_texts(cid))
    handover = mesh.handover(cid)
    assert handover["deadLetters"] == 1
    letters = session.ListDeadLetters(session_pb2.ListDeadLettersRequest(conversation_id=cid))
    assert [d.message.id for d in letters.dead_letters] and letters.dead_letters[0].queue == "inbox"
    assert "FAILED_PRECONDITION" in letters.dead_letters[0].reason
    session.ReplayDeadLetter(session_pb2.ReplayDeadLetterRequest(id=letters.dead_letters[0].id))
    wait_for("the replayed message", lambda: "refused once" in mesh.customer_texts(cid))
    assert mesh.customer_texts(cid) == ["after the refusal", "refused once"]
    assert mesh.handover(cid)["deadLetters"] == 0


def test_operator_close_closes_both_sides(
    mesh: Mesh, session: session_pb2_grpc.SessionServiceStub
) -> None:
    cid, case_id = _active(mesh)
    session.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id=cid, initiator=session_pb2.CLOSE_INITIATOR_OPERATOR, reason="spam"
        )
    )
    wait_for("CLOSED", lambda: mesh.handover(cid).get("state") == "CLOSED")
    assert mesh.ccaas.get(f"/_sim/cases/{case_id}").json()["status"] == "closed"
    assert mesh.infobip.get(f"/_sim/conversations/{cid}").json()["status"] == "CLOSED"


def test_agent_message_through_the_grpc_api(
    mesh: Mesh, session: session_pb2_grpc.SessionServiceStub
) -> None:
    from ccbridge.common.v1 import common_pb2

    cid, _ = _active(mesh)
    mesh.send(cid, "hello?")  # gives the bridge the end user's address
    wait_for("the message", lambda: mesh.customer_texts(cid) == ["hello?"])
    sent = session.SendAgentMessage(
        session_pb2.SendAgentMessageRequest(
            conversation_id=cid,
            message=common_pb2.Message(
                content_type="TEXT", content_json='{"text": "from an internal system"}'
            ),
        )
    )
    assert not sent.duplicate
    wait_for(
        "the message at Infobip",
        lambda: (
            [m["content"]["text"] for m in mesh.agent_messages(cid)] == ["from an internal system"]
        ),
    )
