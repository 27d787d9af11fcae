"""The CCaaS simulator's batched delivery: a JSON array of bridge events answered with
per-event results, in array order, later events of a failed case skipped."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ccbridge.simulators.ccaas import CcaasState, create_app
from tests.simulators.ccaas.test_ccaas_simulator import (
    SECRET,
    customer_event,
    open_event,
    signed,
)

SKIPPED = {"status": 409, "error": "skipped: an earlier event of this case failed"}


@pytest.fixture
async def sim() -> AsyncIterator[tuple[CcaasState, httpx.AsyncClient]]:
    state = CcaasState()
    app = create_app(state, secret=SECRET, bridge_webhook_url=None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        yield state, client


async def open_case(client: httpx.AsyncClient, conversation: str) -> str:
    answer = await client.post("/webhook", **signed(open_event(conversation)))
    assert answer.status_code == 201
    case_id: str = answer.json()["caseId"]
    return case_id


def customer_ids(state: CcaasState, case_id: str) -> list[str]:
    return [m["id"] for m in state.case(case_id)["messages"] if m["from"] == "customer"]


def outcomes(state: CcaasState) -> list[tuple[Any, ...]]:
    return [
        (d["type"], d["idempotencyKey"], d["caseId"], d["status"], d["outcome"])
        for d in state.deliveries()
    ]


async def test_events_apply_in_order_with_per_event_results(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    one, two = await open_case(client, "conv-1"), await open_case(client, "conv-2")
    events = [
        customer_event(one, "m-1", "first"),
        customer_event(two, "m-2", "other case"),
        customer_event(one, "m-3", "second"),
        customer_event(one, "m-1", "first"),  # a repeated key inside the array
    ]
    answer = await client.post("/webhook", **signed(events))
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 200, 200]
    assert results[3] == results[0] and results[0]["messageId"].startswith("MSG-")
    assert customer_ids(state, one) == ["m-1", "m-3"] and customer_ids(state, two) == ["m-2"]
    assert outcomes(state)[2:] == [
        ("case.message", "m-1", one, 200, "ok"),
        ("case.message", "m-2", two, 200, "ok"),
        ("case.message", "m-3", one, 200, "ok"),
        ("case.message", "m-1", one, 200, "replayed"),
    ]
    # The whole array again: every event replayed, nothing applied twice.
    again = await client.post("/bridge", **signed(events))
    assert again.json()["results"] == results
    assert [o[-1] for o in outcomes(state)[-4:]] == ["replayed"] * 4
    assert customer_ids(state, one) == ["m-1", "m-3"]


async def test_after_a_failed_event_the_rest_of_its_case_is_skipped(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    one, two = await open_case(client, "conv-1"), await open_case(client, "conv-2")
    broken = customer_event(one, "m-2", "broken")
    del broken["message"]["contentType"]
    events = [
        customer_event(one, "m-1", "ok"),
        broken,
        customer_event(two, "m-5", "other case goes on"),
        customer_event(one, "m-3", "after the gap"),
        customer_event("CASE-99999", "m-9", "unknown case"),
        customer_event("CASE-99999", "m-10", "unknown case again"),
    ]
    answer = await client.post("/webhook", **signed(events))
    results = answer.json()["results"]
    assert answer.status_code == 200
    assert [r["status"] for r in results] == [200, 400, 200, 409, 404, 409]
    assert results[1] == {"status": 400, "error": "message.contentType is required"}
    assert results[3] == results[5] == SKIPPED
    assert results[4] == {"status": 404, "error": "unknown case"}
    assert customer_ids(state, one) == ["m-1"] and customer_ids(state, two) == ["m-5"]
    assert [(o[1], o[3], o[4]) for o in outcomes(state)[2:]] == [
        ("m-1", 200, "ok"),
        ("m-2", 400, "invalid"),
        ("m-5", 200, "ok"),
        ("m-3", 409, "skipped"),
        ("m-9", 404, "ok"),
        ("m-10", 409, "skipped"),
    ]
    # A skipped event was not applied nor stored: sent again (fixed), it goes through.
    fixed = await client.post(
        "/webhook",
        **signed([customer_event(one, "m-2", "fixed"), customer_event(one, "m-3", "again")]),
    )
    assert [r["status"] for r in fixed.json()["results"]] == [200, 200]
    assert customer_ids(state, one) == ["m-1", "m-2", "m-3"]


async def test_open_and_close_events_in_an_array(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    one = await open_case(client, "conv-1")
    close = {
        "type": "case.close",
        "id": "evt-close",
        "conversationId": "conv-1",
        "idempotencyKey": "conv-1:close",
        "timestamp": "2025-01-01T10:00:09.000Z",
        "caseId": one,
        "reason": "infobip_closed",
    }
    events = [
        customer_event(one, "m-1", "last words"),
        close,
        customer_event(one, "m-2", "too late"),
        open_event("conv-2"),
    ]
    answer = await client.post("/webhook", **signed(events))
    assert answer.json()["results"] == [
        {"status": 200, "messageId": answer.json()["results"][0]["messageId"]},
        {"status": 200, "alreadyClosed": False},
        {"status": 409, "error": "case is closed"},
        {"status": 201, "caseId": "CASE-00002"},
    ]
    assert state.case(one)["status"] == "closed" and customer_ids(state, one) == ["m-1"]
    assert outcomes(state)[-1] == ("case.open", "conv-2", "CASE-00002", 201, "ok")


async def test_a_fault_or_a_bad_signature_answers_the_whole_request(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    one = await open_case(client, "conv-1")
    events = [customer_event(one, "m-1", "a"), customer_event(one, "m-2", "b")]
    state.inject_failures(1, 503, retry_after=2)
    fault = await client.post("/webhook", **signed(events))
    assert (fault.status_code, fault.headers["retry-after"]) == (503, "2")
    assert [(o[1], o[3], o[4]) for o in outcomes(state)[1:]] == [
        ("m-1", 503, "fault"),
        ("m-2", 503, "fault"),
    ]
    stale = await client.post("/webhook", **signed(events, ts=int(time.time()) - 301))
    assert stale.status_code == 401
    assert [o[-1] for o in outcomes(state)[3:]] == ["unauthorized", "unauthorized"]
    assert customer_ids(state, one) == []
    assert state.status()["pendingFailures"] == 0  # one fault per request, not per event


async def test_array_size_limits(sim: tuple[CcaasState, httpx.AsyncClient]) -> None:
    state, client = sim
    one = await open_case(client, "conv-1")
    many = [customer_event(one, f"m-{i}", "x") for i in range(101)]
    too_many = await client.post("/webhook", **signed(many))
    assert too_many.status_code == 413 and "1 to 100" in too_many.json()["error"]
    empty = await client.post("/webhook", **signed([]))
    assert empty.status_code == 400 and "error" in empty.json()
    assert customer_ids(state, one) == []
    full = await client.post("/webhook", **signed(many[:100]))
    assert [r["status"] for r in full.json()["results"]] == [200] * 100
    assert len(customer_ids(state, one)) == 100


async def test_json_is_orjsons_and_the_answer_bytes(
    sim: tuple[CcaasState, httpx.AsyncClient],
) -> None:
    state, client = sim
    one = await open_case(client, "conv-1")
    big, odd = customer_event(one, "m-1", "big"), customer_event(one, "m-2", "odd")
    # An integer beyond 64 bits is read as a float (orjson's way).
    big["message"]["content"] = {"n": 12345678901234567890123, "id": "98765432109876543210"}
    answer = await client.post("/webhook", **signed([big]))
    assert answer.status_code == 200
    assert [r["status"] for r in answer.json()["results"]] == [200]
    # Compact UTF-8 JSON, as Starlette's JSONResponse writes it.
    assert answer.headers["content-type"] == "application/json"
    assert (
        answer.content
        == json.dumps(answer.json(), ensure_ascii=False, separators=(",", ":")).encode()
    )
    (stored,) = (m["content"] for m in state.case(one)["messages"])
    assert stored == {"n": 1.2345678901234568e22, "id": "98765432109876543210"}
    # NaN and Infinity are not JSON: a clear 400, nothing applied.
    odd["message"]["content"] = {"x": float("nan"), "y": float("-inf")}
    for body in ([odd], odd):
        refused = await client.post("/webhook", **signed(body))
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("body is not JSON")
    assert len(state.case(one)["messages"]) == 1
