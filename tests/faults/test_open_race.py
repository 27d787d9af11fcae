"""An agent replies to a case whose ``case.open`` answer the bridge never got: the CCaaS
created the case, the connector timed out (or the answer was lost), and the opening's
retry has not linked the case yet. Many contact centers greet at once when a case opens,
so the reply can arrive in that window.

Found by the fault matrix (``ccaas-timeouts``, where it happens by chance): the reply was
answered 2xx and dropped ("ignored": the bridge knew no such case), so the CCaaS never
sent it again and it never reached the end user. Now it is parked until the opening's
retry links the case (docs/faults.md, "Fixed after the fault matrix found it"). Part of
the fast subset (about 10 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import FAULT_ENV, start_redis
from tests.support.mesh import inbound_text, post_until_accepted, running_mesh, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(600)


def test_an_agent_reply_racing_a_lost_case_open_answer_is_delivered(
    tmp_path: Path, redis_servers: list[RedisServer]
) -> None:
    redis = start_redis(redis_servers)
    env = {**FAULT_ENV, "CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S": "1"}
    with running_mesh(redis.url, tmp_path / "logs", env) as mesh:
        cid = mesh.conversation(history=2)["id"]
        # The next bridge call (the case.open) hangs past the connector's timeout, then is
        # carried out: the case exists at the CCaaS, the bridge did not get its id.
        mesh.ccaas.post("/_sim/fail", json={"count": 1, "status": 0, "delayMs": 3000})
        assert mesh.escalate(cid).status_code == 202
        post_until_accepted(mesh.gateway, mesh.webhook_path, inbound_text(cid, f"{cid}-1", "hi"))
        case = wait_for("the case at the CCaaS", lambda: mesh.case_for(cid))
        # The agent greets at once; as a CCaaS, the simulator's driver sends the reply
        # again until it is answered 2xx.
        reply = {"text": "Hello, how can I help?", "messageId": "greeting"}
        wait_for(
            "the reply to be acknowledged",
            lambda: (
                200
                <= mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/reply", json=reply).json()[
                    "bridgeStatus"
                ]
                < 300
            ),
        )
        # Acknowledged: it must reach the end user.
        wait_for(
            "the acknowledged reply at Infobip",
            lambda: [m["content"]["text"] for m in mesh.agent_messages(cid)] == [reply["text"]],
            timeout_s=60,
        )


def test_a_case_close_racing_a_lost_case_open_answer_closes_the_conversation(
    tmp_path: Path, redis_servers: list[RedisServer]
) -> None:
    """The agent replies and closes the case before the opening's retry links it: both
    are parked, then applied in order: the reply reaches the end user, then the Infobip
    conversation is closed."""
    redis = start_redis(redis_servers)
    env = {**FAULT_ENV, "CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S": "1"}
    with running_mesh(redis.url, tmp_path / "logs", env) as mesh:
        cid = mesh.conversation(history=2)["id"]
        mesh.ccaas.post("/_sim/fail", json={"count": 1, "status": 0, "delayMs": 3000})
        assert mesh.escalate(cid).status_code == 202
        case = wait_for("the case at the CCaaS", lambda: mesh.case_for(cid))
        reply = {"text": "Solved, goodbye.", "messageId": "bye"}
        for route, body in (("reply", reply), ("close", {"reason": "resolved"})):
            wait_for(
                f"the {route} to be acknowledged",
                lambda route=route, body=body: (
                    200
                    <= mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/{route}", json=body).json()[
                        "bridgeStatus"
                    ]
                    < 300
                ),
            )
        wait_for(
            "the acknowledged reply at Infobip",
            lambda: [m["content"]["text"] for m in mesh.agent_messages(cid)] == [reply["text"]],
            timeout_s=60,
        )
        wait_for(
            "Infobip CLOSED",
            lambda: mesh.infobip.get(f"/_sim/conversations/{cid}").json()["status"] == "CLOSED",
            timeout_s=60,
        )
        wait_for("handover CLOSED", lambda: mesh.handover(cid).get("state") == "CLOSED")
