"""Poll-mode adapters: events go to Session before the cursor is committed; failures
commit nothing; one replica at a time holds the poll lease (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from ccbridge.services.connector.base import (
    Adapter,
    AgentMessage,
    CaseClosedEvent,
    CaseEvent,
    CaseToOpen,
    OpenedCase,
)
from ccbridge.services.connector.poller import Poller
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.mesh_tls import INSECURE
from tests.services.connector.session_double import SessionDouble, running_session_double


class PollingCcaas(Adapter):
    """A double of a CCaaS without webhooks, seen through the adapter contract: it has
    a queue of new events and a cursor that only ``commit_poll`` advances."""

    name = "polling"
    mode = "poll"

    def __init__(self, events: list[CaseEvent]) -> None:
        self.events = events
        self.cursor = 0
        self.fail_next_poll = False

    async def poll(self) -> list[CaseEvent]:
        if self.fail_next_poll:
            self.fail_next_poll = False
            raise FarSideError("ccaas down", retryable=True)
        return self.events[self.cursor : self.cursor + 2]

    async def commit_poll(self, events: Sequence[CaseEvent]) -> None:
        self.cursor += len(events)

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        raise NotImplementedError

    async def post_customer_message(self, *args: Any) -> str:
        raise NotImplementedError

    async def close_case(self, *args: Any) -> bool:
        raise NotImplementedError

    async def report_message_failed(self, *args: Any) -> None:
        raise NotImplementedError


EVENTS: list[CaseEvent] = [
    AgentMessage(
        external_id="T-1", event_id="tx-1", message_id="tx-1", text="hello", agent_name="Rita"
    ),
    AgentMessage(external_id="T-1", event_id="tx-2", message_id="tx-2", text="any news?"),
    CaseClosedEvent(external_id="T-1", event_id="tx-3", reason="resolved"),
]


@pytest.fixture
async def session() -> AsyncIterator[tuple[SessionDouble, SessionReporter]]:
    # A test double of the session peer (see session_double.py for why).
    async with running_session_double() as (double, port):
        channel = create_channel(f"127.0.0.1:{port}", INSECURE, "session")
        try:
            yield double, SessionReporter(channel, timeout_s=2.0)
        finally:
            await channel.close()


async def test_events_reported_then_committed(
    session: tuple[SessionDouble, SessionReporter],
    redis_client: aioredis.Redis,
) -> None:
    double, reporter = session
    adapter = PollingCcaas(list(EVENTS))
    lease = ConnectorStore(redis_client).poll_lease("polling", 30)
    poller = Poller("polling", adapter, reporter, lease, interval_s=0.01)
    assert await poller.poll_once() == 2
    assert adapter.cursor == 2
    assert await poller.poll_once() == 1
    assert await poller.poll_once() == 0
    assert adapter.cursor == 3
    reported = [e for r in double.requests for e in r.events]
    assert [(e.event_id, e.WhichOneof("kind")) for e in reported] == [
        ("tx-1", "agent_message"),
        ("tx-2", "agent_message"),
        ("tx-3", "case_closed"),
    ]
    assert reported[0].connector == "polling"
    assert reported[0].agent_message.author_name == "Rita"


async def test_failures_commit_nothing(
    session: tuple[SessionDouble, SessionReporter],
    redis_client: aioredis.Redis,
) -> None:
    double, reporter = session
    adapter = PollingCcaas(list(EVENTS))
    poller = Poller("polling", adapter, reporter, None, interval_s=0.01)
    double.fail_with = grpc.StatusCode.INTERNAL
    with pytest.raises(Exception, match="session unavailable"):
        await poller.poll_once()
    assert adapter.cursor == 0
    double.fail_with = None
    adapter.fail_next_poll = True
    with pytest.raises(FarSideError):
        await poller.poll_once()
    assert adapter.cursor == 0
    assert await poller.poll_once() == 2


async def test_background_poller_recovers_and_stops(
    session: tuple[SessionDouble, SessionReporter],
    redis_client: aioredis.Redis,
) -> None:
    double, reporter = session
    adapter = PollingCcaas(list(EVENTS))
    adapter.fail_next_poll = True
    lease = ConnectorStore(redis_client).poll_lease("polling", 30)
    poller = Poller("polling", adapter, reporter, lease, interval_s=0.01)
    poller.start()
    try:
        for _ in range(500):
            if adapter.cursor == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await poller.stop()
    assert adapter.cursor == 3
    assert sorted(double.seen) == ["tx-1", "tx-2", "tx-3"]
    assert await redis_client.get(lease.key) is None  # released on stop


async def test_one_replica_polls_at_a_time(
    session: tuple[SessionDouble, SessionReporter],
    redis_client: aioredis.Redis,
) -> None:
    _, reporter = session
    first = Poller(
        "polling",
        PollingCcaas(list(EVENTS)),
        reporter,
        ConnectorStore(redis_client).poll_lease("polling", 30),
        interval_s=0.01,
    )
    second_adapter = PollingCcaas(list(EVENTS))
    second = Poller(
        "polling",
        second_adapter,
        reporter,
        ConnectorStore(redis_client).poll_lease("polling", 30),
        interval_s=0.01,
    )
    assert await first.poll_once() == 2
    assert await second.poll_once() is None
    assert second_adapter.cursor == 0
    await first.stop()  # releases the lease
    assert await second.poll_once() == 2
    await second.stop()


async def test_service_runs_pollers_for_poll_adapters(
    session: tuple[SessionDouble, SessionReporter],
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
    from ccbridge.services.connector.__main__ import build
    from ccbridge.services.connector.settings import ConnectorSettings
    from ccbridge.services.runtime.component import start

    double, _ = session
    adapter = PollingCcaas(list(EVENTS))
    settings = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "REDIS_URL": redis_url,
            "CCBRIDGE_CONNECTOR_PORT": "0",
            "CCBRIDGE_DRAIN_DELAY_S": "0",
            "SESSION_ADDR": f"127.0.0.1:{double.port}",
            "CCBRIDGE_POLL_INTERVAL_S": "0.01",
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://127.0.0.1:9/unused",
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "unused-secret-0123456789",
        }
    )
    server = await start(partial(build, adapters={"polling": adapter}), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = connector_pb2_grpc.ConnectorServiceStub(channel)
            listed = await stub.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=5)
            assert [(c.name, c.mode) for c in listed.connectors] == [("polling", "poll")]
        for _ in range(500):
            if adapter.cursor == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await server.stop()
    assert adapter.cursor == 3
    assert sorted(double.seen) == ["tx-1", "tx-2", "tx-3"]
