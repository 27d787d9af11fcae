"""What every connector must do, through the whole mesh: open with the
transcript, relay customer messages in order and once, give duplicates one effect,
deliver agent replies to Infobip once, close in both directions, survive the far
side going down, and carry every content family both ways (an end user's image,
document, location, contact card, button reply and e-mail reach the agent with their
type and content, files reachable; an agent's file and location reach the end user).
Each test runs once per connector (``bridge`` is parametrized); the far side is driven
only through its own API (tests/conformance/drivers.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conformance.conftest import Bridge
from tests.conformance.drivers import infobip_line, same_line

pytestmark = pytest.mark.e2e


def _history(bridge: Bridge, cid: str) -> list[dict[str, Any]]:
    """The conversation's messages as Infobip holds them, oldest first (all pages)."""
    messages: list[dict[str, Any]] = []
    page = 0
    while True:
        body = bridge.mesh.infobip.get(
            f"/ccaas/1/conversations/{cid}/messages",
            params={"limit": 999, "page": page, "orderBy": "createdAt:asc"},
            headers={"Authorization": f"App {bridge.mesh.env['INFOBIP_API_KEY']}"},
        ).json()
        messages.extend(body["messages"])
        if len(body["messages"]) < 999:
            return messages
        page += 1


def _send_all(bridge: Bridge, cid: str, texts: list[str]) -> None:
    for text in texts:
        sent = bridge.mesh.send(cid, text)
        assert sent["webhook_status"] == 200, sent


def _settled(bridge: Bridge, case: str, cid: str) -> list[str]:
    """Sends one more message and waits until it is the last one on the case: every
    message accepted before it has then been delivered (per-conversation order), so the
    list returned is final, not a snapshot taken while duplicates may still arrive."""
    marker = f"settle {uuid.uuid4().hex[:8]}"
    _send_all(bridge, cid, [marker])
    seen = bridge.eventually(
        f"{marker!r} on the case",
        lambda: m if (m := bridge.far.customer_messages(case)) and m[-1] == marker else None,
    )
    return seen[:-1]


def test_open_with_a_1000_message_transcript(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation(history=1000)
    expected = [infobip_line(m) for m in _history(bridge, cid)]
    assert len(expected) == 1000
    seen = bridge.far.transcript(case)
    assert len(seen) == 1000, f"the agent sees {len(seen)} transcript messages"
    wrong = [
        (i, e, s)
        for i, (e, s) in enumerate(zip(expected, seen, strict=True))
        if not same_line(e, s)
    ]
    assert not wrong, f"{len(wrong)} transcript lines differ, first: {wrong[:3]}"
    # A second escalation of the same conversation opens nothing new.
    again = bridge.mesh.escalate(cid)
    assert again.json()["created"] is False
    assert bridge.far.find_case(cid) == case


def test_customer_messages_arrive_in_order_once(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation()
    texts = [f"in order {i:03d}" for i in range(bridge.far.bulk_messages)]
    # Text survives as written: non-ASCII, emoji, several lines.
    texts[1] = "Grüße aus München 👋 – ça va?"
    texts[2] = "first line\nsecond line"
    _send_all(bridge, cid, texts)
    assert _settled(bridge, case, cid) == texts


def test_duplicate_delivery_has_one_effect(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation()
    handover = bridge.mesh.handover(cid)
    message = {
        "id": f"dup-{uuid.uuid4()}",
        "conversationId": cid,
        "channel": handover["channel"],
        "from": handover["endUser"],
        "to": handover["businessSender"],
        "direction": "INBOUND",
        "contentType": "TEXT",
        "content": {"text": "only once"},
    }
    first = bridge.mesh.gateway.post(bridge.mesh.webhook_path, json=message)
    second = bridge.mesh.gateway.post(bridge.mesh.webhook_path, json=message)
    assert first.status_code == second.status_code == 200
    assert first.json()["accepted"] == 1
    assert second.json()["duplicates"] == 1
    assert _settled(bridge, case, cid) == ["only once"]


def test_agent_reply_reaches_infobip_once(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation()
    conversation = bridge.mesh.infobip.get(f"/_sim/conversations/{cid}").json()
    _send_all(bridge, cid, ["can someone help me?"])
    bridge.eventually(
        "the question on the case",
        lambda: bridge.far.customer_messages(case) == ["can someone help me?"],
    )
    replies = ["Hello, this is Alice.", "Your parcel left the warehouse today 📦 – grüß dich!"]
    for text in replies:
        bridge.far.agent_reply(case, text)
    # The second reply arriving after the first means later polls/redeliveries of the
    # first have had their chance to duplicate it.
    bridge.eventually("both replies at Infobip", lambda: len(bridge.mesh.agent_messages(cid)) >= 2)
    bridge.eventually("an idle outbox", lambda: bridge.mesh.handover(cid)["outboxPending"] == 0)
    sent = bridge.mesh.agent_messages(cid)
    assert [m["content"]["text"] for m in sent] == replies
    for m in sent:
        assert (m["channel"], m["from"], m["to"]) == (
            conversation["channel"],
            conversation["businessSender"],
            conversation["endUser"],
        )
    assert bridge.far.customer_messages(case) == ["can someone help me?"], "no echo"


def test_agent_close_closes_infobip_after_the_last_reply(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation()
    _send_all(bridge, cid, ["thanks, that is all"])
    bridge.eventually(
        "the message on the case",
        lambda: bridge.far.customer_messages(case) == ["thanks, that is all"],
    )
    bridge.far.agent_reply(case, "You're welcome, goodbye!")
    bridge.far.agent_close(case)
    bridge.eventually(
        "the Infobip conversation CLOSED",
        lambda: bridge.mesh.infobip.get(f"/_sim/conversations/{cid}").json()["status"] == "CLOSED",
    )
    handover = bridge.eventually(
        "the handover CLOSED",
        lambda: h if (h := bridge.mesh.handover(cid)).get("state") == "CLOSED" else None,
    )
    assert handover["closedBy"] == "CCAAS"
    # Closed conversations are immutable at Infobip: the reply was sent before the close.
    assert [m["content"]["text"] for m in bridge.mesh.agent_messages(cid)] == [
        "You're welcome, goodbye!"
    ]
    assert bridge.far.is_closed(case)


def test_infobip_side_close_closes_the_case(bridge: Bridge) -> None:
    bridge.subscribe()
    cid, case = bridge.active_conversation()
    # With the subscription, Infobip reports each message twice (both webhooks): one effect.
    _send_all(bridge, cid, ["bye for now"])
    bridge.eventually(
        "the message on the case", lambda: bridge.far.customer_messages(case) == ["bye for now"]
    )
    closed = bridge.mesh.infobip.post(f"/_sim/conversations/{cid}/close").json()
    assert closed["event_status"] == 200, closed
    bridge.eventually("the case closed at the far side", lambda: bridge.far.is_closed(case))
    handover = bridge.eventually(
        "the handover CLOSED",
        lambda: h if (h := bridge.mesh.handover(cid)).get("state") == "CLOSED" else None,
    )
    assert handover["closedBy"] == "INFOBIP"
    assert bridge.far.customer_messages(case) == ["bye for now"]
    assert bridge.mesh.agent_messages(cid) == []


def test_far_side_down_then_back(bridge: Bridge) -> None:
    if not bridge.far.can_go_down:
        pytest.skip(f"{bridge.far.name}: the far side was not started by this test session")
    cid, case = bridge.active_conversation()
    _send_all(bridge, cid, ["before the outage"])
    bridge.eventually(
        "the first message on the case",
        lambda: bridge.far.customer_messages(case) == ["before the outage"],
    )
    texts = [f"during the outage {i:02d}" for i in range(bridge.far.outage_messages)]
    bridge.far.take_down()
    try:
        _send_all(bridge, cid, texts)  # Infobip's side is up: accepted and held
        bridge.eventually(
            "every message held in the inbox",
            lambda: bridge.mesh.handover(cid)["inboxPending"] == len(texts),
        )
    finally:
        bridge.far.bring_back()
    assert _settled(bridge, case, cid) == ["before the outage", *texts]
    assert bridge.mesh.handover(cid)["deadLetters"] == 0


# -- content families (issue 14) ------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 24 + b"\n%%EOF\n"


@dataclass(frozen=True)
class Family:
    """One content family as an end user sends it: Infobip's contentType and content
    (``file``: the bytes stored at Infobip, whose URL goes into ``content.url``), and the
    words the agent must see of it."""

    channel: str
    content_type: str
    content: dict[str, Any]
    shown: tuple[str, ...]
    file: tuple[bytes, str] | None = None


FAMILIES = {
    "image": Family(
        "WHATSAPP", "IMAGE", {"caption": "the broken lid"}, ("the broken lid",), (PNG, "image/png")
    ),
    "document": Family("WHATSAPP", "DOCUMENT", {}, (), (PDF, "application/pdf")),
    "location": Family(
        "WHATSAPP",
        "LOCATION",
        {"latitude": 51.178844, "longitude": -1.826323, "locationName": "Stonehenge"},
        ("51.178844", "-1.826323", "Stonehenge"),
    ),
    "contact": Family(
        "WHATSAPP",
        "CONTACT",
        {
            "contacts": [
                {
                    "name": {
                        "first_name": "Ana",
                        "last_name": "Lima",
                        "formatted_name": "Ana Lima",
                    },
                    "phones": [{"phone": "+351912345678", "type": "CELL"}],
                }
            ]
        },
        ("Ana Lima", "+351912345678"),
    ),
    "button reply": Family(
        "WHATSAPP",
        "INTERACTIVE_BUTTON_REPLY",
        {"id": "ship-now", "title": "Ship it now"},
        ("ship-now", "Ship it now"),
    ),
    "email": Family(
        "EMAIL",
        "EMAIL",
        {"subject": "Broken kettle", "contentText": "It leaks since Monday."},
        ("Broken kettle", "It leaks since Monday."),
    ),
}


def _opened(bridge: Bridge, url: str) -> bytes:
    """The file behind an inbound media link: the gateway's signed link, opened without
    any credential (as the agent's browser or the far side's server would)."""
    assert url.startswith(f"http://127.0.0.1:{bridge.mesh.ports['gateway']}/media/"), url
    opened = bridge.mesh.gateway.get(urlsplit(url).path)
    assert opened.status_code == 200, opened.text
    return opened.content


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_end_user_content_reaches_the_agent_with_its_type(bridge: Bridge, family: str) -> None:
    sent = FAMILIES[family]
    cid, case = bridge.active_conversation(channel=sent.channel)
    content = dict(sent.content)
    if sent.file is not None:
        data, mime = sent.file
        stored = bridge.mesh.infobip.post(
            "/_sim/media", content=data, headers={"content-type": mime}
        )
        stored.raise_for_status()
        content["url"] = stored.json()["url"]  # needs the API key: only Infobip's
    answer = bridge.mesh.infobip.post(
        f"/_sim/conversations/{cid}/send",
        json={"contentType": sent.content_type, "content": content},
    ).json()
    assert answer["webhook_status"] == 200, answer
    (seen,) = bridge.eventually(
        f"the {family} on the case", lambda: bridge.far.customer_content(case)
    )
    assert seen["type"] == sent.content_type, seen
    for words in sent.shown:
        assert words in seen["text"], (words, seen)
    assert len(_settled(bridge, case, cid)) == 1, "delivered once"
    if sent.file is None:
        assert seen["file"] is None, seen
        return
    # The agent can open the file: the far side holds it (RT attaches it to the ticket),
    # or its link opens through the gateway; every one given returns the same bytes.
    assert seen["file"] is not None or seen["url"], seen
    if seen["file"] is not None:
        assert seen["file"] == sent.file[0]
    if seen["url"]:
        assert _opened(bridge, seen["url"]) == sent.file[0]


def _agent_messages_settled(bridge: Bridge, cid: str, count: int) -> list[dict[str, Any]]:
    """The agent messages at Infobip once ``count`` have arrived and the outbox is idle
    (later redeliveries of any of them have had their chance to duplicate it)."""
    bridge.eventually(
        f"{count} agent messages at Infobip",
        lambda: len(bridge.mesh.agent_messages(cid)) >= count,
    )
    bridge.eventually("an idle outbox", lambda: bridge.mesh.handover(cid)["outboxPending"] == 0)
    return bridge.mesh.agent_messages(cid)


def test_agent_file_reaches_the_end_user_once_in_order(bridge: Bridge) -> None:
    cid, case = bridge.active_conversation()
    _send_all(bridge, cid, ["can I have a return label?"])
    bridge.eventually(
        "the question on the case",
        lambda: bridge.far.customer_messages(case) == ["can I have a return label?"],
    )
    bridge.far.agent_reply(case, "Here is your return label.")
    bridge.far.agent_send_file(case, "label.png", "image/png", PNG)
    bridge.far.agent_reply(case, "Anything else?")
    sent = _agent_messages_settled(bridge, cid, 3)
    assert [m["contentType"] for m in sent] == ["TEXT", "IMAGE", "TEXT"], sent
    assert [sent[0]["content"], sent[2]["content"]] == [
        {"text": "Here is your return label."},
        {"text": "Anything else?"},
    ]
    # Infobip fetches the file from the URL it was given: it opens without credentials.
    assert set(sent[1]["content"]) == {"url"}, sent[1]
    fetched = httpx.get(sent[1]["content"]["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == PNG


def test_agent_location_reaches_the_end_user_once_in_order(bridge: Bridge) -> None:
    if not bridge.far.can_send_location:
        pytest.skip(f"{bridge.far.name}: agents cannot send a location from this far side")
    cid, case = bridge.active_conversation()
    _send_all(bridge, cid, ["where can I drop it off?"])
    bridge.eventually(
        "the question on the case",
        lambda: bridge.far.customer_messages(case) == ["where can I drop it off?"],
    )
    bridge.far.agent_reply(case, "Here:")
    bridge.far.agent_send_location(case, 45.815, 15.9819, "Drop-off point")
    sent = _agent_messages_settled(bridge, cid, 2)
    assert [(m["contentType"], m["content"]) for m in sent] == [
        ("TEXT", {"text": "Here:"}),
        (
            "LOCATION",
            {"latitude": 45.815, "longitude": 15.9819, "locationName": "Drop-off point"},
        ),
    ]
