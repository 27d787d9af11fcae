"""CloseHandover with an invalid ``event_time`` (nanos out of range, a year beyond 9999)
answers INVALID_ARGUMENT, not INTERNAL (found by tests/fuzz/test_session_grpc.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.services.session.__main__ import RunningSession
from ccbridge.session.v1 import session_pb2, session_pb2_grpc


@pytest.mark.parametrize(
    "event_time",
    [Timestamp(seconds=1, nanos=-1), Timestamp(seconds=10**12), Timestamp(nanos=10**9)],
)
async def test_invalid_event_time_is_invalid_argument(
    session_api: tuple[RunningSession, session_pb2_grpc.SessionServiceStub], event_time: Timestamp
) -> None:
    _, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="conv-time"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CloseHandover(
            session_pb2.CloseHandoverRequest(
                conversation_id="conv-time",
                initiator=session_pb2.CLOSE_INITIATOR_INFOBIP,
                event_time=event_time,
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    handover = (
        await stub.GetHandover(session_pb2.GetHandoverRequest(conversation_id="conv-time"))
    ).handover
    assert handover.state == session_pb2.HANDOVER_STATE_OPENING  # nothing changed


async def test_a_valid_event_time_still_closes(
    session_api: tuple[RunningSession, session_pb2_grpc.SessionServiceStub],
) -> None:
    _, stub = session_api
    await stub.Escalate(session_pb2.EscalateRequest(conversation_id="conv-time"))
    later = Timestamp()
    later.GetCurrentTime()
    later.seconds += 60
    response = await stub.CloseHandover(
        session_pb2.CloseHandoverRequest(
            conversation_id="conv-time",
            initiator=session_pb2.CLOSE_INITIATOR_INFOBIP,
            event_time=later,
        )
    )
    assert response.handover.state != session_pb2.HANDOVER_STATE_OPENING
