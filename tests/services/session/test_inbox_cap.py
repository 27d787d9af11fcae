"""A conversation's inbox is bounded (CCBRIDGE_INBOX_MAX, issue 12 B.6): a message for a
full inbox is refused with RESOURCE_EXHAUSTED + ccbridge-retry-after (the gateway answers
503 + Retry-After, so Infobip retries), and nothing of it is kept — not even its dedupe id,
so the retry is taken once the inbox drained. Real gRPC server, real Redis."""

from __future__ import annotations

import json

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.component import start
from ccbridge.services.runtime.errors import retry_after_from
from ccbridge.services.session.__main__ import build
from ccbridge.services.session.store import Lane
from ccbridge.session.v1 import session_pb2, session_pb2_grpc
from tests.services.session.conftest import session_settings


def message(mid: str, cid: str = "c-cap") -> common_pb2.Message:
    return common_pb2.Message(
        id=mid,
        conversation_id=cid,
        direction=common_pb2.DIRECTION_INBOUND,
        content_type="TEXT",
        content_json=json.dumps({"text": "hi"}),
    )


async def test_a_full_inbox_refuses_and_takes_the_retry_later(
    redis_url: str, redis_client: object
) -> None:
    running = await start(build, session_settings(redis_url, CCBRIDGE_INBOX_MAX="3"))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = session_pb2_grpc.SessionServiceStub(channel)
    store = running.parts.store
    try:
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-cap"))
        await stub.Escalate(session_pb2.EscalateRequest(conversation_id="c-free"))
        taken = await stub.Ingest(
            session_pb2.IngestRequest(messages=[message(f"m{i}") for i in range(3)])
        )
        assert [r.outcome for r in taken.results] == [session_pb2.INGEST_OUTCOME_ACCEPTED] * 3

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Ingest(
                session_pb2.IngestRequest(messages=[message("f1", "c-free"), message("m3")])
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_after_from(err.value) == 30.0
        assert await store.r.llen(store.k_in("c-cap")) == 3
        assert not await store.r.sismember(store.k_seen("c-cap"), "m3")
        assert await store.r.llen(store.k_in("c-free")) == 1  # other conversations flow

        # One delivered: the sender's retry of the same request is taken, once.
        token, _, _, _ = await store.begin_step(Lane.INBOX, "c-cap", 60_000)
        assert token
        (head,) = await store.peek(store.k_in("c-cap"), 1)
        assert await store.pop_head(Lane.INBOX, "c-cap", token, head) == 1
        retried = await stub.Ingest(
            session_pb2.IngestRequest(messages=[message("f1", "c-free"), message("m3")])
        )
        assert [r.outcome for r in retried.results] == [
            session_pb2.INGEST_OUTCOME_DUPLICATE,
            session_pb2.INGEST_OUTCOME_ACCEPTED,
        ]
        assert await store.r.llen(store.k_in("c-cap")) == 3
    finally:
        await channel.close()
        await running.stop()
