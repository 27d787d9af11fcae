"""The CCaaS simulator follows the webhook connector contract: signatures, idempotency,
fault switches, and signed agent events pushed to the bridge."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ccbridge.services.connector.adapters.webhook_signature import verify_signature
from ccbridge.simulators.ccaas import CcaasState, create_app
from ccbridge.simulators.ccaas.state import now_iso
from tests.simulators.ccaas.support import serve_app

SECRET = "sim-secret-0123456789abcdef"


def signed(
    doc: object, *, secret: str = SECRET, ts: int | None = None, key: str | None = None
) -> dict[str, Any]:
    """Request kwargs for a signed POST, computed by hand from the documented recipe."""
    body = json.dumps(doc).encode()
    stamp = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Ccbridge-Timestamp": str(stamp),
        "X-Ccbridge-Signature": f"v1={mac}",
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    return {"content": body, "headers": headers}


def message(mid: str, text: str, direction: str = "INBOUND") -> dict[str, Any]:
    return {
        "id": mid,
        "direction": direction,
        "authorType": "CUSTOMER",
        "createdAt": "2025-01-01T10:00:00.000Z",
        "contentType": "TEXT",
        "content": {"text": text},
    }


def open_event(conversation: str = "conv-1") -> dict[str, Any]:
    return {
        "type": "case.open",
        "id": f"evt-open-{conversation}",
        "conversationId": conversation,
        "idempotencyKey": conversation,
        "timestamp": "2025-01-01T10:00:01.000Z",
        "case": {
            "channel": "WHATSAPP",
            "endUser": "447700900001",
            "routing": {"queue": "vip", "priority": 5, "skills": ["de"], "rule": "r1"},
            "tags": ["vip"],
            "metadata": {"tier": "gold"},
        },
        "transcript": [message("m-1", "hello bot"), message("m-2", "hi!", "OUTBOUND")],
        "transcriptTruncated": False,
    }


def customer_event(case_id: str, mid: str, text: str) -> dict[str, Any]:
    return {
        "type": "case.message",
        "id": f"evt-{mid}",
        "conversationId": "conv-1",
        "idempotencyKey": mid,
        "timestamp": "2025-01-01T10:00:02.000Z",
        "caseId": case_id,
        "message": message(mid, text),
    }


@pytest.fixture
async def sim() -> AsyncIterator[tuple[CcaasState, httpx.AsyncClient]]:
    state = CcaasState()
    app = create_app(
        state, secret=f"{SECRET},older-secret-abcdef0123456789", bridge_webhook_url=None
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        yield state, client


async def test_signature_is_required(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    doc = open_event()
    unsigned = await client.post("/webhook", json=doc)
    wrong = await client.post("/webhook", **signed(doc, secret="not-the-secret"))
    stale = await client.post("/webhook", **signed(doc, ts=int(time.time()) - 301))
    tampered = signed(doc)
    tampered["content"] = tampered["content"].replace(b"WHATSAPP", b"SMS")
    changed = await client.post("/webhook", **tampered)
    assert [r.status_code for r in (unsigned, wrong, stale, changed)] == [401, 401, 401, 401]
    assert state.cases() == []
    assert [d["outcome"] for d in state.deliveries()] == ["unauthorized"] * 4
    rotated = await client.post("/webhook", **signed(doc, secret="older-secret-abcdef0123456789"))
    assert rotated.status_code == 201


async def test_open_is_idempotent_and_records_every_attempt(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    first = await client.post("/webhook", **signed(open_event(), key="conv-1"))
    again = await client.post("/webhook", **signed(open_event(), key="conv-1"))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"caseId": "CASE-00001"}
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert len(state.cases()) == 1
    case = state.case("CASE-00001")
    assert case["routing"] == {"queue": "vip", "priority": 5, "skills": ["de"], "rule": "r1"}
    assert [m["id"] for m in case["transcript"]] == ["m-1", "m-2"]
    deliveries = state.deliveries()
    assert [(d["idempotencyKey"], d["eventId"], d["outcome"]) for d in deliveries] == [
        ("conv-1", "evt-open-conv-1", "ok"),
        ("conv-1", "evt-open-conv-1", "replayed"),
    ]
    other = await client.post("/webhook", **signed(open_event("conv-2")))
    assert other.json() == {"caseId": "CASE-00002"}


async def test_messages_idempotent_in_order_and_close(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    case_id = (await client.post("/webhook", **signed(open_event()))).json()["caseId"]
    answers = [
        await client.post("/webhook", **signed(customer_event(case_id, mid, text)))
        for mid, text in (("m-3", "one"), ("m-4", "two"), ("m-3", "one"), ("m-5", "three"))
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert answers[0].json() == answers[2].json()
    assert [m["id"] for m in state.case(case_id)["messages"]] == ["m-3", "m-4", "m-5"]

    unknown = await client.post("/webhook", **signed(customer_event("CASE-99999", "m-6", "x")))
    assert unknown.status_code == 404

    close = {
        "type": "case.close",
        "id": "evt-close",
        "conversationId": "conv-1",
        "idempotencyKey": "conv-1:close",
        "timestamp": "2025-01-01T10:00:09.000Z",
        "caseId": case_id,
        "reason": "infobip_closed",
    }
    first = await client.post("/webhook", **signed(close))
    repeat = await client.post("/webhook", **signed(close))
    other_key = await client.post("/webhook", **signed({**close, "idempotencyKey": "k2"}))
    assert first.json() == repeat.json() == {"alreadyClosed": False}
    assert other_key.json() == {"alreadyClosed": True}
    case = state.case(case_id)
    assert (case["status"], case["closedBy"], case["closeReason"]) == (
        "closed",
        "bridge",
        "infobip_closed",
    )
    late = await client.post("/webhook", **signed(customer_event(case_id, "m-7", "late")))
    assert late.status_code == 409


async def test_invalid_events_are_rejected(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    missing = {k: v for k, v in open_event().items() if k != "transcript"}
    assert (await client.post("/webhook", **signed(missing))).status_code == 400
    mismatch = await client.post("/webhook", **signed(open_event(), key="another-key"))
    assert mismatch.status_code == 400
    not_json = signed({})
    not_json["content"] = b"{nope"
    ts = not_json["headers"]["X-Ccbridge-Timestamp"]
    not_json["headers"]["X-Ccbridge-Signature"] = (
        "v1=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + b"{nope", hashlib.sha256).hexdigest()
    )
    assert (await client.post("/webhook", **not_json)).status_code == 400
    assert state.cases() == []


async def test_down_and_injected_failures(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    await client.post("/_sim/down")
    down = await client.post("/webhook", **signed(open_event()))
    assert (down.status_code, down.headers["retry-after"]) == (503, "1")
    await client.post("/_sim/up")
    await client.post("/_sim/fail", json={"count": 2, "status": 429, "retryAfter": 3})
    codes = [(await client.post("/webhook", **signed(open_event()))).status_code for _ in range(3)]
    assert codes == [429, 429, 201]
    assert [d["outcome"] for d in state.deliveries()] == ["fault", "fault", "fault", "ok"]
    assert len(state.cases()) == 1
    await client.post("/_sim/reset")
    assert state.cases() == [] and state.deliveries() == []
    bad = await client.post("/_sim/fail", json={"count": -1})
    assert bad.status_code == 400


async def test_a_hanging_ccaas(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    """``delayMs``: a failure hangs first and changes nothing; ``status`` 0 carries the
    call out at once and answers late (what a bridge that timed out cannot tell apart)."""
    state, client = sim
    await client.post("/_sim/fail", json={"count": 1, "status": 503, "delayMs": 200})
    started = time.monotonic()
    hung = await client.post("/webhook", **signed(open_event()))
    assert hung.status_code == 503 and time.monotonic() - started >= 0.2
    assert state.cases() == []

    await client.post("/_sim/fail", json={"count": 1, "status": 0, "delayMs": 300})
    late = asyncio.create_task(client.post("/webhook", **signed(open_event())))
    await asyncio.sleep(0.1)
    assert len(state.cases()) == 1 and not late.done()  # applied, not yet answered
    assert (await late).status_code == 201
    for bad in ({"delayMs": -1}, {"delayMs": "1"}, {"status": 0, "delayMs": 600_001}):
        assert (await client.post("/_sim/fail", json=bad)).status_code == 400


async def test_hang_holds_bridge_calls_until_up(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    assert (await client.post("/_sim/hang")).json()["hung"] is True
    call = asyncio.create_task(client.post("/webhook", **signed(open_event())))
    await asyncio.sleep(0.2)
    assert not call.done() and state.deliveries() == []  # held, unanswered
    assert (await client.post("/_sim/up")).json()["hung"] is False
    assert (await call).status_code == 201
    assert len(state.cases()) == 1


async def test_control_reads_and_ui(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    _, client = sim
    await client.post("/webhook", **signed(open_event()))
    listed = (await client.get("/_sim/cases", params={"conversationId": "conv-1"})).json()
    assert [c["caseId"] for c in listed["cases"]] == ["CASE-00001"]
    assert (await client.get("/_sim/cases", params={"conversationId": "x"})).json() == {"cases": []}
    assert (await client.get("/_sim/cases/CASE-00001")).json()["conversationId"] == "conv-1"
    assert (await client.get("/_sim/cases/nope")).status_code == 404
    ui = await client.get("/_sim/ui")
    assert ui.status_code == 200 and "CCaaS simulator" in ui.text
    no_bridge = await client.post("/_sim/cases/CASE-00001/reply", json={"text": "hello"})
    assert no_bridge.json()["bridgeStatus"] == 0


async def test_reply_and_close_push_signed_events_to_the_bridge(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    received: list[tuple[dict[str, str], bytes]] = []

    async def bridge(request: Request) -> JSONResponse:
        received.append((dict(request.headers), await request.body()))
        return JSONResponse({"accepted": 1, "duplicates": 0, "ignored": 0})

    receiver = Starlette(routes=[Route("/webhooks/ccaas/webhook", bridge, methods=["POST"])])
    async with serve_app(receiver) as url:
        target = f"{url}/webhooks/ccaas/webhook"
        assert (await client.post("/_sim/config", json={"bridgeWebhookUrl": target})).json() == {
            "bridgeWebhookUrl": target
        }
        case_id = (await client.post("/webhook", **signed(open_event()))).json()["caseId"]
        reply = await client.post(
            f"/_sim/cases/{case_id}/reply", json={"text": "Hello, Anna here", "agentName": "Anna"}
        )
        resend = await client.post(
            f"/_sim/cases/{case_id}/reply",
            json={
                "text": "Hello, Anna here",
                "agentName": "Anna",
                "messageId": reply.json()["event"]["message"]["id"],
                "eventId": reply.json()["event"]["id"],
            },
        )
        closed = await client.post(f"/_sim/cases/{case_id}/close", json={"reason": "resolved"})
        after = await client.post(f"/_sim/cases/{case_id}/reply", json={"text": "late"})

    assert reply.json()["bridgeStatus"] == resend.json()["bridgeStatus"] == 200
    assert reply.json()["bridgeAnswer"] == {"accepted": 1, "duplicates": 0, "ignored": 0}
    assert closed.json()["bridgeStatus"] == 200
    assert after.status_code == 409
    events = [json.loads(body) for _, body in received]
    assert events[0] == {
        "type": "agent.message",
        "id": events[0]["id"],
        "caseId": case_id,
        "message": {
            "id": events[0]["message"]["id"],
            "text": "Hello, Anna here",
            "agentName": "Anna",
        },
    }
    assert events[1] == events[0]  # a resend carries the same ids
    assert events[2] == {
        "type": "case.closed",
        "id": events[2]["id"],
        "caseId": case_id,
        "reason": "resolved",
    }
    # The bridge's own verifier accepts what the simulator signed.
    for headers, body in received:
        verify_signature([SECRET], headers, body, now=time.time())
    case = state.case(case_id)
    agent = [m for m in case["messages"] if m["from"] == "agent"]
    assert [(m["text"], m["delivery"]) for m in agent] == [("Hello, Anna here", "delivered")]
    assert (case["status"], case["closedBy"]) == ("closed", "agent")
    assert len(state.webhooks()) == 3


async def test_several_offered_signatures(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    good = signed(open_event(), secret="older-secret-abcdef0123456789")
    bad = signed(open_event(), secret="not-the-secret")
    headers = good["headers"]
    offered = f"{bad['headers']['X-Ccbridge-Signature']}, {headers['X-Ccbridge-Signature']}"
    refused = await client.post(
        "/webhook",
        content=good["content"],
        headers={
            **headers,
            "X-Ccbridge-Signature": f"v1=00, {bad['headers']['X-Ccbridge-Signature']}",
        },
    )
    accepted = await client.post(
        "/webhook", content=good["content"], headers={**headers, "X-Ccbridge-Signature": offered}
    )
    assert (refused.status_code, accepted.status_code) == (401, 201)
    assert [d["outcome"] for d in state.deliveries()] == ["unauthorized", "ok"]


def test_the_state_keeps_its_own_copies() -> None:
    state = CcaasState()
    doc = open_event()
    answer, _ = state.apply("case.open", "conv-1", doc)
    case_id = answer.body["caseId"]
    answer.body["caseId"] = "changed"
    doc["case"]["routing"]["skills"].append("en")
    doc["transcript"][0]["content"]["text"] = "changed"
    event = customer_event(case_id, "m-9", "as sent")
    state.apply("case.message", "m-9", event)
    event["message"]["content"]["text"] = "changed"
    state.case(case_id)["messages"][0]["content"]["text"] = "changed"
    state.cases(full=True)[0]["routing"]["queue"] = "changed"
    state.deliveries().append({})
    replayed, was_replayed = state.apply("case.open", "conv-1", open_event())
    assert was_replayed and replayed.body == {"caseId": case_id}
    replayed.body["caseId"] = "changed"
    case = state.case(case_id)
    assert case["routing"] == {"queue": "vip", "priority": 5, "skills": ["de"], "rule": "r1"}
    assert case["transcript"][0]["content"]["text"] == "hello bot"
    assert [m["content"]["text"] for m in case["messages"]] == ["as sent"]
    assert state.apply("case.open", "conv-1", open_event())[0].body == {"caseId": case_id}
    assert state.status()["deliveries"] == 0  # apply() alone records no delivery


def test_now_iso_across_a_second_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    # Across a second boundary: the date and time part, formatted once per second, changes.
    clock = iter([1_750_000_000_999_999_999, 1_750_000_001_000_999_999, 1_750_000_001_004_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    assert [now_iso() for _ in range(3)] == [
        "2025-06-15T15:06:40.999Z",
        "2025-06-15T15:06:41.000Z",
        "2025-06-15T15:06:41.004Z",
    ]


async def test_an_agent_sends_files_and_a_place_and_hears_of_a_failure(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    received: list[bytes] = []

    async def bridge(request: Request) -> JSONResponse:
        received.append(await request.body())
        return JSONResponse({"accepted": 1, "duplicates": 0, "ignored": 0})

    receiver = Starlette(routes=[Route("/hook", bridge, methods=["POST"])])
    files = [{"url": "https://cdn.example.com/l.png", "contentType": "IMAGE", "caption": "label"}]
    place = {"latitude": 45.8, "longitude": 15.9, "name": "Shop"}
    async with serve_app(receiver) as url:
        await client.post("/_sim/config", json={"bridgeWebhookUrl": f"{url}/hook"})
        case_id = (await client.post("/webhook", **signed(open_event()))).json()["caseId"]
        nothing = await client.post(f"/_sim/cases/{case_id}/reply", json={"agentName": "A"})
        reply = await client.post(
            f"/_sim/cases/{case_id}/reply", json={"attachments": files, "location": place}
        )
    assert nothing.status_code == 400
    (event,) = [json.loads(body) for body in received]
    message_id = event["message"]["id"]
    assert event["message"] == {
        "id": message_id,
        "agentName": "Agent",
        "attachments": files,
        "location": place,
    }
    assert reply.json()["bridgeStatus"] == 200
    failed = {
        "type": "message.failed",
        "id": "evt-failed-1",
        "conversationId": "conv-1",
        "idempotencyKey": f"failed:{message_id}",
        "timestamp": "2025-01-01T10:00:03.000Z",
        "caseId": case_id,
        "messageId": message_id,
        "reason": "not sendable on SMS",
    }
    no_reason = {key: value for key, value in failed.items() if key != "reason"}
    assert (await client.post("/webhook", **signed(no_reason))).status_code == 400
    assert (await client.post("/webhook", **signed(failed))).status_code == 200
    case = state.case(case_id)
    (agent,) = [m for m in case["messages"] if m["from"] == "agent"]
    assert (agent["attachments"], agent["location"]) == (files, place)
    assert agent["delivery"] == "not delivered: not sendable on SMS"
    assert [f["messageId"] for f in case["failures"]] == [message_id]
    ui = (await client.get("/_sim/ui")).text + (await client.get("/_sim/ui.js")).text
    assert "img" in ui and "attachments" in ui


async def test_the_agent_sees_the_customer_typing(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    case_id = (await client.post("/webhook", **signed(open_event()))).json()["caseId"]
    typing = {
        "type": "case.typing",
        "id": "evt-typing-1",
        "conversationId": "conv-1",
        "idempotencyKey": "typing:conv-1:1",
        "timestamp": "2025-01-01T10:00:03.000Z",
        "caseId": case_id,
        "typing": True,
    }
    assert (await client.post("/webhook", **signed({**typing, "typing": "y"}))).status_code == 400
    assert (await client.post("/webhook", **signed(typing))).status_code == 200
    assert [t["typing"] for t in state.case(case_id)["typing"]] == [True]
    assert "is typing" in (await client.get("/_sim/ui")).text


async def test_files_an_agent_sends_are_served_at_their_url(
    sim: tuple[CcaasState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, client = sim
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    stored = await client.post("/_sim/files", content=photo, headers={"content-type": "image/png"})
    assert stored.status_code == 200
    url = stored.json()["url"]
    assert url == f"http://sim/_sim/files/{stored.json()['id']}"
    served = await client.get(url)
    assert served.status_code == 200
    assert served.content == photo and served.headers["content-type"] == "image/png"
    other = await client.post("/_sim/files", content=b"%PDF-1.4")
    assert other.json()["id"] != stored.json()["id"]
    assert (await client.get(other.json()["url"])).headers["content-type"] == (
        "application/octet-stream"
    )
    missing = await client.get("/_sim/files/nope")
    assert missing.status_code == 404 and missing.json()["error"]
    assert (await client.post("/_sim/files", content=b"")).status_code == 400
    monkeypatch.setattr("ccbridge.simulators.ccaas.state.MAX_STORED_FILE_BYTES", len(photo) + 10)
    full = await client.post("/_sim/files", content=photo)
    assert full.status_code == 413 and "full" in full.json()["error"]
    await client.post("/_sim/reset")
    assert (await client.get(url)).status_code == 404
    assert state.file(stored.json()["id"]) is None
