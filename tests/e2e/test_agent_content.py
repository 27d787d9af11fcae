"""End to end, what agents send besides text (issue 14, points 3, 5 and 7): files and a
location in order and each once, a type the channel cannot take dead-lettered and told
to the agent (``message.failed``), e-mail replies as EMAIL in the thread, a WhatsApp
reply outside the customer-care window, and bad content refused at the gateway."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.mesh import Mesh, wait_for

pytestmark = pytest.mark.e2e

PNG = "https://cdn.example.com/label.png"
PDF = "https://cdn.example.com/invoice.pdf"


def _active(mesh: Mesh, **extra: Any) -> tuple[str, str]:
    cid = mesh.conversation(history=3, **extra)["id"]
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    case = mesh.case_for(cid)
    assert case is not None
    return cid, case["caseId"]


def _reply(mesh: Mesh, case_id: str, **message: Any) -> dict[str, Any]:
    answer = mesh.ccaas.post(f"/_sim/cases/{case_id}/reply", json=message)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _failures(mesh: Mesh, cid: str) -> list[dict[str, Any]]:
    case = mesh.case_for(cid)
    return list(case["failures"]) if case else []


def test_text_two_files_and_a_location_reach_the_end_user_in_order_once(mesh: Mesh) -> None:
    cid, case_id = _active(mesh)
    sent = _reply(
        mesh,
        case_id,
        text="Here is your label and invoice",
        attachments=[
            {"url": PNG, "contentType": "IMAGE"},
            {"url": PDF, "contentType": "DOCUMENT", "name": "invoice.pdf"},
        ],
        location={"latitude": 45.8150, "longitude": 15.9819, "name": "Drop-off point"},
    )
    assert sent["bridgeStatus"] == 200
    wait_for("four messages", lambda: len(mesh.agent_messages(cid)) >= 4)
    wait_for("an idle outbox", lambda: mesh.handover(cid)["outboxPending"] == 0)
    time.sleep(0.5)  # a duplicate would have arrived by now
    messages = mesh.agent_messages(cid)
    assert [(m["contentType"], m["content"]) for m in messages] == [
        ("TEXT", {"text": "Here is your label and invoice"}),
        ("IMAGE", {"url": PNG}),
        ("DOCUMENT", {"url": PDF}),
        (
            "LOCATION",
            {"latitude": 45.815, "longitude": 15.9819, "locationName": "Drop-off point"},
        ),
    ]
    assert mesh.handover(cid).get("deadLetters", 0) == 0
    assert _failures(mesh, cid) == []


def test_a_type_the_channel_cannot_take_is_a_dead_letter_the_agent_hears_of(
    mesh: Mesh,
) -> None:
    cid, case_id = _active(mesh, channel="LIVE_CHAT", endUser="CHAT-e2e-1")
    sent = _reply(
        mesh,
        case_id,
        text="Listen to this",
        attachments=[{"url": "https://cdn.example.com/a.mp3", "contentType": "AUDIO"}],
    )
    message_id = sent["event"]["message"]["id"]
    (failure,) = wait_for("message.failed", lambda: _failures(mesh, cid))
    assert failure["messageId"] == message_id
    assert "LIVE_CHAT cannot take AUDIO" in failure["reason"]
    assert mesh.handover(cid)["deadLetters"] == 1
    # Nothing of it was sent: a reply goes whole or not at all.
    assert mesh.agent_messages(cid) == []
    # The conversation goes on: the next reply is delivered.
    _reply(mesh, case_id, text="Sorry, here it is in words")
    wait_for("the next reply", lambda: len(mesh.agent_messages(cid)) == 1)


def test_email_replies_are_email_in_the_thread(mesh: Mesh) -> None:
    cid = mesh.conversation(history=0, channel="EMAIL", endUser="ann@example.com")["id"]
    mesh.infobip.post(
        f"/_sim/conversations/{cid}/send",
        json={
            "contentType": "EMAIL",
            "content": {"subject": "Broken kettle", "contentText": "It leaks."},
        },
    ).raise_for_status()
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    case = mesh.case_for(cid)
    assert case is not None
    _reply(mesh, case["caseId"], text="A new kettle is on its way.")
    (message,) = wait_for("the e-mail", lambda: mesh.agent_messages(cid))
    assert message["contentType"] == "EMAIL"
    assert message["content"] == {
        "toAddresses": ["ann@example.com"],
        "ccAddresses": [],
        "bccAddresses": [],
        "subject": "Re: Broken kettle",
        "contentText": "A new kettle is on its way.",
    }


def test_a_whatsapp_reply_outside_the_window_is_a_dead_letter_the_agent_hears_of(
    mesh: Mesh,
) -> None:
    cid, case_id = _active(mesh)
    # The document does not describe this refusal: a simulator setting (unconfirmed).
    mesh.infobip.put("/_sim/config", json={"whatsapp_window_s": 1}).raise_for_status()
    try:
        time.sleep(1.5)  # the end user's last message is now outside the window
        sent = _reply(mesh, case_id, text="Are you still there?")
        (failure,) = wait_for("message.failed", lambda: _failures(mesh, cid))
    finally:
        mesh.infobip.put("/_sim/config", json={"whatsapp_window_s": None})
    assert failure["messageId"] == sent["event"]["message"]["id"]
    assert "customer care window" in failure["reason"]
    assert mesh.agent_messages(cid) == []
    assert mesh.handover(cid)["deadLetters"] == 1


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"attachments": [{"url": "ftp://x/y", "contentType": "IMAGE"}]}, "http or https"),
        ({"location": {"latitude": 120, "longitude": 0}}, "latitude must be within"),
        ({"attachments": [{"url": PNG, "contentType": "GIF"}]}, "contentType must be one of"),
    ],
)
def test_bad_content_is_refused_with_a_json_4xx(
    mesh: Mesh, message: dict[str, Any], problem: str
) -> None:
    _cid, case_id = _active(mesh)
    sent = _reply(mesh, case_id, **message)
    assert sent["bridgeStatus"] == 400
    assert problem in str(sent["bridgeAnswer"])


def _typing(mesh: Mesh, case_id: str, typing: bool, **extra: Any) -> dict[str, Any]:
    answer = mesh.ccaas.post(f"/_sim/cases/{case_id}/typing", json={"typing": typing, **extra})
    assert answer.status_code == 200, answer.text
    result = dict(answer.json())
    assert result["bridgeStatus"] == 200
    return dict(result["bridgeAnswer"])


def _events(mesh: Mesh, cid: str) -> list[dict[str, Any]]:
    return list(mesh.infobip.get(f"/_sim/conversations/{cid}/events").json()["events"])


def test_agent_typing_reaches_the_end_user_at_once_or_not_at_all(mesh: Mesh) -> None:
    cid, case_id = _active(mesh)
    assert _typing(mesh, case_id, True)["accepted"] == 1
    assert _typing(mesh, case_id, False)["accepted"] == 1
    # A late one (the CCaaS says it happened a minute ago) is dropped, not delivered.
    late = "2020-01-01T10:00:00.000Z"
    assert _typing(mesh, case_id, True, timestamp=late)["ignored"] == 1
    events = wait_for("two events", lambda: len(_events(mesh, cid)) >= 2 and _events(mesh, cid))
    handover = mesh.handover(cid)
    assert [(e["type"], e["channel"], e["from"], e["to"]) for e in events] == [
        ("TYPING_STARTED", "WHATSAPP", handover["businessSender"], handover["endUser"]),
        ("TYPING_STOPPED", "WHATSAPP", handover["businessSender"], handover["endUser"]),
    ]
    # Never queued: nothing went to the outbox or the transcript.
    assert handover["outboxPending"] == 0 and mesh.agent_messages(cid) == []


def test_agent_typing_on_a_channel_without_typing_events_is_dropped(mesh: Mesh) -> None:
    cid, case_id = _active(mesh, channel="SMS")
    assert _typing(mesh, case_id, True)["ignored"] == 1
    time.sleep(0.3)
    assert _events(mesh, cid) == []


def test_end_user_typing_reaches_the_agent_and_is_never_a_message(mesh: Mesh) -> None:
    cid, case_id = _active(mesh)
    mesh.infobip.post(
        f"/_sim/conversations/{cid}/send", json={"contentType": "TYPING_INDICATOR", "content": {}}
    ).raise_for_status()
    mesh.send(cid, "a real message after it")

    def typing() -> list[dict[str, Any]]:
        case = mesh.case_for(cid)
        return list(case["typing"]) if case else []

    (indicator,) = wait_for("case.typing", typing)
    assert indicator["typing"] is True
    wait_for("the message", lambda: "a real message after it" in mesh.customer_texts(cid))
    case = mesh.case_for(cid)
    assert case is not None
    kinds = [m["contentType"] for m in case["messages"] if m["from"] == "customer"]
    assert "TYPING_INDICATOR" not in kinds and "UNKNOWN" not in kinds
    sent = [d for d in mesh.ccaas.get("/_sim/deliveries").json()["deliveries"]]
    assert [d["type"] for d in sent if d.get("caseId") == case_id].count("case.typing") == 1
