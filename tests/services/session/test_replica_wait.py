"""CCBRIDGE_REDIS_WAIT_REPLICAS: an end-user message or agent event whose write no Redis
replica confirms in time is answered UNAVAILABLE with ccbridge-retry-after (the gateway
answers 503, the sender retries); without the setting nothing waits. Real gRPC server,
real Redis without replicas (tests/faults/test_durability.py runs one with a replica)."""

from __future__ import annotations

import json

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.errors import retry_after_from
from ccbridge.services.session.__main__ import build
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.services.session.conftest import session_settings


def _message(mid: str) -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        conversation_id="c-wait",
        direction=common_pb2.DIRECTION_INBOUND,
        content_type="TEXT",
        content_json=json.dumps({"text": "hi"}),
    )


@pytest.mark.parametrize("replicas", ["0", "1"])
async def test_a_write_no_replica_confirms_is_not_acknowledged(
    redis_url: str, redis_client: object, replicas: str
) -> None:
    settings = session_settings(
        redis_url, CCBRIDGE_REDIS_WAIT_REPLICAS=replicas, CCBRIDGE_REDIS_WAIT_TIMEOUT_MS="50"
    )
    running = await start(build, settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = session_pb2_grpc.SessionServiceStub(channel)
    try:
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-wait"))
        for attempt in range(2):  # the retry finds a duplicate: still unconfirmed
            request = session_pb2.IngestRequest(messages=[_message("m1")])
            if replicas == "0":
                taken = await stub.Ingest(request)
                assert [r.outcome for r in taken.results] == [
                    session_pb2.INGEST_OUTCOME_ACCEPTED
                    if attempt == 0
                    else session_pb2.INGEST_OUTCOME_DUPLICATE
                ]
                continue
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Ingest(request)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "0 of 1 Redis replicas" in (err.value.details() or "")
            assert retry_after_from(err.value) is not None
        store = running.parts.store
        # Refused, yet kept on the master: the sender's retry is a duplicate there.
        assert await store.r.sismember(store.k_seen("c-wait"), "m1")
    finally:
        await channel.close()
        await running.stop()
