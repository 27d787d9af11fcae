"""One conversation-id rule at every door of the gateway (services/runtime/ids.py): ids
that would path-traverse or break an Infobip URL answer 400 JSON and reach no peer."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, assert_error
from tests.gateway.test_escalations import AUTH
from tests.gateway.test_infobip_events import inbound_event, post_signed, status_event
from tests.gateway.test_infobip_legacy import infobip_message
from tests.runtime.test_infobip_client import BAD_IDS, GOOD_IDS


@pytest.mark.parametrize("cid", BAD_IDS)
async def test_escalation_refuses(gateway: httpx.AsyncClient, peers: Peers, cid: str) -> None:
    response = await gateway.post("/v1/escalations", json={"conversationId": cid}, headers=AUTH)
    assert_error(response, 400, "invalid_conversation_id")
    assert peers.session.calls == []


@pytest.mark.parametrize(
    "raw", ["%2E", "%2E%2E", ".%2E", "%2e%2e", "a%2Fb", "a%3Fb", "a%23b", "a%0A"]
)
async def test_handover_lookup_refuses(gateway: httpx.AsyncClient, peers: Peers, raw: str) -> None:
    # Percent-encoded so that the client sends the id as one path segment.
    response = await gateway.get(
        httpx.URL("http://gateway/v1/handovers/").copy_with(
            raw_path=f"/v1/handovers/{raw}".encode()
        ),
        headers=AUTH,
    )
    if response.status_code == 404:  # "/" decoded by the router: no such route
        assert "%2F" in raw
    else:
        assert_error(response, 400, "invalid_conversation_id")
    assert peers.session.calls == []


@pytest.mark.parametrize("cid", BAD_IDS)
async def test_legacy_webhook_refuses(gateway: httpx.AsyncClient, peers: Peers, cid: str) -> None:
    doc = {"results": [infobip_message("m1"), infobip_message("m2", cid)]}
    response = await gateway.post(f"/webhooks/infobip/{WEBHOOK_TOKEN}", json=doc)
    assert_error(response, 400, "invalid_message")
    assert peers.session.calls == []  # validated before any effect


@pytest.mark.parametrize("cid", BAD_IDS)
async def test_events_webhook_refuses(gateway: httpx.AsyncClient, peers: Peers, cid: str) -> None:
    for events in (
        [inbound_event("m1"), inbound_event("m2", cid)],
        [inbound_event("m1"), status_event("CLOSED", cid)],
    ):
        response = await post_signed(gateway, events)
        assert_error(response, 400, "invalid_event")
    assert peers.session.calls == []  # validated before any effect


async def test_good_ids_pass(gateway: httpx.AsyncClient, peers: Peers) -> None:
    for cid in GOOD_IDS:
        response = await gateway.post("/v1/escalations", json={"conversationId": cid}, headers=AUTH)
        assert response.status_code == 202, response.text
    assert [c.request.conversation_id for c in peers.session.calls] == GOOD_IDS  # type: ignore[attr-defined]
