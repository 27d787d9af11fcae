"""The Infobip simulator's documented behaviours and its control API (in-process)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ccbridge.simulators.infobip import SIGNATURE_HEADER, Failure
from tests.simulators.ccaas.support import serve_app
from tests.simulators.infobip.harness import API_KEY, Receiver, Sim, running_sim, served_sim

AUTH = {"Authorization": f"App {API_KEY}"}


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with running_sim() as sim:
        yield sim


async def new_conversation(sim: Sim, **body: Any) -> dict[str, Any]:
    response = await sim.http.post("/_sim/conversations", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def service_exception(response: httpx.Response) -> dict[str, Any]:
    exc: dict[str, Any] = response.json()["requestError"]["serviceException"]
    return exc


async def test_requires_app_authorization(sim: Sim) -> None:
    for headers in ({}, {"Authorization": "App wrong"}, {"Authorization": f"Bearer {API_KEY}"}):
        response = await sim.http.get("/ccaas/1/conversations", headers=headers)
        assert response.status_code == 401
        assert service_exception(response)["messageId"] == "UNAUTHORIZED"
    assert (await sim.http.get("/ccaas/1/conversations", headers=AUTH)).status_code == 200


async def test_unknown_ids_are_400_not_found(sim: Sim) -> None:
    for method, path in (
        ("GET", "/ccaas/1/conversations/nope"),
        ("GET", "/ccaas/1/conversations/nope/messages"),
        ("GET", "/ccaas/1/conversations/nope/metadata"),
        ("PUT", "/ccaas/1/conversations/nope"),
    ):
        response = await sim.http.request(
            method, path, headers=AUTH, json={"status": "CLOSED"} if method == "PUT" else None
        )
        assert response.status_code == 400, path
        exc = service_exception(response)
        assert exc["messageId"] == "NOT_FOUND"
        assert "No such entity exists" in exc["text"]


async def test_history_generation(sim: Sim) -> None:
    created = await new_conversation(
        sim, history=40, channel="VIBER", endUser="385911", businessSender="BRAND"
    )
    assert created["messageCount"] == 40 and created["status"] == "OPEN"
    page = (
        await sim.http.get(
            f"/ccaas/1/conversations/{created['id']}/messages",
            params={"limit": 999, "orderBy": "createdAt:asc"},
            headers=AUTH,
        )
    ).json()
    messages = page["messages"]
    assert [m["direction"] for m in messages[:4]] == ["INBOUND", "OUTBOUND"] * 2
    assert {m["authorType"] for m in messages} == {"CUSTOMER", "BOT"}
    inbound = messages[0]
    assert (inbound["from"], inbound["to"], inbound["channel"]) == ("385911", "BRAND", "VIBER")
    stamps = [m["createdAt"] for m in messages]
    assert stamps == sorted(stamps) and len(set(stamps)) == 40


async def test_message_paging(sim: Sim) -> None:
    cid = (await new_conversation(sim, history=25))["id"]
    path = f"/ccaas/1/conversations/{cid}/messages"
    too_big = await sim.http.get(path, params={"limit": 1000}, headers=AUTH)
    assert too_big.status_code == 400
    assert "limit" in service_exception(too_big)["validationErrors"]
    bad_order = await sim.http.get(path, params={"orderBy": "nonsense:up"}, headers=AUTH)
    assert bad_order.status_code == 400
    default = (await sim.http.get(path, headers=AUTH)).json()
    assert len(default["messages"]) == 10
    assert default["pagination"] == {"totalItems": 25, "page": 0, "limit": 10, "orderBy": "id:asc"}
    ids = [m["id"] for m in default["messages"]]
    assert ids == sorted(ids)
    pages = []
    for page in range(3):
        body = (
            await sim.http.get(
                path, params={"page": page, "limit": 10, "orderBy": "createdAt:DESC"}, headers=AUTH
            )
        ).json()
        pages.extend(body["messages"])
    assert len(pages) == 25 and len({m["id"] for m in pages}) == 25
    stamps = [m["createdAt"] for m in pages]
    assert stamps == sorted(stamps, reverse=True)
    inbound = (
        await sim.http.get(path, params={"direction": "INBOUND", "limit": 999}, headers=AUTH)
    ).json()
    assert inbound["pagination"]["totalItems"] == 13


async def test_create_message_validation_and_result(sim: Sim) -> None:
    conversation = await new_conversation(sim, history=2)
    path = f"/ccaas/1/conversations/{conversation['id']}/messages"
    missing = await sim.http.post(path, json={"channel": "WHATSAPP"}, headers=AUTH)
    assert missing.status_code == 400
    assert {"from", "to", "contentType", "content"} <= set(
        service_exception(missing)["validationErrors"]
    )
    body = {
        "channel": "WHATSAPP",
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "contentType": "TEXT",
        "content": {"text": "y" * 4097},
    }
    too_long = await sim.http.post(path, json=body, headers=AUTH)
    assert too_long.status_code == 400
    assert service_exception(too_long)["validationErrors"]["content"] == [
        "size cannot be longer than 4096 characters."
    ]
    body["content"] = {"text": "y" * 4096}
    created = await sim.http.post(path, json=body, headers=AUTH)
    assert created.status_code == 200
    message = created.json()
    assert message["direction"] == "OUTBOUND" and message["conversationId"] == conversation["id"]
    agent = (await sim.http.get(f"/_sim/conversations/{conversation['id']}/agent-messages")).json()
    assert [m["id"] for m in agent["messages"]] == [message["id"]]


async def test_closed_conversation_is_immutable(sim: Sim) -> None:
    conversation = await new_conversation(sim, history=2)
    cid = conversation["id"]
    closed = await sim.http.patch(
        f"/ccaas/1/conversations/{cid}", json={"status": "CLOSED"}, headers=AUTH
    )
    assert closed.status_code == 200 and closed.json()["closedAt"]
    attempts = [
        ("PUT", f"/ccaas/1/conversations/{cid}", {"status": "OPEN"}),
        ("PATCH", f"/ccaas/1/conversations/{cid}", {"topic": "x"}),
        (
            "POST",
            f"/ccaas/1/conversations/{cid}/messages",
            {
                "channel": "WHATSAPP",
                "from": "a",
                "to": "b",
                "contentType": "TEXT",
                "content": {"text": "hi"},
            },
        ),
        ("POST", f"/ccaas/1/conversations/{cid}/tags", {"tagName": "x"}),
        ("PATCH", f"/ccaas/1/conversations/{cid}/metadata", {"a": "b"}),
    ]
    for method, path, body in attempts:
        response = await sim.http.request(method, path, json=body, headers=AUTH)
        assert response.status_code == 400, (method, path)
        exc = service_exception(response)
        assert (exc["messageId"], exc["text"]) == (
            "BAD_REQUEST",
            "Closed conversation cannot be changed",
        )
    assert (await sim.http.get(f"/_sim/conversations/{cid}")).json()["messageCount"] == 2


async def test_tags_must_exist_before_adding(sim: Sim) -> None:
    cid = (await new_conversation(sim, history=1))["id"]
    missing = await sim.http.post(
        f"/ccaas/1/conversations/{cid}/tags", json={"tagName": "vip"}, headers=AUTH
    )
    assert missing.status_code == 400 and service_exception(missing)["messageId"] == "NOT_FOUND"
    assert (
        await sim.http.post("/ccaas/1/tags", json={"name": "vip"}, headers=AUTH)
    ).status_code == 200
    again = await sim.http.post("/ccaas/1/tags", json={"name": "vip"}, headers=AUTH)
    assert again.status_code == 400 and service_exception(again)["text"] == "Tag already exists."
    bad = await sim.http.post("/ccaas/1/tags", json={"name": "has space"}, headers=AUTH)
    assert bad.status_code == 400
    added = await sim.http.post(
        f"/ccaas/1/conversations/{cid}/tags", json={"tagName": "vip"}, headers=AUTH
    )
    assert added.json() == {
        "statusCode": "SUCCESS",
        "message": "Tag added to conversation successfully.",
    }
    tags = (
        await sim.http.get("/ccaas/1/tags", params={"conversationId": cid}, headers=AUTH)
    ).json()
    assert [t["name"] for t in tags["tags"]] == ["vip"]
    removed = await sim.http.delete(f"/ccaas/1/conversations/{cid}/tags/vip", headers=AUTH)
    assert removed.status_code == 200
    assert (await sim.http.get(f"/_sim/conversations/{cid}")).json()["tags"] == []


async def test_metadata_put_patch_delete(sim: Sim) -> None:
    cid = (await new_conversation(sim, history=1))["id"]
    path = f"/ccaas/1/conversations/{cid}/metadata"
    assert (await sim.http.put(path, json={}, headers=AUTH)).status_code == 400
    assert (await sim.http.put(path, json={"a": "1", "b": "2"}, headers=AUTH)).status_code == 200
    assert (await sim.http.patch(path, json={"b": "3", "c": 4}, headers=AUTH)).status_code == 200
    assert (await sim.http.get(path, headers=AUTH)).json() == {"a": "1", "b": "3", "c": "4"}
    assert (await sim.http.delete(path, headers=AUTH)).status_code == 200
    assert (await sim.http.get(path, headers=AUTH)).json() == {}


async def test_failure_injection(sim: Sim) -> None:
    injected = await sim.http.post(
        "/_sim/failures", json={"count": 2, "status": 429, "retry_after": 2}
    )
    assert injected.status_code == 200
    for _ in range(2):
        response = await sim.http.get("/ccaas/1/conversations", headers=AUTH)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert service_exception(response)["messageId"] == "TOO_MANY_REQUESTS"
    assert (await sim.http.get("/ccaas/1/conversations", headers=AUTH)).status_code == 200
    await sim.http.post("/_sim/failures", json={"status": 500, "shape": "status"})
    failed = await sim.http.get("/ccaas/1/conversations", headers=AUTH)
    assert failed.status_code == 500 and failed.json()["statusCode"] == "ERROR"
    assert (await sim.http.post("/_sim/failures", json={"status": 200})).status_code == 400


async def test_send_posts_legacy_webhook_and_signed_event() -> None:
    receiver = Receiver()
    # The receiver is served on loopback: the simulator POSTs with the product's client.
    async with serve_app(receiver.app()) as receiver_url, running_sim() as sim:
        conversation = await new_conversation(sim, history=3)
        cid = conversation["id"]
        configured = await sim.http.put(
            "/ccaas/1/account/configuration",
            json={"webhookUrl": f"{receiver_url}/webhooks/infobip/tok"},
            headers=AUTH,
        )
        assert configured.json()["statusCode"] == "SUCCESS"
        subscription = {
            "subscriptionId": "ccbridge",
            "name": "ccbridge",
            "events": ["CONVERSATION_MESSAGE_RECEIVED", "CONVERSATION_STATUS_UPDATED"],
            "profile": {
                "profileId": "ccbridge-profile",
                "webhook": {"notifyUrl": f"{receiver_url}/webhooks/infobip/events"},
                "security": {
                    "authId": "a",
                    "type": "HMAC",
                    "credentials": {"secretKey": "s3cret", "algorithm": "HMAC_SHA_256"},
                },
            },
        }
        created = await sim.http.post(
            "/subscriptions/1/subscription/CUSTOMER_ENGAGEMENT", json=subscription, headers=AUTH
        )
        assert created.status_code == 201 and created.json() == {
            "subscriptionId": "ccbridge",
            "profile": {"profileId": "ccbridge-profile", "security": {"authId": "a"}},
        }

        receiver.status = 202
        sent = (
            await sim.http.post(f"/_sim/conversations/{cid}/send", json={"text": "I need help"})
        ).json()
        assert sent["webhook_status"] == 202 and sent["event_status"] == 202
        message = sent["message"]
        assert message["direction"] == "INBOUND" and message["content"] == {"text": "I need help"}

        (legacy_path, legacy_headers, legacy_body), (event_path, headers, raw) = receiver.requests
        assert legacy_path == "/webhooks/infobip/tok"
        assert json.loads(legacy_body) == message
        assert SIGNATURE_HEADER.lower() not in legacy_headers
        assert event_path == "/webhooks/infobip/events"
        expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER.lower()] == expected
        event = json.loads(raw)
        assert event["type"] == "INBOUND_MESSAGE" and event["timestamp"]
        payload = event["payload"]
        assert (payload["id"], payload["status"], payload["direction"]) == (cid, "OPEN", "INBOUND")
        assert payload["message"]["id"] == message["id"]
        assert payload["message"]["content"] == {"text": "I need help"}
        assert "contentType" not in payload["message"]

        stored = (
            await sim.http.get(
                f"/ccaas/1/conversations/{cid}/messages",
                params={"orderBy": "createdAt:desc", "limit": 1},
                headers=AUTH,
            )
        ).json()
        assert stored["messages"][0]["id"] == message["id"]

        receiver.requests.clear()
        closed = (await sim.http.post(f"/_sim/conversations/{cid}/close")).json()
        assert closed["alreadyClosed"] is False and closed["event_status"] == 202
        [(_, headers, raw)] = receiver.requests
        event = json.loads(raw)
        assert event["type"] == "CONVERSATION_STATUS_UPDATED"
        assert event["payload"]["status"] == "CLOSED" and event["payload"]["id"] == cid
        assert "message" not in event["payload"]
        assert headers[SIGNATURE_HEADER.lower()] == (
            "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        )

        # Closing through the API emits the same event (posted in the background).
        other = await new_conversation(sim, history=1)
        receiver.requests.clear()
        put = await sim.http.put(
            f"/ccaas/1/conversations/{other['id']}", json={"status": "CLOSED"}, headers=AUTH
        )
        assert put.status_code == 200
        await sim.state.aclose()  # waits for background deliveries
        [(_, _, raw)] = receiver.requests
        assert json.loads(raw)["payload"]["id"] == other["id"]

        # The end user writes again: the closed conversation stays closed, a new one opens.
        again = (
            await sim.http.post(f"/_sim/conversations/{cid}/send", json={"text": "hello again"})
        ).json()
        assert again["conversationId"] != cid
        new = (await sim.http.get(f"/_sim/conversations/{again['conversationId']}")).json()
        assert new["endUser"] == conversation["endUser"] and new["status"] == "OPEN"


async def test_send_reports_unreachable_webhook() -> None:
    async with running_sim(
        webhook_url="http://127.0.0.1:9/webhooks/infobip/tok", webhook_timeout_s=2.0
    ) as sim:
        cid = (await new_conversation(sim, history=1))["id"]
        sent = (await sim.http.post(f"/_sim/conversations/{cid}/send", json={"text": "hi"})).json()
        assert sent["webhook_status"] is None
        assert sent["deliveries"][0]["error"]
        assert (await sim.http.get(f"/_sim/conversations/{cid}")).json()["messageCount"] == 2


async def test_reset_and_config(sim: Sim) -> None:
    await new_conversation(sim, history=1, id="keep-me")
    duplicate = await sim.http.post("/_sim/conversations", json={"id": "keep-me"})
    assert duplicate.status_code == 400
    config = (
        await sim.http.put("/_sim/config", json={"page_delay_ms": 5, "webhook_url": "http://x/y"})
    ).json()
    assert config["page_delay_ms"] == 5 and config["webhook_url"] == "http://x/y"
    assert (await sim.http.post("/_sim/reset")).status_code == 200
    assert (await sim.http.get("/_sim/conversations/keep-me")).status_code == 400
    config = (await sim.http.get("/_sim/config")).json()
    assert config["page_delay_ms"] == 0 and config["webhook_url"] is None


async def test_list_conversations_filters(sim: Sim) -> None:
    first = await new_conversation(sim, history=1, tags=["vip"])
    await new_conversation(sim, history=1, status="CLOSED")
    body = (
        await sim.http.get("/ccaas/1/conversations", params={"status": "OPEN"}, headers=AUTH)
    ).json()
    assert [c["id"] for c in body["conversations"]] == [first["id"]]
    tagged = (
        await sim.http.get("/ccaas/1/conversations", params={"tagNames": "vip"}, headers=AUTH)
    ).json()
    assert tagged["pagination"]["totalItems"] == 1


async def test_unknown_route_answers_infobip_shape(sim: Sim) -> None:
    response = await sim.http.get("/ccaas/2/whatever", headers=AUTH)
    assert response.status_code == 404
    assert service_exception(response)["messageId"] == "NOT_FOUND"


async def test_x_agent_id_rules_and_assignee(sim: Sim) -> None:
    """Infobip's messages documentation: Create Message fails with ``x-agent-id`` on an
    unassigned conversation and without it on an assigned one."""
    conversation = await new_conversation(sim, history=2)
    cid = conversation["id"]
    path = f"/ccaas/1/conversations/{cid}/messages"
    body = {
        "channel": "WHATSAPP",
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "contentType": "TEXT",
        "content": {"text": "hi"},
    }
    refused = await sim.http.post(path, json=body, headers={**AUTH, "x-agent-id": "a-1"})
    assert refused.status_code == 400
    assert "x-agent-id" in service_exception(refused)["validationErrors"]
    assert (await sim.http.post(path, json=body, headers=AUTH)).status_code == 200

    assignee = f"/ccaas/1/conversations/{cid}/assignee"
    bad = await sim.http.put(assignee, json={"agentId": ""}, headers=AUTH)
    assert bad.status_code == 400
    assigned = await sim.http.put(assignee, json={"agentId": "a-1"}, headers=AUTH)
    assert assigned.status_code == 200 and assigned.json()["agentId"] == "a-1"
    missing = await sim.http.post(path, json=body, headers=AUTH)
    assert missing.status_code == 400
    assert service_exception(missing)["messageId"] == "BAD_REQUEST"
    other = {**AUTH, "x-agent-id": "a-2"}
    assert (await sim.http.post(path, json=body, headers=other)).status_code == 200
    # Whether the header must name the assignee is unpublished: a setting.
    assert (
        await sim.http.put("/_sim/config", json={"agent_must_be_assignee": True})
    ).status_code == 200
    assert (await sim.http.post(path, json=body, headers=other)).status_code == 400
    ok = await sim.http.post(path, json=body, headers={**AUTH, "x-agent-id": "a-1"})
    assert ok.status_code == 200

    unassigned = await sim.http.delete(assignee, headers=AUTH)
    assert unassigned.status_code == 200 and "agentId" not in unassigned.json()
    assert (await sim.http.post(path, json=body, headers=AUTH)).status_code == 200
    headers = [m["agentIdHeader"] for m in sim.state.agent_messages(cid)]
    assert headers == [None, "a-2", "a-1", None]


async def test_failure_after_the_call_took_effect(sim: Sim) -> None:
    conversation = await new_conversation(sim, history=0)
    cid = conversation["id"]
    path = f"/ccaas/1/conversations/{cid}/messages"
    body = {
        "channel": "WHATSAPP",
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "contentType": "TEXT",
        "content": {"text": "stored anyway"},
    }
    injected = await sim.http.post(
        "/_sim/failures", json={"status": 500, "when": "after", "path_prefix": path}
    )
    assert injected.json()["failures"][0]["when"] == "after"
    failed = await sim.http.post(path, json=body, headers=AUTH)
    assert failed.status_code == 500
    assert [m["content"]["text"] for m in sim.state.agent_messages(cid)] == ["stored anyway"]
    for bad in ({"when": "later"}, {"drop": "yes"}):
        assert (await sim.http.post("/_sim/failures", json=bad)).status_code == 400


async def test_dropped_connection_after_the_call_took_effect() -> None:
    async with served_sim() as sim:
        conversation = sim.state.create_conversation(history=0)
        path = f"/ccaas/1/conversations/{conversation.id}/messages"
        sim.state.inject_failure(Failure(remaining=1, status=0, when="after", drop=True))
        body = {
            "channel": conversation.channel,
            "from": conversation.business_sender,
            "to": conversation.end_user,
            "contentType": "TEXT",
            "content": {"text": "stored, connection lost"},
        }
        assert sim.url is not None
        async with httpx.AsyncClient(base_url=sim.url) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(path, json=body, headers=AUTH)
        assert len(sim.state.agent_messages(conversation.id)) == 1


async def test_whatsapp_window_setting_and_typing_events(sim: Sim) -> None:
    conversation = await new_conversation(sim, history=2)
    cid = conversation["id"]
    body = {
        "channel": "WHATSAPP",
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "contentType": "TEXT",
        "content": {"text": "hi"},
    }
    path = f"/ccaas/1/conversations/{cid}/messages"
    for bad in (0, "1", True):
        refused = await sim.http.put("/_sim/config", json={"whatsapp_window_s": bad})
        assert refused.status_code == 400
    # Off by default (the document does not describe the window).
    assert (await sim.http.post(path, json=body, headers=AUTH)).status_code == 200
    assert (await sim.http.put("/_sim/config", json={"whatsapp_window_s": 1})).status_code == 200
    for message in sim.state.conversations[cid].messages:  # the end user wrote long ago
        message["createdAt"] = "2020-01-01T00:00:00.000+00:00"
    outside = await sim.http.post(path, json=body, headers=AUTH)
    assert outside.status_code == 400
    assert "customer care window" in service_exception(outside)["text"]
    await sim.http.put("/_sim/config", json={"whatsapp_window_s": None})
    assert (await sim.http.post(path, json=body, headers=AUTH)).status_code == 200

    events = f"/ccaas/1/conversations/{cid}/events"
    event = {
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "channel": "WHATSAPP",
        "type": "TYPING_STARTED",
    }
    taken = await sim.http.post(events, json=event, headers=AUTH)
    assert taken.status_code == 200 and taken.content == b""
    sms = await sim.http.post(events, json={**event, "channel": "SMS"}, headers=AUTH)
    assert sms.status_code == 400
    listed = (await sim.http.get(f"/_sim/conversations/{cid}/events")).json()["events"]
    assert [e["type"] for e in listed] == ["TYPING_STARTED"]
