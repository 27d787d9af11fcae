"""Hands connector events to SessionService.ReportCaseEvents (the only peer call of the
connector service), converting adapter events to ``ccbridge.session.v1.CaseEvent``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.base import AgentMessage, AgentTyping, CaseEvent
from ccbridge.services.runtime.errors import InvalidArgument, Unavailable
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

REPORT_TIMEOUT_S = 5.0


def to_case_event(connector: str, event: CaseEvent) -> session_pb2.CaseEvent:
    """One adapter event as Session's CaseEvent (agent replies become OUTBOUND messages)."""
    if isinstance(event, AgentMessage):
        content = dict(event.content) if event.content else {}
        if not content and event.text:
            content = {"text": event.text}
        message = common_pb2.Message(
            id=event.message_id,
            direction=common_pb2.DIRECTION_OUTBOUND,
            author_type="AGENT",
            content_type=event.content_type or "TEXT",
            content_json=orjson.dumps(content).decode(),
            author_name=event.agent_name,
            attachments=event.attachments,
            location=event.location,
        )
        return session_pb2.CaseEvent(
            connector=connector,
            external_id=event.external_id,
            event_id=event.event_id,
            agent_message=message,
        )
    if isinstance(event, AgentTyping):
        typing = session_pb2.AgentTyping(typing=event.typing)
        if event.at is not None:
            typing.at.FromNanoseconds(int(event.at * 1e9))
        return session_pb2.CaseEvent(
            connector=connector,
            external_id=event.external_id,
            event_id=event.event_id,
            agent_typing=typing,
        )
    return session_pb2.CaseEvent(
        connector=connector,
        external_id=event.external_id,
        event_id=event.event_id,
        case_closed=session_pb2.CaseClosed(reason=event.reason),
    )


class SessionReporter:
    """Reports events to Session with a deadline; maps failures to ccbridge errors."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = REPORT_TIMEOUT_S) -> None:
        self._stub = session_pb2_grpc.SessionServiceStub(channel)
        self.timeout_s = timeout_s

    async def report(
        self, connector: str, events: Sequence[CaseEvent]
    ) -> session_pb2.ReportCaseEventsResponse:
        """Returns Session's counts once it stored the events durably.

        Raises Unavailable when Session cannot be reached or fails (the caller's caller
        retries), InvalidArgument when Session rejects the events as malformed.
        """
        request = session_pb2.ReportCaseEventsRequest(
            events=[to_case_event(connector, e) for e in events]
        )
        try:
            response: session_pb2.ReportCaseEventsResponse = await self._stub.ReportCaseEvents(
                request, timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            log.warning("ReportCaseEvents failed: %s", code.name)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"session rejected the events: {exc.details()}") from None
            raise Unavailable(f"session unavailable ({code.name})") from None
        return response
