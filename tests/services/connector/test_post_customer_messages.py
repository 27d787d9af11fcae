"""PostCustomerMessages: the servicer's validation and result mapping over real gRPC (a
scripted adapter stands in for the CCaaS), and the Adapter's default per-case delivery
(in order, stop at the first failure, cases independent, bounded concurrency)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.__main__ import build
from ccbridge.services.connector.base import (
    CASE_CONCURRENCY,
    Adapter,
    CaseDelivery,
    CaseMessages,
    CaseToOpen,
    OpenedCase,
)
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unavailable
from ccbridge.services.runtime.logging import conversation_id_var


def message(mid: str, content_json: str = '{"text":"hi"}') -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        direction=common_pb2.DIRECTION_INBOUND,
        content_type="TEXT",
        content_json=content_json,
    )


@dataclass
class ScriptedCcaas(Adapter):
    """Posts succeed unless the message id is in ``fail``: a FarSideError, an
    InvalidArgument or any other exception is raised for it. Records every post."""

    fail: dict[str, Exception] = field(default_factory=dict)
    delay_s: float = 0.0
    posted: list[tuple[str, str, str]] = field(default_factory=list)
    running: int = 0
    most_running: int = 0

    name = "scripted"

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        raise NotImplementedError

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        raise NotImplementedError

    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        raise NotImplementedError

    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        if message.id in self.fail:
            raise self.fail[message.id]
        self.posted.append((external_id, message.id, idempotency_key))
        return f"x-{message.id}"


@dataclass
class CannedCcaas(ScriptedCcaas):
    """Answers post_customer_messages with canned deliveries and records the calls."""

    answer: list[CaseDelivery] = field(default_factory=list)
    calls: list[list[CaseMessages]] = field(default_factory=list)
    log_conversations: list[str] = field(default_factory=list)

    async def post_customer_messages(self, cases: Sequence[CaseMessages]) -> list[CaseDelivery]:
        self.calls.append(list(cases))
        self.log_conversations.append(conversation_id_var.get())
        return self.answer


# --- the default Adapter.post_customer_messages ----------------------------------------


async def test_default_posts_each_case_in_order_and_stops_at_its_first_failure() -> None:
    busy = FarSideError("busy", retryable=True, retry_after=4.0, status=503)
    adapter = ScriptedCcaas(
        fail={
            "b2": busy,
            "c1": InvalidArgument("message 'c1': content_json is not JSON"),
        },
        delay_s=0.001,
    )
    cases = [
        CaseMessages("A", "conv-a", [message("a1"), message("a2"), message("a3")]),
        CaseMessages("B", "conv-b", [message("b1"), message("b2"), message("b3")]),
        CaseMessages("C", "conv-c", [message("c1"), message("c2")]),
    ]
    results = await adapter.post_customer_messages(cases)

    assert [(r.delivered, r.message_ids) for r in results] == [
        (3, ["x-a1", "x-a2", "x-a3"]),
        (1, ["x-b1"]),
        (0, []),
    ]
    assert results[0].error is None
    assert results[1].error is busy
    invalid = results[2].error
    assert invalid is not None and invalid.retryable is False and "content_json" in str(invalid)
    # Per case: in order, idempotency key = message id, nothing after the failure.
    for case_id, expected in (("A", ["a1", "a2", "a3"]), ("B", ["b1"]), ("C", [])):
        mine = [(mid, key) for ext, mid, key in adapter.posted if ext == case_id]
        assert mine == [(mid, mid) for mid in expected]


async def test_default_runs_at_most_sixteen_cases_at_once() -> None:
    adapter = ScriptedCcaas(delay_s=0.01)
    cases = [CaseMessages(f"C{i}", f"conv-{i}", [message(f"m{i}")]) for i in range(40)]
    results = await adapter.post_customer_messages(cases)
    assert [r.delivered for r in results] == [1] * 40
    assert [r.message_ids for r in results] == [[f"x-m{i}"] for i in range(40)]
    assert adapter.most_running == CASE_CONCURRENCY  # concurrent, and bounded


async def test_default_starts_no_post_after_the_call_ran_out_of_time() -> None:
    """Past START_POSTS_UNTIL a case stops after the message under way, with no error:
    the rest was not attempted (Session sends it again), so nothing is dead-lettered."""
    import time

    from ccbridge.services.connector.base import START_POSTS_UNTIL

    adapter = ScriptedCcaas(delay_s=0.05)
    token = START_POSTS_UNTIL.set(time.monotonic() + 0.02)
    try:
        results = await adapter.post_customer_messages(
            [CaseMessages("A", "conv-a", [message("a1"), message("a2"), message("a3")])]
        )
    finally:
        START_POSTS_UNTIL.reset(token)
    assert [(r.delivered, r.error) for r in results] == [(1, None)]
    assert [mid for _ext, mid, _key in adapter.posted] == ["a1"]


async def test_default_propagates_other_errors() -> None:
    adapter = ScriptedCcaas(fail={"a1": Unavailable("redis is down")})
    with pytest.raises(Unavailable):
        await adapter.post_customer_messages(
            [CaseMessages("A", "conv-a", [message("a1")]), CaseMessages("B", "c", [message("b")])]
        )


# --- the servicer over gRPC -------------------------------------------------------------


@dataclass
class Served:
    canned: CannedCcaas  # connector "canned"
    plain: ScriptedCcaas  # connector "plain": the default post_customer_messages
    stub: Any


@pytest.fixture
async def served(redis_url: str) -> AsyncIterator[Served]:
    canned = CannedCcaas()
    plain = ScriptedCcaas(fail={"b2": FarSideError("gone", retryable=False, status=404)})
    settings = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "REDIS_URL": redis_url,
            "CCBRIDGE_CONNECTOR_PORT": "0",
            "CCBRIDGE_DRAIN_DELAY_S": "0",
            "SESSION_ADDR": "127.0.0.1:9",  # never called by these RPCs
            "CCBRIDGE_CONNECTORS": "webhook",
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://127.0.0.1:9/webhook",
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "s3cret-0123456789abcdef",
        }
    )
    server = await start(partial(build, adapters={"canned": canned, "plain": plain}), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Served(canned, plain, connector_pb2_grpc.ConnectorServiceStub(channel))
    finally:
        await server.stop()


def case_messages(external_id: str, *ids: str) -> connector_pb2.CaseMessages:
    return connector_pb2.CaseMessages(
        external_id=external_id,
        conversation_id=f"conv-{external_id}",
        messages=[message(mid) for mid in ids],
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (connector_pb2.PostCustomerMessagesRequest(connector="nope"), "unknown connector"),
        (connector_pb2.PostCustomerMessagesRequest(), "connector is required"),
        (
            connector_pb2.PostCustomerMessagesRequest(
                connector="canned",
                cases=[case_messages("A", "a1"), case_messages("", "b1")],
            ),
            "cases[1].external_id is required",
        ),
        (
            connector_pb2.PostCustomerMessagesRequest(
                connector="canned", cases=[case_messages("A")]
            ),
            "cases[0] has no message",
        ),
        (
            connector_pb2.PostCustomerMessagesRequest(
                connector="canned", cases=[case_messages("A", "a1", "")]
            ),
            "cases[0].messages[1].id is required",
        ),
    ],
)
async def test_invalid_requests(
    served: Served, request_: connector_pb2.PostCustomerMessagesRequest, expected: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.stub.PostCustomerMessages(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (info.value.details() or "")
    assert served.canned.calls == []


async def test_results_are_mapped_per_case(served: Served) -> None:
    served.canned.answer = [
        CaseDelivery(2, ["x-a1", ""]),
        CaseDelivery(
            1,
            ["x-b1"],
            FarSideError("CCaaS answered 503", retryable=True, retry_after=2.5, status=503),
        ),
        CaseDelivery(0, [], FarSideError("CCaaS answered 409", retryable=False, status=409)),
    ]
    response = await served.stub.PostCustomerMessages(
        connector_pb2.PostCustomerMessagesRequest(
            connector="canned",
            cases=[
                case_messages("A", "a1", "a2"),
                case_messages("B", "b1", "b2", "b3"),
                case_messages("C", "c1"),
            ],
        ),
        timeout=10,
    )
    got = [
        (r.delivered, list(r.external_message_ids), r.error, r.retryable, r.retry_after_s)
        for r in response.results
    ]
    assert got == [
        (2, ["x-a1", ""], "", False, 0.0),
        (1, ["x-b1"], "CCaaS answered 503", True, 2.5),
        (0, [], "CCaaS answered 409", False, 0.0),
    ]
    (call,) = served.canned.calls
    assert [(c.external_id, c.conversation_id, [m.id for m in c.messages]) for c in call] == [
        ("A", "conv-A", ["a1", "a2"]),
        ("B", "conv-B", ["b1", "b2", "b3"]),
        ("C", "conv-C", ["c1"]),
    ]
    # Several conversations: none of them is the call's log context.
    assert served.canned.log_conversations == [""]


async def test_one_case_sets_the_log_context(served: Served) -> None:
    served.canned.answer = [CaseDelivery(1, ["x"])]
    await served.stub.PostCustomerMessages(
        connector_pb2.PostCustomerMessagesRequest(
            connector="canned", cases=[case_messages("A", "a1")]
        ),
        timeout=10,
    )
    assert served.canned.log_conversations == ["conv-A"]


async def test_misaligned_adapter_answer_is_an_internal_error(served: Served) -> None:
    served.canned.answer = [CaseDelivery(1, ["x"])]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.stub.PostCustomerMessages(
            connector_pb2.PostCustomerMessagesRequest(
                connector="canned", cases=[case_messages("A", "a1"), case_messages("B", "b1")]
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_default_path_through_the_servicer(served: Served) -> None:
    response = await served.stub.PostCustomerMessages(
        connector_pb2.PostCustomerMessagesRequest(
            connector="plain",
            cases=[case_messages("A", "a1", "a2"), case_messages("B", "b1", "b2", "b3")],
        ),
        timeout=10,
    )
    got = [
        (r.delivered, list(r.external_message_ids), r.error, r.retryable) for r in response.results
    ]
    assert got == [(2, ["x-a1", "x-a2"], "", False), (1, ["x-b1"], "gone", False)]
    assert [mid for ext, mid, _ in served.plain.posted if ext == "B"] == ["b1"]
