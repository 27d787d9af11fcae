"""End to end with the bridge's own Infobip agent set (``CCBRIDGE_INFOBIP_AGENT_ID``):
an unassigned conversation is assigned to it at escalation and its replies carry its
id; one already assigned to another agent keeps that agent (issue 11, point 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import Mesh, running_mesh, wait_for

pytestmark = pytest.mark.e2e

BRIDGE_AGENT = "ccbridge-agent-0001"


@pytest.fixture(scope="module")
def mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = Path(tmp_path_factory.mktemp("bridge-agent-mesh-logs"))
    with running_mesh(redis_url, log_dir, {"CCBRIDGE_INFOBIP_AGENT_ID": BRIDGE_AGENT}) as handle:
        yield handle


def _escalated(mesh: Mesh, **extra: str) -> tuple[str, str]:
    cid = mesh.conversation(history=3, **extra)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    case = mesh.case_for(cid)
    assert case is not None
    return cid, case["caseId"]


def _agent_headers(mesh: Mesh, cid: str, case_id: str) -> list[str | None]:
    answer = mesh.ccaas.post(f"/_sim/cases/{case_id}/reply", json={"text": "hello"})
    assert answer.json()["bridgeStatus"] == 200
    sent = wait_for("the reply", lambda: mesh.agent_messages(cid))
    return [m["agentIdHeader"] for m in sent]


def test_unassigned_conversation_is_assigned_to_the_bridge_agent_at_escalation(
    mesh: Mesh,
) -> None:
    cid, case_id = _escalated(mesh)
    # Assigned with the opening, before any reply.
    assert mesh.infobip.get(f"/_sim/conversations/{cid}").json()["agentId"] == BRIDGE_AGENT
    assert _agent_headers(mesh, cid, case_id) == [BRIDGE_AGENT]


def test_conversation_of_another_agent_keeps_it(mesh: Mesh) -> None:
    cid, case_id = _escalated(mesh, agent_id="desk-agent-5")
    assert _agent_headers(mesh, cid, case_id) == ["desk-agent-5"]
    assert mesh.infobip.get(f"/_sim/conversations/{cid}").json()["agentId"] == "desk-agent-5"
