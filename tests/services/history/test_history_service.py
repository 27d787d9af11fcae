"""HistoryService through a real grpc.aio server, against the in-process Infobip simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.history.v1 import history_pb2, history_pb2_grpc
from ccbridge.services.history.__main__ import RunningHistory, build
from ccbridge.services.history.settings import HistorySettings
from ccbridge.services.runtime.component import start
from ccbridge.simulators.infobip import Failure
from tests.runtime.test_infobip_client import BAD_IDS
from tests.simulators.infobip.harness import API_KEY, Sim, served_sim


def history_settings(base_url: str, **overrides: str) -> HistorySettings:
    env: Mapping[str, str] = {
        "INFOBIP_BASE_URL": base_url,
        "INFOBIP_API_KEY": API_KEY,
        "CCBRIDGE_HISTORY_PORT": "0",
        "CCBRIDGE_DRAIN_DELAY_S": "0",
        "INFOBIP_MAX_RETRIES": "0",
        "CCBRIDGE_SHUTDOWN_GRACE_S": "0.5",
        **overrides,
    }
    return HistorySettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **env})


@dataclass
class History:
    sim: Sim
    running: RunningHistory
    stub: history_pb2_grpc.HistoryServiceStub
    channel: grpc.aio.Channel


@pytest.fixture
async def history() -> AsyncIterator[History]:
    async with served_sim() as sim:
        assert sim.url is not None
        running = await start(build, history_settings(sim.url))
        channel = grpc.aio.insecure_channel(running.address)
        try:
            yield History(sim, running, history_pb2_grpc.HistoryServiceStub(channel), channel)
        finally:
            await channel.close()
            await running.stop()


async def transcript(h: History, cid: str, limit: int = 0) -> history_pb2.Transcript:
    response: history_pb2.GetTranscriptResponse = await h.stub.GetTranscript(
        history_pb2.GetTranscriptRequest(conversation_id=cid, limit=limit), timeout=30
    )
    return response.transcript


async def test_cap_keeps_the_most_recent_messages_oldest_first(history: History) -> None:
    conversation = history.sim.state.create_conversation(
        history=1500, channel="WHATSAPP", end_user="385981112222", business_sender="447492263897"
    )
    stored = sorted(conversation.messages, key=lambda m: (m["createdAt"], m["id"]))

    result = await transcript(history, conversation.id)

    ids = [m.id for m in result.messages]
    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    assert ids == [m["id"] for m in stored[-1000:]]
    stamps = [m.created_at.ToNanoseconds() for m in result.messages]
    assert stamps == sorted(stamps)
    assert result.total_messages == 1500
    assert result.truncated
    assert result.pages_fetched == 2
    assert (result.channel, result.end_user, result.business_sender) == (
        "WHATSAPP",
        "385981112222",
        "447492263897",
    )


async def test_small_conversation_with_tags_and_metadata(history: History) -> None:
    conversation = history.sim.state.create_conversation(
        history=7, channel="LIVE_CHAT", tags=["vip", "billing"], metadata={"language": "hr"}
    )
    result = await transcript(history, conversation.id)
    assert len(result.messages) == 7 and not result.truncated
    assert result.pages_fetched == 1 and result.total_messages == 7
    assert sorted(result.tags) == ["billing", "vip"]
    assert dict(result.metadata) == {"language": "hr"}
    first = result.messages[0]
    original = conversation.messages[0]
    assert first.id == original["id"]
    assert first.direction == common_pb2.DIRECTION_INBOUND
    assert first.author_type == "CUSTOMER"
    assert first.content_type == "TEXT"
    assert json.loads(first.content_json) == original["content"]
    assert getattr(first, "from") == conversation.end_user
    assert first.conversation_id == conversation.id
    assert result.end_user == conversation.end_user


async def test_request_limit_overrides_the_cap(history: History) -> None:
    conversation = history.sim.state.create_conversation(history=30)
    result = await transcript(history, conversation.id, limit=10)
    assert [m.id for m in result.messages] == [m["id"] for m in conversation.messages[-10:]]
    assert result.truncated and result.pages_fetched == 1


async def test_unknown_conversation_is_not_found(history: History) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await transcript(history, "no-such-conversation")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_conversation_id_is_invalid(history: History) -> None:
    for bad in BAD_IDS:
        if bad != bad.strip():
            continue  # History strips surrounding whitespace first
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transcript(history, bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_infobip_outage_is_unavailable(history: History) -> None:
    conversation = history.sim.state.create_conversation(history=3)
    history.sim.state.inject_failure(
        Failure(remaining=1, status=429, retry_after=3, path_prefix="/ccaas/1/conversations/")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await transcript(history, conversation.id)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("ccbridge-retry-after", "3.0") in tuple(caught.value.trailing_metadata() or ())


async def test_tag_and_metadata_failures_do_not_fail_the_transcript(history: History) -> None:
    conversation = history.sim.state.create_conversation(
        history=4, tags=["vip"], metadata={"a": "b"}
    )
    history.sim.state.inject_failure(Failure(remaining=5, status=500, path_prefix="/ccaas/1/tags"))
    history.sim.state.inject_failure(
        Failure(
            remaining=5,
            status=500,
            path_prefix=f"/ccaas/1/conversations/{conversation.id}/metadata",
        )
    )
    result = await transcript(history, conversation.id)
    assert len(result.messages) == 4
    assert list(result.tags) == [] and dict(result.metadata) == {}


async def test_annotate_adds_tags_and_merges_metadata(history: History) -> None:
    conversation = history.sim.state.create_conversation(history=2, metadata={"x": "1"})
    history.sim.state.create_tag({"name": "existing"})
    response = await history.stub.AnnotateConversation(
        history_pb2.AnnotateConversationRequest(
            conversation_id=conversation.id,
            tags=["escalated", "existing", "escalated"],
            metadata={"ccbridge.connector": "webhook"},
        ),
        timeout=10,
    )
    assert list(response.tags_added) == ["escalated", "existing"]
    assert response.metadata_merged
    snapshot = history.sim.state.snapshot(conversation.id)
    assert snapshot["tags"] == ["escalated", "existing"]
    assert snapshot["metadata"] == {"x": "1", "ccbridge.connector": "webhook"}
    # Idempotent.
    again = await history.stub.AnnotateConversation(
        history_pb2.AnnotateConversationRequest(
            conversation_id=conversation.id, tags=["escalated"]
        ),
        timeout=10,
    )
    assert list(again.tags_added) == ["escalated"] and not again.metadata_merged
    assert history.sim.state.snapshot(conversation.id)["tags"] == ["escalated", "existing"]


async def test_annotate_rejects_bad_tag_names(history: History) -> None:
    conversation = history.sim.state.create_conversation(history=1)
    for bad in ("has space", "", "x" * 101, "ümlaut"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await history.stub.AnnotateConversation(
                history_pb2.AnnotateConversationRequest(
                    conversation_id=conversation.id, tags=[bad]
                ),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert history.sim.state.tags == {}


async def test_annotate_closed_conversation_fails_precondition(history: History) -> None:
    conversation = history.sim.state.create_conversation(history=1, status="CLOSED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await history.stub.AnnotateConversation(
            history_pb2.AnnotateConversationRequest(conversation_id=conversation.id, tags=["late"]),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Closed conversation" in (caught.value.details() or "")


async def test_annotate_unknown_conversation_is_not_found(history: History) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await history.stub.AnnotateConversation(
            history_pb2.AnnotateConversationRequest(conversation_id="nope", metadata={"a": "b"}),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_is_serving_without_redis(history: History) -> None:
    health = health_pb2_grpc.HealthStub(history.channel)
    for service in ("", "ccbridge.history.v1.HistoryService", "liveness"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
