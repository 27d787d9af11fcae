"""Redis errors other than connection loss (a failover's READONLY, OOM, a cluster's MOVED,
ASK, TRYAGAIN, CLUSTERDOWN), raised in Session, come out of the gateway as 503 with
Retry-After, never 500: through the real error interceptor (services/runtime/server.py),
on a unary call and on the ingest stream, to the gateway's one table (gateway/errors.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import ESCALATION_TOKEN, Peers, assert_error
from tests.gateway.test_infobip_events import CONV, inbound_event, post_signed
from tests.runtime.test_error_policy import REDIS_TRANSIENT

AUTH = {"Authorization": f"Bearer {ESCALATION_TOKEN}"}


@pytest.mark.parametrize("name", sorted(REDIS_TRANSIENT))
async def test_redis_replies_answer_503_with_retry_after(
    gateway: httpx.AsyncClient, peers: Peers, name: str
) -> None:
    peers.session.open(CONV)
    peers.session.error = REDIS_TRANSIENT[name]()
    answers = {
        "escalation": await gateway.post(
            "/v1/escalations", json={"conversationId": CONV}, headers=AUTH
        ),
        "handover": await gateway.get(f"/v1/handovers/{CONV}", headers=AUTH),
        "webhook": await post_signed(gateway, inbound_event()),
    }
    for what, answer in answers.items():
        assert answer.status_code == 503, (what, answer.text)
        assert_error(answer, 503, "unavailable")
        assert answer.headers["retry-after"] == "1", what
    assert {call.rpc for call in peers.session.calls} == {"Escalate", "GetHandover", "Ingest"}
