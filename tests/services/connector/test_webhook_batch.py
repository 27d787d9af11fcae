"""The webhook adapter's batched case.message delivery (CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX).

Most tests run against the real CCaaS simulator served by uvicorn on a loopback port,
recording the requests it receives (tests/support/far_side.py's Recorder) so the tests can
see how events were grouped. Answers the simulator cannot give (odd ``results``,
oversized bodies, timeouts) come from a scripted HTTP server on loopback instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
import orjson
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.__main__ import build
from ccbridge.services.connector.adapters.webhook import (
    MAX_RESPONSE_BYTES,
    WebhookAdapter,
    event_id,
)
from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.adapters.webhook_signature import verify_signature
from ccbridge.services.connector.base import CaseMessages, CaseToOpen
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.farside import MAX_RETRY_AFTER_S
from ccbridge.services.runtime.settings import Secret, SettingsError
from ccbridge.simulators.ccaas import CcaasState, create_app
from tests.simulators.ccaas.support import serve_app
from tests.support.far_side import Recorder, Reply, Script, Seen, closed_port, far_side

SECRET = "batch-secret-0123456789abcdef"


@dataclass
class Far:
    """The CCaaS simulator served on loopback, and the requests it received."""

    state: CcaasState
    url: str
    now: float  # the adapters' clock: one fixed instant, so event objects compare equal
    recorder: Recorder

    @property
    def requests(self) -> list[Seen]:
        return self.recorder.requests

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]


@pytest.fixture
async def far() -> AsyncIterator[Far]:
    state = CcaasState()
    recorder = Recorder(create_app(state, secret=SECRET, bridge_webhook_url=None))
    async with serve_app(recorder) as url:
        yield Far(state, f"{url}/webhook", float(int(time.time())), recorder)


def settings(url: str, batch_max: int) -> WebhookSettings:
    return WebhookSettings(url=url, secrets=(Secret(SECRET),), timeout_s=3.0, batch_max=batch_max)


Make = Callable[[int], WebhookAdapter]


@pytest.fixture
async def adapters(far: Far) -> AsyncIterator[Make]:
    """Builds webhook adapters (batch size given) pointed at the simulator."""
    made: list[WebhookAdapter] = []

    def make(batch_max: int) -> WebhookAdapter:
        adapter = WebhookAdapter(settings(far.url, batch_max), clock=lambda: far.now)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()


def message(mid: str, text: str | None = None, content_json: str | None = None) -> Any:
    return common_pb2.Message(
        id=mid,
        direction=common_pb2.DIRECTION_INBOUND,
        author_type="CUSTOMER",
        content_type="TEXT",
        content_json=content_json
        if content_json is not None
        else json.dumps({"text": text or f"text of {mid}"}),
    )


async def open_cases(adapter: WebhookAdapter, *conversations: str) -> list[str]:
    ids = []
    for conversation in conversations:
        opened = await adapter.open_case(
            CaseToOpen(
                conversation_id=conversation,
                channel="SMS",
                end_user="4470",
                queue="",
                priority=0,
                skills=(),
                rule="default",
                tags=(),
                metadata={},
                transcript=[],
                transcript_truncated=False,
                idempotency_key=conversation,
            )
        )
        ids.append(opened.external_id)
    return ids


def case(external_id: str, conversation: str, *ids: str) -> CaseMessages:
    return CaseMessages(external_id, conversation, [message(mid) for mid in ids])


def customer_ids(state: CcaasState, case_id: str) -> list[str]:
    return [m["id"] for m in state.case(case_id)["messages"] if m["from"] == "customer"]


def arrays(far: Far) -> list[list[dict[str, Any]]]:
    return [body for body in far.bodies() if isinstance(body, list)]


# --- against the CCaaS simulator --------------------------------------------------------


async def test_one_signed_array_of_the_same_events(far: Far, adapters: Make) -> None:
    batched = adapters(10)
    single = adapters(1)
    a, b, c = await open_cases(batched, "conv-a", "conv-b", "conv-c")
    far.requests.clear()
    results = await batched.post_customer_messages(
        [
            case(a, "conv-a", "a1", "a2", "a3"),
            case(b, "conv-b", "b1", "b2"),
            case(c, "conv-c", "c1", "c2", "c3"),
        ]
    )
    assert [(r.delivered, r.error) for r in results] == [(3, None), (2, None), (3, None)]
    assert all(mid.startswith("MSG-") for r in results for mid in r.message_ids)
    assert customer_ids(far.state, a) == ["a1", "a2", "a3"]
    assert customer_ids(far.state, b) == ["b1", "b2"]
    assert customer_ids(far.state, c) == ["c1", "c2", "c3"]

    (request,) = far.requests  # one POST for the 8 events
    assert "idempotency-key" not in request.headers
    verify_signature([SECRET], request.headers, request.body, now=time.time())
    (events,) = arrays(far)
    assert [(e["caseId"], e["idempotencyKey"]) for e in events] == [
        (a, "a1"),
        (a, "a2"),
        (a, "a3"),
        (b, "b1"),
        (b, "b2"),
        (c, "c1"),
        (c, "c2"),
        (c, "c3"),
    ]
    assert events[0]["id"] == event_id("case.message", "a1")
    # Exactly the event object the single-event POST carries (then replayed by the sim).
    far.requests.clear()
    await single.post_customer_message(a, "conv-a", message("a2"), "a2")
    (single_request,) = far.requests
    assert single_request.headers["idempotency-key"] == "a2"
    assert single_request.json() == events[1]
    assert customer_ids(far.state, a) == ["a1", "a2", "a3"]


async def test_a_closed_case_stops_alone(far: Far, adapters: Make) -> None:
    adapter = adapters(10)
    a, b, c = await open_cases(adapter, "conv-a", "conv-b", "conv-c")
    far.state.close_by_agent(b, "resolved")
    far.requests.clear()
    results = await adapter.post_customer_messages(
        [
            case(a, "conv-a", "a1", "a2"),
            case(b, "conv-b", "b1", "b2", "b3"),
            case(c, "conv-c", "c1"),
            case("CASE-99999", "conv-x", "x1"),
        ]
    )
    assert len(far.requests) == 1
    assert [r.delivered for r in results] == [2, 0, 1, 0]
    closed, unknown = results[1].error, results[3].error
    assert closed is not None and (closed.status, closed.retryable) == (409, False)
    assert unknown is not None and (unknown.status, unknown.retryable) == (404, False)
    assert results[1].message_ids == []
    assert customer_ids(far.state, a) == ["a1", "a2"] and customer_ids(far.state, c) == ["c1"]
    assert customer_ids(far.state, b) == []
    outcomes = [(d["idempotencyKey"], d["status"], d["outcome"]) for d in far.state.deliveries()]
    assert outcomes[-7:] == [
        ("a1", 200, "ok"),
        ("a2", 200, "ok"),
        ("b1", 409, "ok"),
        ("b2", 409, "skipped"),
        ("b3", 409, "skipped"),
        ("c1", 200, "ok"),
        ("x1", 404, "ok"),
    ]


async def test_a_repeated_batch_is_replayed(far: Far, adapters: Make) -> None:
    adapter = adapters(10)
    a, b = await open_cases(adapter, "conv-a", "conv-b")
    cases = [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1")]
    first = await adapter.post_customer_messages(cases)
    again = await adapter.post_customer_messages(cases)
    assert [r.message_ids for r in again] == [r.message_ids for r in first]
    assert [r.error for r in again] == [None, None]
    assert customer_ids(far.state, a) == ["a1", "a2"] and customer_ids(far.state, b) == ["b1"]
    assert [d["outcome"] for d in far.state.deliveries()[-3:]] == ["replayed"] * 3


async def test_a_retryable_answer_fails_every_case_of_the_request(far: Far, adapters: Make) -> None:
    adapter = adapters(10)
    a, b = await open_cases(adapter, "conv-a", "conv-b")
    far.state.inject_failures(1, 503, retry_after=3)
    cases = [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1")]
    results = await adapter.post_customer_messages(cases)
    for result in results:
        assert (result.delivered, result.message_ids) == (0, [])
        assert result.error is not None
        assert (result.error.retryable, result.error.retry_after, result.error.status) == (
            True,
            3.0,
            503,
        )
    assert customer_ids(far.state, a) == [] and customer_ids(far.state, b) == []
    assert [d["outcome"] for d in far.state.deliveries()[-3:]] == ["fault"] * 3
    # The retry goes through.
    assert [r.delivered for r in await adapter.post_customer_messages(cases)] == [2, 1]
    assert customer_ids(far.state, a) == ["a1", "a2"]


async def test_a_refused_request_falls_back_to_single_events(
    far: Far, adapters: Make, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = adapters(10)
    a, b = await open_cases(adapter, "conv-a", "conv-b")
    far.state.close_by_agent(b, "resolved")
    far.state.inject_failures(1, 400, retry_after=None)
    far.requests.clear()
    with caplog.at_level(logging.WARNING, logger="ccbridge.services.connector.adapters.webhook"):
        results = await adapter.post_customer_messages(
            [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1", "b2")]
        )
    assert [r.delivered for r in results] == [2, 0]
    assert results[0].error is None and all(m.startswith("MSG-") for m in results[0].message_ids)
    assert results[1].error is not None and results[1].error.status == 409
    assert customer_ids(far.state, a) == ["a1", "a2"]
    bodies = far.bodies()
    assert isinstance(bodies[0], list) and len(bodies[0]) == 4
    singles = far.requests[1:]
    # One by one: a1, a2 in order; b stops at b1.
    assert sorted(r.headers["idempotency-key"] for r in singles) == ["a1", "a2", "b1"]
    keys = [r.headers["idempotency-key"] for r in singles]
    assert [k for k in keys if k.startswith("a")] == ["a1", "a2"]
    fallback = [r for r in caplog.records if "one by one" in r.getMessage()]
    assert len(fallback) == 1
    assert "text of" not in caplog.text


async def test_chunks_respect_the_batch_size_and_keep_cases_whole(far: Far, adapters: Make) -> None:
    adapter = adapters(3)
    a, b, c, d = await open_cases(adapter, "conv-a", "conv-b", "conv-c", "conv-d")
    far.requests.clear()
    long_case = [f"a{i}" for i in range(1, 8)]
    results = await adapter.post_customer_messages(
        [
            case(a, "conv-a", *long_case),
            case(b, "conv-b", "b1", "b2"),
            case(c, "conv-c", "c1"),
            case(d, "conv-d", "d1", "d2"),
        ]
    )
    assert [(r.delivered, r.error) for r in results] == [(7, None), (2, None), (1, None), (2, None)]
    assert len(set(results[0].message_ids)) == 7
    sent = arrays(far)
    assert len(sent) == len(far.requests) == 5  # a: 3 + 3 + 1; b+c; d
    assert all(1 <= len(events) <= 3 for events in sent)
    by_request = [[e["idempotencyKey"] for e in events] for events in sent]
    # The long case goes in order, alone; the others are never split.
    assert [keys for keys in by_request if keys[0].startswith("a")] == [
        ["a1", "a2", "a3"],
        ["a4", "a5", "a6"],
        ["a7"],
    ]
    assert sorted(keys for keys in by_request if not keys[0].startswith("a")) == [
        ["b1", "b2", "c1"],
        ["d1", "d2"],
    ]
    assert customer_ids(far.state, a) == long_case


async def test_batch_max_one_keeps_one_event_per_post(far: Far, adapters: Make) -> None:
    adapter = adapters(1)
    a, b = await open_cases(adapter, "conv-a", "conv-b")
    far.requests.clear()
    results = await adapter.post_customer_messages(
        [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1")]
    )
    assert [r.delivered for r in results] == [2, 1]
    assert arrays(far) == []
    assert sorted(r.headers["idempotency-key"] for r in far.requests) == ["a1", "a2", "b1"]


async def test_batches_and_single_events_together(far: Far, adapters: Make) -> None:
    adapter = adapters(10)
    a, b = await open_cases(adapter, "conv-a", "conv-b")
    far.state.close_by_agent(b, "resolved")
    results = await adapter.post_customer_messages(
        [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1")]
    )
    assert [r.delivered for r in results] == [2, 0]
    closed = results[1].error
    assert closed is not None and (closed.status, closed.retryable) == (409, False)
    assert customer_ids(far.state, a) == ["a1", "a2"]
    # The CCaaS's 503 with Retry-After reaches the caller as a retryable error.
    far.state.inject_failures(1, 503, retry_after=3)
    (busy,) = await adapter.post_customer_messages([case(a, "conv-a", "a3")])
    assert busy.error is not None
    assert (busy.error.retryable, busy.error.retry_after) == (True, 3.0)
    # Single events (case.open replayed by key, case.close) work the same way.
    assert (await open_cases(adapter, "conv-a")) == [a]
    assert await adapter.close_case(a, "conv-a", "done", "close:conv-a") is False


async def test_post_customer_messages_rpc_uses_the_setting(far: Far, redis_url: str) -> None:
    """The setting flows from the environment to the adapter the service builds."""
    settings_ = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "REDIS_URL": redis_url,
            "CCBRIDGE_CONNECTOR_PORT": "0",
            "CCBRIDGE_DRAIN_DELAY_S": "0",
            "SESSION_ADDR": "127.0.0.1:9",  # not called by these RPCs
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": far.url,
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": SECRET,
            "CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX": "50",
        }
    )
    assert settings_.webhook is not None and settings_.webhook.batch_max == 50
    server = await start(build, settings_)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = connector_pb2_grpc.ConnectorServiceStub(channel)
            ids = []
            for conversation in ("conv-a", "conv-b"):
                opened = await stub.OpenCase(
                    connector_pb2.OpenCaseRequest(
                        connector="webhook",
                        idempotency_key=conversation,
                        case=connector_pb2.CaseInfo(conversation_id=conversation),
                    ),
                    timeout=10,
                )
                ids.append(opened.external_id)
            far.state.close_by_agent(ids[1], "resolved")
            before = len(far.state.deliveries())
            response = await stub.PostCustomerMessages(
                connector_pb2.PostCustomerMessagesRequest(
                    connector="webhook",
                    cases=[
                        connector_pb2.CaseMessages(
                            external_id=ids[0],
                            conversation_id="conv-a",
                            messages=[message("a1"), message("a2")],
                        ),
                        connector_pb2.CaseMessages(
                            external_id=ids[1], conversation_id="conv-b", messages=[message("b1")]
                        ),
                    ],
                ),
                timeout=10,
            )
    finally:
        await server.stop()
    first, second = response.results
    assert first.delivered == 2 and len(first.external_message_ids) == 2 and not first.error
    assert (second.delivered, second.retryable) == (0, False) and "409" in second.error
    batch = far.state.deliveries()[before:]
    assert [d["idempotencyKey"] for d in batch] == ["a1", "a2", "b1"]
    assert customer_ids(far.state, ids[0]) == ["a1", "a2"]


def test_batch_max_setting() -> None:
    base = {
        "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://ccaas.test/webhook",
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": SECRET,
    }
    default = ConnectorSettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **base}).webhook
    assert default is not None and default.batch_max == 1
    for bad in ("0", "101", "many"):
        with pytest.raises(SettingsError, match="CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX"):
            ConnectorSettings.from_env(
                {
                    "CCBRIDGE_MESH_INSECURE": "true",
                    **base,
                    "CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX": bad,
                }
            )
    top = ConnectorSettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", **base, "CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX": "100"}
    )
    assert top.webhook is not None and top.webhook.batch_max == 100


# --- answers the simulator cannot give (a scripted far side) -----------------------------

NOW = 1_750_000_000.0


async def post_to(url: str, cases: list[CaseMessages], batch_max: int = 10) -> list[Any]:
    adapter = WebhookAdapter(settings(url, batch_max), clock=lambda: NOW)
    try:
        return await adapter.post_customer_messages(cases)
    finally:
        await adapter.aclose()


async def post(script: Script, cases: list[CaseMessages], batch_max: int = 10) -> list[Any]:
    """Posts ``cases`` to a far side answering with ``script``."""
    async with far_side(script) as far:
        return await post_to(f"{far.url}/webhook", cases, batch_max)


def all_ok(seen: Seen) -> Reply:
    """A batch answer accepting every event of the request."""
    doc = seen.json()
    return Reply.json({"results": [{"status": 200} for _ in doc]})


TWO_CASES = [case("A", "conv-a", "a1", "a2", "a3"), case("B", "conv-b", "b1", "b2")]


async def test_per_event_results_leading_successes_and_retry_after() -> None:
    def handler(request: Seen) -> Reply:
        return Reply.json(
            {
                "results": [
                    {"status": 201, "messageId": "m-a1"},
                    {"status": 429, "error": "slow down", "retryAfter": 99999},
                    {"status": 200, "messageId": "m-a3"},  # after a failure: does not count
                    {"status": 200},
                    {"status": 503, "retryAfter": "2.5"},
                ]
            }
        )

    first, second = await post(handler, TWO_CASES)
    assert (first.delivered, first.message_ids) == (1, ["m-a1"])
    assert first.error is not None and first.error.retryable
    assert (first.error.status, first.error.retry_after) == (429, MAX_RETRY_AFTER_S)
    assert "slow down" not in str(first.error)  # far-side text is not passed on
    assert (second.delivered, second.message_ids) == (1, [""])
    assert second.error is not None and (second.error.retryable, second.error.retry_after) == (
        True,
        2.5,
    )


async def test_a_non_retryable_event_result() -> None:
    def handler(request: Seen) -> Reply:
        return Reply.json(
            {
                "results": [
                    {"status": 200},
                    {"status": 422, "retryAfter": 5},
                    {"status": 409},
                    {"status": 200},
                    {"status": 200},
                ]
            }
        )

    first, second = await post(handler, TWO_CASES)
    assert first.delivered == 1 and first.error is not None
    assert (first.error.retryable, first.error.retry_after, first.error.status) == (
        False,
        None,
        422,
    )
    assert (second.delivered, second.error) == (2, None)


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"not json",
        b'{"results": "nope"}',
        b'{"results": [{"status": 200}]}',  # wrong length
        b'{"results": [{"status": 200}, {"status": 200}, {"status": 200}, {"status": 200}, 7]}',
        b'{"results": [{"status": 200}, {"status": true}, {}, {}, {}]}',
        b'{"ok": true}',
        b"[]",
    ],
)
async def test_unusable_results_count_as_all_accepted(answer: bytes) -> None:
    first, second = await post(lambda _: Reply(200, answer), TWO_CASES)
    assert (first.delivered, first.message_ids, first.error) == (3, ["", "", ""], None)
    assert (second.delivered, second.message_ids, second.error) == (2, ["", ""], None)


async def test_transport_failures_and_oversized_answers() -> None:
    slow = await post(lambda seen: replace(all_ok(seen), delay_s=10.0), TWO_CASES)
    refused = await post_to(f"http://127.0.0.1:{closed_port()}/webhook", TWO_CASES)
    for results in (slow, refused):
        for result in results:
            assert result.delivered == 0 and result.error is not None and result.error.retryable

    huge = b'{"results": "' + b"x" * MAX_RESPONSE_BYTES + b'"}'
    for result in await post(lambda _: Reply(200, huge), TWO_CASES):
        assert result.delivered == 0 and result.error is not None
        assert result.error.retryable is False and "larger" in str(result.error)

    answer = Reply(429, b"", {"Retry-After": "7"})
    for result in await post(lambda _: answer, TWO_CASES):
        assert result.error is not None and (result.error.retryable, result.error.retry_after) == (
            True,
            7.0,
        )


async def test_bad_content_stops_the_case_after_the_good_messages() -> None:
    sent: list[Any] = []

    def handler(request: Seen) -> Reply:
        sent.append(request.json())
        return all_ok(request)

    cases = [
        CaseMessages(
            "A", "conv-a", [message("a1"), message("a2", content_json="{bad"), message("a3")]
        ),
        CaseMessages("B", "conv-b", [message("b1", content_json="[1]")]),
        case("C", "conv-c", "c1"),
    ]
    first, second, third = await post(handler, cases)
    assert first.delivered == 1 and first.error is not None and first.error.retryable is False
    assert "content_json" in str(first.error)
    assert second.delivered == 0 and second.error is not None and not second.error.retryable
    assert (third.delivered, third.error) == (1, None)
    assert [[e["idempotencyKey"] for e in doc] for doc in sent] == [["a1", "c1"]]


async def test_a_failed_chunk_stops_the_long_case() -> None:
    sent: list[list[str]] = []

    def handler(request: Seen) -> Reply:
        keys = [e["idempotencyKey"] for e in request.json()]
        sent.append(keys)
        return Reply.json({"results": [{"status": 500 if k == "a5" else 200} for k in keys]})

    (result,) = await post(handler, [case("A", "conv-a", *[f"a{i}" for i in range(1, 9)])], 3)
    assert sent == [["a1", "a2", "a3"], ["a4", "a5", "a6"]]
    assert result.delivered == 4 and result.error is not None and result.error.retryable
    assert len(result.message_ids) == 4


def stdlib_json(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


async def test_the_array_is_compact_utf8_json() -> None:
    contents = [
        '{"text":"plain"}',
        '{"text":"žuta ruža 😀 \\u2028 \\u0001 \\"q\\" /","n":[1,-2,true,null,1.5]}',
    ]
    bodies: list[bytes] = []

    def handler(request: Seen) -> Reply:
        bodies.append(request.body)
        return all_ok(request)

    cases = [
        CaseMessages(f"C{i}", f"conv-{i}", [message(f"m{i}", content_json=content)])
        for i, content in enumerate(contents)
    ]
    results = await post(handler, cases)
    assert [(r.delivered, r.error) for r in results] == [(1, None)] * len(contents)
    (body,) = bodies
    events = json.loads(body)
    # Byte for byte what json.dumps(ensure_ascii=False, compact) makes of the same events.
    assert body == stdlib_json(events)
    assert [e["message"]["content"] for e in events] == [json.loads(c) for c in contents]


@pytest.mark.parametrize("batch_max", [1, 10])
@pytest.mark.parametrize(
    "content",
    [
        '{"n":NaN}',
        '{"m":-Infinity}',
        '{"t":"\\ud800"}',  # a lone surrogate, escaped
        '\ufeff{"t":"x"}',  # a byte-order mark
        '{"t":"x"',
    ],
)
async def test_content_orjson_refuses_fails_that_message_alone(
    content: str, batch_max: int
) -> None:
    sent: list[str] = []

    def handler(request: Seen) -> Reply:
        doc = request.json()
        events = doc if isinstance(doc, list) else [doc]
        sent.extend(e["idempotencyKey"] for e in events)
        if isinstance(doc, list):
            return all_ok(request)
        return Reply.json({"messageId": "M-1"})

    cases = [
        CaseMessages("A", "conv-a", [message("a1", content_json=content), message("a2")]),
        case("B", "conv-b", "b1"),
    ]
    first, second = await post(handler, cases, batch_max)
    assert first.delivered == 0 and first.error is not None and not first.error.retryable
    assert "content_json is not JSON" in str(first.error)
    assert (second.delivered, second.error) == (1, None)
    assert sent == ["b1"]


async def test_integers_beyond_64_bits_are_read_as_floats() -> None:
    bodies: list[bytes] = []

    def handler(request: Seen) -> Reply:
        bodies.append(request.body)
        return all_ok(request)

    content = '{"big":12345678901234567890123,"edge":18446744073709551615}'
    (result,) = await post(
        handler, [CaseMessages("A", "conv-a", [message("a1", content_json=content)])]
    )
    assert (result.delivered, result.error) == (1, None)
    (event,) = orjson.loads(bodies[0])
    assert event["message"]["content"] == {
        "big": 1.2345678901234568e22,
        "edge": 18446744073709551615,
    }


async def test_a_status_beyond_64_bits_is_no_status() -> None:
    # orjson reads it as a float: not a status, so the answer has no usable results and,
    # as any 2xx without them, counts as every event accepted.
    answer = (
        b'{"results":[{"status":200},{"status":18446744073709551616},{"status":200},'
        b'{"status":200},{"status":200}]}'
    )
    first, second = await post(lambda _: Reply(200, answer), TWO_CASES)
    assert (first.delivered, first.error) == (3, None)
    assert (second.delivered, second.error) == (2, None)
