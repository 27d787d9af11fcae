"""The simulator's Get Conversations filters (status and the documented date windows,
paged) and Route Conversation, as the reconciler and the route back use them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from ccbridge.simulators.infobip.state import format_ts, now_utc
from tests.simulators.infobip.harness import API_KEY, Sim, running_sim

AUTH = {"Authorization": f"App {API_KEY}"}


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with running_sim() as sim:
        yield sim


def infobip_time(moment_text: str) -> str:
    """``+00:00`` → the documented filter format ``+0000``."""
    return moment_text.replace("+00:00", "+0000")


async def test_closed_conversations_updated_after_an_instant_paged(sim: Sim) -> None:
    old = sim.state.create_conversation(status="CLOSED")  # closed a minute ago
    mark = now_utc()
    closed = [sim.state.create_conversation() for _ in range(5)]
    for conversation in closed:
        sim.state.close_from_infobip(conversation.id)
    still_open = sim.state.create_conversation()
    params = {
        "status": "CLOSED",
        "updatedAfter": infobip_time(format_ts(mark - timedelta(milliseconds=1))),
        "orderBy": "updatedAt:asc",
        "limit": 2,
    }
    seen: list[str] = []
    for page in range(3):
        answer = await sim.http.get(
            "/ccaas/1/conversations", params={**params, "page": page}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["pagination"]["totalItems"] == 5
        seen += [c["id"] for c in body["conversations"]]
    # Every one once over the pages (ties in updatedAt are ordered by id).
    assert sorted(seen) == sorted(c.id for c in closed)
    assert old.id not in seen and still_open.id not in seen
    # closedAfter / closedBefore are documented filters too.
    before = await sim.http.get(
        "/ccaas/1/conversations",
        params={"closedBefore": infobip_time(format_ts(mark)), "limit": 999},
        headers=AUTH,
    )
    assert [c["id"] for c in before.json()["conversations"]] == [old.id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"priority": "MEH"}, "priority"),
        ({"updatedAfter": "yesterday"}, "updatedAfter"),
        ({"limit": 1000}, "limit"),
        ({"orderBy": "mood:asc"}, "orderBy"),
    ],
)
async def test_bad_list_parameters_are_400(sim: Sim, params: dict[str, object], field: str) -> None:
    answer = await sim.http.get("/ccaas/1/conversations", params=params, headers=AUTH)
    assert answer.status_code == 400
    exc = answer.json()["requestError"]["serviceException"]
    assert field in exc["validationErrors"]


async def test_route_drops_the_assignee_and_a_closed_conversation_cannot_be_routed(
    sim: Sim,
) -> None:
    conversation = sim.state.create_conversation(agent_id="agent-7")
    routed = await sim.http.post(f"/ccaas/1/conversations/{conversation.id}/route", headers=AUTH)
    assert routed.status_code == 200 and "agentId" not in routed.json()
    assert sim.state.snapshot(conversation.id)["routed"] == 1
    sim.state.close_from_infobip(conversation.id)
    refused = await sim.http.post(f"/ccaas/1/conversations/{conversation.id}/route", headers=AUTH)
    assert refused.status_code == 400
    assert "closed conversation cannot be changed" in refused.text.lower()
    assert sim.state.snapshot(conversation.id)["routed"] == 1
