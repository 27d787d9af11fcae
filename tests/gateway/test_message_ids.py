"""One message-id rule at every door (services/runtime/ids.py): an id with a control
character (a CR/LF would split the Idempotency-Key header towards the CCaaS) or a blank
one answers 400 JSON and reaches no peer; the connector holds the same rule (Session's
gRPC edge: tests/services/session/test_servicer.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from ccbridge.services.connector.adapters.webhook import parse_events
from ccbridge.services.runtime.errors import InvalidArgument
from ccbridge.services.runtime.ids import MESSAGE_ID_MAX_CHARS, is_message_id
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, assert_error
from tests.gateway.test_infobip_events import inbound_event, post_signed
from tests.gateway.test_infobip_legacy import infobip_message

BAD_MESSAGE_IDS = [
    "a\r\nX-Injected: 1",
    "a\nb",
    "a\rb",
    "nul\x00",
    "tab\tin",
    "del\x7f",
    "c1\x85",
    " ",
    "x" * (MESSAGE_ID_MAX_CHARS + 1),
]
GOOD_MESSAGE_IDS = ["f74f3515", "ABGGFlA5FpafAgo6EhpVdL", "e:x", "a b", "ünï-çødé", "x" * 256]


def test_the_rule() -> None:
    assert all(is_message_id(i) for i in GOOD_MESSAGE_IDS)
    assert not any(is_message_id(i) for i in BAD_MESSAGE_IDS)
    assert not is_message_id("") and not is_message_id(7)


@pytest.mark.parametrize("mid", BAD_MESSAGE_IDS)
async def test_events_webhook_refuses(gateway: httpx.AsyncClient, peers: Peers, mid: str) -> None:
    response = await post_signed(gateway, [inbound_event("m1"), inbound_event(mid)])
    assert_error(response, 400, "invalid_message")  # the event's message is bad
    assert peers.session.calls == []  # validated before any effect


@pytest.mark.parametrize("mid", BAD_MESSAGE_IDS[:3])
async def test_legacy_webhook_refuses(gateway: httpx.AsyncClient, peers: Peers, mid: str) -> None:
    doc = {"results": [infobip_message("m1"), infobip_message(mid)]}
    response = await gateway.post(f"/webhooks/infobip/{WEBHOOK_TOKEN}", json=doc)
    assert_error(response, 400, "invalid_message")
    assert peers.session.calls == []


@pytest.mark.parametrize("field", ["id", "message.id", "caseId"])
def test_ccaas_events_refuse(field: str) -> None:
    event: dict[str, object] = {
        "type": "agent.message",
        "id": "e1",
        "caseId": "C-1",
        "message": {"id": "m1", "text": "hi"},
    }
    if field == "message.id":
        event["message"] = {"id": "m\r\n1", "text": "hi"}
    else:
        event[field] = "bad\r\nid"
    with pytest.raises(InvalidArgument, match="control characters"):
        parse_events(json.dumps(event).encode())
