"""The zendesk connector's webhook through the real gateway route
(``POST /webhooks/ccaas/zendesk``): Sunshine's static ``X-API-Key`` is checked by the
connector (a wrong or missing key is 401, nothing reaches Session), agent messages are
deduplicated by message id, and the bridge's own echoes are skipped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mesh import Mesh, running_mesh
from tests.support.zendesk import APP_ID, ZendeskPeer, run_setup, zendesk_sim

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def zendesk_mesh(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mesh, ZendeskPeer]]:
    log_dir = Path(tmp_path_factory.mktemp("zendesk-webhook-logs"))
    with zendesk_sim(log_dir) as peer:
        extra = {
            "CCBRIDGE_CONNECTORS": "webhook,zendesk",
            "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "zendesk",
            **peer.env,
        }
        with running_mesh(redis_url, log_dir, extra) as mesh:
            run_setup(mesh.env, mesh.ports["gateway"])
            yield mesh, peer


def _body(conversation: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "app": {"id": APP_ID},
        "webhook": {"id": "f" * 24, "version": "v2"},
        "events": [
            {
                "id": uuid.uuid4().hex[:24],
                "type": "conversation:message",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "payload": {
                    "conversation": {
                        "id": conversation,
                        "type": "personal",
                        "metadata": {"ccbridge_conversation_id": "x"},
                    },
                    "message": message,
                },
            }
        ],
    }


def test_api_key_dedupe_and_echoes(zendesk_mesh: tuple[Mesh, ZendeskPeer]) -> None:
    mesh, peer = zendesk_mesh
    cid = str(mesh.conversation(history=2)["id"])
    assert mesh.escalate(cid).status_code == 202
    found: list[dict[str, Any]] = []
    with httpx.Client(base_url=peer.url, timeout=30) as sim:
        for _ in range(600):  # the opening is asynchronous; a bound, not a timing check
            found = sim.get("/_sim/conversations", params={"conversationId": cid}).json()[
                "conversations"
            ]
            if found and mesh.handover(cid).get("state") == "ACTIVE":
                break
            time.sleep(0.05)
    case = str(found[0]["id"])
    route = "/webhooks/ccaas/zendesk"
    message = {
        "id": uuid.uuid4().hex[:24],
        "received": "2026-01-01T00:00:00.000Z",
        "author": {"type": "business", "displayName": "Alice"},
        "content": {"type": "text", "text": "hello from the agent"},
    }
    body = _body(case, message)
    secret = peer.env["CCBRIDGE_ZENDESK_WEBHOOK_SECRET"]
    for headers in ({}, {"X-API-Key": secret[:-1] + "x"}, {"X-API-Key": ""}):
        refused = mesh.gateway.post(route, json=body, headers=headers)
        assert refused.status_code == 401, refused.text
    first = mesh.gateway.post(route, json=body, headers={"X-API-Key": secret})
    assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    # Sunshine retries with a new event id but the same message: one effect.
    again = mesh.gateway.post(route, json=_body(case, message), headers={"X-API-Key": secret})
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    echo = {**message, "id": uuid.uuid4().hex[:24], "metadata": {"ccbridge_origin": "ccbridge"}}
    skipped = mesh.gateway.post(route, json=_body(case, echo), headers={"X-API-Key": secret})
    assert skipped.json() == {"accepted": 0, "duplicates": 0, "ignored": 1}
    bad = mesh.gateway.post(route, content=b"{", headers={"X-API-Key": secret})
    assert bad.status_code == 400
