"""The Infobip simulator holds requests, its answers and its webhooks to Infobip's
published OpenAPI documents (simulators/infobip/contract.py), and the recording check of
the end-to-end runs (tests/support/infobip_contract.py) catches what violates them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ccbridge.simulators.infobip.contract import (
    EXTRACT_FILE,
    Contract,
    default_contract,
    dumps,
    extract_from_files,
    load_vendored,
)
from ccbridge.simulators.infobip.recorder import read_records
from ccbridge.simulators.infobip.webhooks import Delivery
from tests.simulators.infobip.harness import API_KEY, Sim, running_sim
from tests.support.infobip_contract import DOCUMENTS, REPO_ROOT, violations

AUTH = {"Authorization": f"App {API_KEY}"}
VENDORED = REPO_ROOT / "simulators" / "infobip" / "openapi" / EXTRACT_FILE


def _documents() -> Path:
    if not DOCUMENTS.is_dir():
        pytest.skip(
            f"Infobip's published documents are not at {DOCUMENTS} (CI has ../shared beside "
            "the checkout); the vendored extract cannot be compared with them"
        )
    return DOCUMENTS


def test_vendored_extract_is_derived_from_the_published_documents() -> None:
    fresh = dumps(extract_from_files(_documents()))
    assert VENDORED.read_bytes() == fresh, (
        "the vendored contract differs from the documents: run "
        "`python scripts/extract_infobip_contract.py`"
    )


def test_the_packaged_extract_is_the_vendored_file() -> None:
    assert dumps(load_vendored()) == VENDORED.read_bytes()


def _create_message_examples() -> list[dict[str, Any]]:
    import orjson

    document = orjson.loads((_documents() / "infobip-conversations-openapi.json").read_bytes())
    post = document["paths"]["/ccaas/1/conversations/{conversationId}/messages"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    return [example["value"] for example in examples.values()]


def test_every_create_message_example_of_the_document_is_accepted() -> None:
    contract = default_contract()
    matched = contract.match("POST", "/ccaas/1/conversations/c1/messages")
    assert matched is not None
    op, params = matched
    examples = _create_message_examples()
    assert len(examples) > 50
    for body in examples:
        assert contract.request_errors(op, params, {}, body, has_body=True) == {}, body


def test_content_schemas_are_derived_from_the_request_examples() -> None:
    schemas = default_contract().content_schemas
    assert schemas["TEXT"]["required"] == ["text"]
    assert schemas["TEXT"]["properties"]["text"] == {"type": "string", "maxLength": 4096}
    assert schemas["IMAGE"]["required"] == ["url"]
    assert set(schemas["LOCATION"]["required"]) == {"latitude", "longitude"}
    assert all(schema["x-derived-from-examples"] >= 1 for schema in schemas.values())


@pytest.fixture
async def sim() -> Any:
    async with running_sim() as sim:
        yield sim


async def _conversation(sim: Sim) -> dict[str, Any]:
    response = await sim.http.post("/_sim/conversations", json={"history": 2})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.text
    exc = response.json()["requestError"]["serviceException"]
    assert exc["messageId"] == "BAD_REQUEST"
    found: dict[str, list[str]] = exc.get("validationErrors", {})
    return found


async def test_create_message_violations_are_infobips_400(sim: Sim) -> None:
    conversation = await _conversation(sim)
    path = f"/ccaas/1/conversations/{conversation['id']}/messages"
    good = {
        "channel": "WHATSAPP",
        "from": conversation["businessSender"],
        "to": conversation["endUser"],
        "contentType": "TEXT",
        "content": {"text": "hello"},
    }
    assert (await sim.http.post(path, json=good, headers=AUTH)).status_code == 200
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "to"}, "to"),
        ({**good, "channel": "CARRIER_PIGEON"}, "channel"),
        ({**good, "contentType": "SMOKE_SIGNAL"}, "contentType"),
        ({**good, "content": {"text": "x" * 4097}}, "content"),
        ({**good, "contentType": "IMAGE", "content": {"caption": "no url"}}, "content.url"),
        ({**good, "from": 385}, "from"),
    ]
    for body, field in cases:
        errors = _errors(await sim.http.post(path, json=body, headers=AUTH))
        assert field in errors, (field, errors)
    assert _errors(
        await sim.http.post(path, json=good | {"content": {"text": "x" * 4097}}, headers=AUTH)
    )["content"] == ["size cannot be longer than 4096 characters."]
    malformed = await sim.http.post(
        path, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["requestError"]["serviceException"]["text"] == "Invalid request body."
    assert (
        len(
            (await sim.http.get(f"/_sim/conversations/{conversation['id']}/agent-messages")).json()[
                "messages"
            ]
        )
        == 1
    )


async def test_parameter_violations_are_infobips_400(sim: Sim) -> None:
    conversation = await _conversation(sim)
    path = f"/ccaas/1/conversations/{conversation['id']}/messages"
    errors = _errors(
        await sim.http.get(
            path, params={"limit": "1000", "page": "first", "direction": "SIDEWAYS"}, headers=AUTH
        )
    )
    assert set(errors) == {"limit", "page", "direction"}
    listing = await sim.http.get("/ccaas/1/conversations", params={"status": "DONE"}, headers=AUTH)
    assert "status" in _errors(listing)
    subscription = await sim.http.post(
        "/subscriptions/1/subscription/CUSTOMER_ENGAGEMENT",
        json={"subscriptionId": "s1", "events": ["NOT_AN_EVENT"], "profile": {"profileId": "p"}},
        headers=AUTH,
    )
    assert _errors(subscription)


async def test_strict_mode_answers_500_for_an_answer_that_violates_the_documents(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = await _conversation(sim)
    monkeypatch.setattr(sim.state, "get_conversation", lambda cid: {"id": cid, "status": "GONE"})
    answer = await sim.http.get(f"/ccaas/1/conversations/{conversation['id']}", headers=AUTH)
    assert answer.status_code == 500
    assert (
        "violates Infobip's published schema"
        in answer.json()["requestError"]["serviceException"]["text"]
    )
    violations_seen = sim.state.config()["contract"]["violations"]
    assert violations_seen[-1]["errors"] == {
        "status": ["must be one of OPEN, WAITING, SOLVED, CLOSED"]
    }


async def test_warn_mode_answers_and_keeps_the_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_sim(contract_mode="warn") as sim:
        conversation = await _conversation(sim)
        monkeypatch.setattr(sim.state, "get_conversation", lambda cid: {"id": 7})
        answer = await sim.http.get(f"/ccaas/1/conversations/{conversation['id']}", headers=AUTH)
        assert answer.status_code == 200
        assert sim.state.config()["contract"]["violations"][-1]["errors"] == {
            "id": ["must be of type string"]
        }


async def test_strict_mode_does_not_send_a_webhook_that_violates_the_documents(sim: Sim) -> None:
    bad_event = Delivery("event", "http://127.0.0.1:9/x", {"type": "INBOUND_MESSAGE"})
    result = await sim.state.sender.post(bad_event)
    assert (result.status, result.error) == (None, "ContractViolation")
    errors = sim.state.config()["contract"]["violations"][-1]["errors"]
    assert errors["payload"] == errors["timestamp"] == ["must not be null"]


async def test_the_recording_check_catches_what_violates_the_documents(tmp_path: Path) -> None:
    record = tmp_path / "exchanges.jsonl"
    async with running_sim(record_path=str(record), contract_mode="warn") as sim:
        conversation = await _conversation(sim)
        path = f"/ccaas/1/conversations/{conversation['id']}/messages"
        good = {
            "channel": "WHATSAPP",
            "from": conversation["businessSender"],
            "to": conversation["endUser"],
            "contentType": "TEXT",
            "content": {"text": "hello"},
        }
        assert (await sim.http.post(path, json=good, headers=AUTH)).status_code == 200
        assert (await sim.http.get(path, headers=AUTH)).status_code == 200
        assert violations(read_records(record)) == []
        bad = {k: v for k, v in good.items() if k != "to"}
        assert (await sim.http.post(path, json=bad, headers=AUTH)).status_code == 400
    records = read_records(record)
    assert len(records) == 3
    found = violations(records)
    assert len(found) == 1 and "request POST" in found[0] and "'to'" in found[0], found


async def test_an_answer_field_the_documents_do_not_name_is_a_violation(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = await _conversation(sim)
    real = sim.state.get_conversation
    monkeypatch.setattr(sim.state, "get_conversation", lambda cid: {**real(cid), "vip": True})
    answer = await sim.http.get(f"/ccaas/1/conversations/{conversation['id']}", headers=AUTH)
    assert answer.status_code == 500
    assert sim.state.config()["contract"]["violations"][-1]["errors"] == {
        "vip": ["is not a documented field"]
    }


def test_fields_shown_by_the_documents_examples_are_documented() -> None:
    # Create Tag's answer schema names only `name`; its example shows `createdAt` too.
    contract = default_contract()
    matched = contract.match("POST", "/ccaas/1/tags")
    assert matched is not None
    answer = {"name": "vip", "createdAt": "2024-01-01T00:00:00.000+00:00"}
    assert contract.response_errors(matched[0], 200, answer) == {}
    assert contract.response_errors(matched[0], 200, {**answer, "id": "1"}) == {
        "id": ["is not a documented field"]
    }


def test_the_recording_check_catches_bad_answers_webhooks_and_routes() -> None:
    contract: Contract = default_contract()
    records = [
        {
            "kind": "api",
            "method": "GET",
            "path": "/ccaas/1/conversations/c1",
            "query": {},
            "body": None,
            "hasBody": False,
            "status": 200,
            "answer": {"id": "c1", "topic": None},
        },
        {
            "kind": "api",
            "method": "PUT",
            "path": "/ccaas/1/conversations/c1",
            "query": {},
            "body": {"id": "c1", "status": "CLOSED"},
            "hasBody": True,
            "status": 200,
            "answer": {"id": "c1", "status": "CLOSED"},
        },
        {"kind": "webhook", "webhook": "event", "body": {"type": "NO_SUCH_EVENT"}},
        {"kind": "webhook", "webhook": "legacy", "body": {"id": 1, "direction": "UP"}},
        {
            "kind": "api",
            "method": "GET",
            "path": "/ccaas/9/nothing",
            "query": {},
            "body": None,
            "hasBody": False,
            "status": 200,
            "answer": {},
        },
    ]
    found = violations(records, contract)
    assert len(found) == 5, found
    assert "topic" in found[0]
    assert "read-only fields ['id']" in found[1]
    assert found[2].startswith("event webhook") and found[3].startswith("legacy webhook")
    assert "not an operation" in found[4]
