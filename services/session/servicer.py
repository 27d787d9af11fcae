"""SessionService gRPC servicer: validates requests, stores through SessionStore, and
wakes the local worker so delivery starts without waiting for the next poll."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.batch_stream import StreamServer
from ccbridge.services.runtime.errors import ResourceExhausted
from ccbridge.services.runtime.handover_limits import MAX_METADATA_KEYS, MAX_TAG_CHARS, MAX_TAGS
from ccbridge.services.runtime.ids import (
    CONVERSATION_ID_RULE,
    MESSAGE_ID_RULE,
    is_conversation_id,
    is_message_id,
)
from ccbridge.services.runtime.logging import rpc_var
from ccbridge.services.runtime.server import status_for
from ccbridge.services.runtime.tracing import bind_conversation, traceparent
from ccbridge.services.session.errors import (
    HandoverNotFound,
    HandoverStateConflict,
    InvalidHandoverRequest,
)
from ccbridge.services.session.store import (
    INGEST_ACCEPTED,
    INGEST_DUPLICATE,
    INGEST_FULL,
    LANES,
    PARK_MAX,
    REPLAYABLE_STATES,
    HandoverRecord,
    Lane,
    SessionStore,
    agent_message_key,
    case_closed_key,
)
from ccbridge.services.session.timeline import TIMELINE_MAX, EventKind
from ccbridge.services.session.typing_relay import TypingRelay
from ccbridge.services.session.worker import ConversationWorker
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

ESCALATE_POLL_S = 0.02  # how often Escalate looks whether the opening was decided

_STATE_NAMES = {
    session_pb2.HANDOVER_STATE_OPENING: "OPENING",
    session_pb2.HANDOVER_STATE_ACTIVE: "ACTIVE",
    session_pb2.HANDOVER_STATE_CLOSING: "CLOSING",
    session_pb2.HANDOVER_STATE_CLOSED: "CLOSED",
    session_pb2.HANDOVER_STATE_FAILED: "FAILED",
    session_pb2.HANDOVER_STATE_REJECTED: "REJECTED",
}
_STATE_VALUES = {v: k for k, v in _STATE_NAMES.items()}
_INITIATORS = {
    "CCAAS": session_pb2.CLOSE_INITIATOR_CCAAS,
    "INFOBIP": session_pb2.CLOSE_INITIATOR_INFOBIP,
    "OPERATOR": session_pb2.CLOSE_INITIATOR_OPERATOR,
}
# A full inbox drains at the CCaaS's pace: ask the sender to come back in a while.
INBOX_FULL_RETRY_AFTER_S = 30.0
# Events parked for a case not linked yet wait for its opening's retry: come back soon.
PARK_FULL_RETRY_AFTER_S = 5.0
_OUTCOMES = {
    0: session_pb2.INGEST_OUTCOME_IGNORED,
    1: session_pb2.INGEST_OUTCOME_ACCEPTED,
    2: session_pb2.INGEST_OUTCOME_DUPLICATE,
}


def _batch_failure(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """A failed IngestStream batch as (status, message), by the one error policy of every
    RPC (services/runtime/server.py): a Redis outage is UNAVAILABLE, a bug INTERNAL."""
    status = status_for(exc)
    return status.code, status.message


_TIMELINE_KINDS = {
    kind: session_pb2.TimelineEventKind.Value(f"TIMELINE_EVENT_KIND_{kind.name}")
    for kind in EventKind
}


def _check_cid(cid: str) -> str:
    if not is_conversation_id(cid):
        raise InvalidHandoverRequest(f"conversation_id must be {CONVERSATION_ID_RULE}")
    return cid


def _ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _page_offset(token: str) -> int:
    if not token:
        return 0
    try:
        value = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("o:"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidHandoverRequest("page_token is invalid") from None
    if value < 0:
        raise InvalidHandoverRequest("page_token is invalid")
    return value


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _page_size(size: int) -> int:
    if size < 0 or size > 1000:
        raise InvalidHandoverRequest("page_size must be 0..1000")
    return size or 100


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    """Implements ccbridge.session.v1.SessionService."""

    def __init__(
        self,
        store: SessionStore,
        worker: ConversationWorker | None,
        *,
        escalate_wait_ms: int = 0,
        typing: TypingRelay | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.escalate_wait_ms = escalate_wait_ms
        self.typing = typing  # None: agent typing indicators are dropped
        self.streams = StreamServer()  # IngestStream's batches, and its shutdown

    def _wake(self, cids: Iterable[str], lanes: Iterable[Lane] = LANES) -> None:
        if self.worker is not None:
            self.worker.wake(cids, lanes)

    async def to_proto(self, rec: HandoverRecord) -> session_pb2.Handover:
        raw_routing = rec.get("routing")
        inbox, outbox = await self.store.queue_lengths(rec.conversation_id)
        # No routing decision yet (OPENING, or FAILED before routing): the field stays
        # unset, which the HTTP view shows as null.
        routing = None
        if raw_routing:
            decided = orjson.loads(raw_routing)
            routing = common_pb2.RoutingDecision(
                connector=decided.get("connector") or rec.get("connector"),
                queue=decided.get("queue", ""),
                priority=int(decided.get("priority", 0)),
                skills=decided.get("skills", []),
                rule=decided.get("rule", ""),
            )
        return session_pb2.Handover(
            conversation_id=rec.conversation_id,
            state=_STATE_VALUES.get(rec.state, session_pb2.HANDOVER_STATE_UNSPECIFIED),
            connector=rec.get("connector"),
            external_id=rec.get("external_id"),
            routing=routing,
            channel=rec.get("channel"),
            end_user=rec.get("end_user"),
            business_sender=rec.get("business_sender"),
            tags=rec.tags,
            metadata=rec.metadata,
            created_at=_ts(rec.get_int("created_at")),
            updated_at=_ts(rec.get_int("updated_at")),
            version=rec.get_int("version"),
            failure_reason=rec.get("failure_reason"),
            inbox_pending=inbox,
            outbox_pending=outbox,
            dead_letters=rec.get_int("dead_letters"),
            closed_by=_INITIATORS.get(
                rec.get("closed_by"), session_pb2.CLOSE_INITIATOR_UNSPECIFIED
            ),
        )

    async def _load(self, cid: str) -> HandoverRecord:
        rec = await self.store.get(cid)
        if rec is None:
            raise HandoverNotFound(f"no handover for conversation {cid}")
        return rec

    # -- RPCs ------------------------------------------------------------------------------
    async def Escalate(
        self,
        request: session_pb2.EscalateRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.EscalateRequest, session_pb2.EscalateResponse
        ],
    ) -> session_pb2.EscalateResponse:
        cid = _check_cid(request.conversation_id)
        if len(request.tags) > MAX_TAGS or any(
            not t or len(t) > MAX_TAG_CHARS for t in request.tags
        ):
            raise InvalidHandoverRequest(
                f"tags: at most {MAX_TAGS}, each 1-{MAX_TAG_CHARS} characters"
            )
        if len(request.metadata) > MAX_METADATA_KEYS:
            raise InvalidHandoverRequest(f"metadata: at most {MAX_METADATA_KEYS} keys")
        created = await self.store.create(cid, list(request.tags), dict(request.metadata))
        if not created and await self.store.reopen_rejected(cid):
            # Rejected before (e.g. outside opening hours): this escalation is a new try.
            created = True
            log.info("rejected handover escalated again")
        if created:
            log.info("handover created")
            self._wake([cid], [Lane.INBOX])
        rec = await self._load(cid)
        if created and self.escalate_wait_ms:
            rec = await self._opening_decided(rec)
        return session_pb2.EscalateResponse(handover=await self.to_proto(rec), created=created)

    async def _opening_decided(self, rec: HandoverRecord) -> HandoverRecord:
        """The handover once its opening is decided (ACTIVE, REJECTED, FAILED...), or as
        it is when ``escalate_wait_ms`` ends first: a bot can then tell the end user at
        once that nobody is there (REJECTED, outside_hours)."""
        deadline = time.monotonic() + self.escalate_wait_ms / 1000
        while rec.state == "OPENING" and time.monotonic() < deadline:
            await asyncio.sleep(ESCALATE_POLL_S)
            rec = await self._load(rec.conversation_id)
        return rec

    async def Ingest(
        self,
        request: session_pb2.IngestRequest,
        context: grpc.aio.ServicerContext[session_pb2.IngestRequest, session_pb2.IngestResponse],
    ) -> session_pb2.IngestResponse:
        return session_pb2.IngestResponse(results=await self._ingest(request.messages))

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[session_pb2.IngestStreamRequest],
        context: grpc.aio.ServicerContext[
            session_pb2.IngestStreamRequest, session_pb2.IngestStreamResponse
        ],
    ) -> AsyncIterator[session_pb2.IngestStreamResponse]:
        """Batches in order, each answered once stored (or with its error); see the proto."""
        rpc_var.set("IngestStream")
        async for answer in self.streams.serve(request_iterator, self._ingest_batch):
            yield answer

    def start_draining(self) -> None:
        """Ends every IngestStream: idle ones now, busy ones after their batch."""
        self.streams.start_draining()

    async def _ingest_batch(
        self, request: session_pb2.IngestStreamRequest
    ) -> session_pb2.IngestStreamResponse:
        try:
            results = await self._ingest(request.messages)
        except Exception as exc:
            code, message = _batch_failure(exc)
            return session_pb2.IngestStreamResponse(
                batch_id=request.batch_id, error_code=code.value[0], error_message=message
            )
        return session_pb2.IngestStreamResponse(batch_id=request.batch_id, results=results)

    async def _ingest(
        self, messages: Sequence[common_pb2.Message]
    ) -> list[session_pb2.IngestResult]:
        for m in messages:
            if not m.id:
                raise InvalidHandoverRequest("every message needs an id")
            if not is_message_id(m.id):
                raise InvalidHandoverRequest(f"message ids must be {MESSAGE_ID_RULE}")
            _check_cid(m.conversation_id)
        outcomes = await self.store.ingest(messages)
        full = [
            m.conversation_id for m, o in zip(messages, outcomes, strict=True) if o == INGEST_FULL
        ]
        if INGEST_ACCEPTED in outcomes:
            # The conversations that got work, so the worker need not read the schedule.
            self._wake(
                (
                    m.conversation_id
                    for m, o in zip(messages, outcomes, strict=True)
                    if o == INGEST_ACCEPTED
                ),
                [Lane.INBOX],
            )
        if full:
            # Nothing of the full conversations was taken (nor marked seen): the webhook's
            # sender retries the whole request later; what was accepted dedupes then.
            log.warning("inbox full (CCBRIDGE_INBOX_MAX): %d messages refused", len(full))
            raise ResourceExhausted(
                f"the inbox of {full[0]} holds {self.store.inbox_max} undelivered messages; "
                "retry later",
                retry_after=INBOX_FULL_RETRY_AFTER_S,
            )
        return [
            session_pb2.IngestResult(message_id=m.id, outcome=_OUTCOMES[o])
            for m, o in zip(messages, outcomes, strict=True)
        ]

    async def ReportCaseEvents(
        self,
        request: session_pb2.ReportCaseEventsRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.ReportCaseEventsRequest, session_pb2.ReportCaseEventsResponse
        ],
    ) -> session_pb2.ReportCaseEventsResponse:
        accepted = duplicates = ignored = 0
        replies: list[str] = []  # conversations given an agent message (outbox lane)
        closing: list[str] = []  # conversations the CCaaS closed (both lanes)
        for event in request.events:
            if not event.connector or not event.external_id or not event.event_id:
                raise InvalidHandoverRequest("every event needs connector, external_id, event_id")
            ids = (event.event_id, event.external_id, event.agent_message.id)
            if not all(is_message_id(i) for i in ids if i):
                raise InvalidHandoverRequest(
                    f"event, case and message ids must be {MESSAGE_ID_RULE}"
                )
        for event in request.events:
            kind = event.WhichOneof("kind")
            if kind == "agent_typing":
                # Relayed now or dropped (also for a case not linked yet): never stored,
                # never behind the messages.
                cid = await self.store.lookup_case(event.connector, event.external_id)
                typing = event.agent_typing
                at_ms = typing.at.ToMilliseconds() if typing.HasField("at") else None
                if (
                    cid is not None
                    and self.typing is not None
                    and await self.typing.relay(cid, typing.typing, at_ms)
                ):
                    accepted += 1
                else:
                    ignored += 1
                continue
            if kind == "agent_message":
                msg = common_pb2.Message()
                msg.CopyFrom(event.agent_message)
                msg.id = msg.id or event.event_id
                msg.direction = common_pb2.DIRECTION_OUTBOUND
                # Its delivery to Infobip continues this call's trace.
                msg.trace_parent = msg.trace_parent or traceparent()
                dedupe_id, payload, reason = agent_message_key(msg.id), msg, ""
            elif kind == "case_closed":
                dedupe_id, payload = case_closed_key(event.event_id), None
                reason = event.case_closed.reason or "closed"
            else:
                ignored += 1
                continue
            # A case not linked yet (its case.open answer was lost) parks the event
            # until the opening links it: acknowledged, it must not be dropped.
            cid, result = await self.store.park_unless_linked(
                event.connector,
                event.external_id,
                dedupe_id,
                payload.SerializeToString() if payload is not None else None,
                reason,
            )
            if result == INGEST_FULL:
                log.warning("agent events of a case not linked yet: %d parked", PARK_MAX)
                raise ResourceExhausted(
                    f"{PARK_MAX} events of case {event.external_id} wait for its opening; "
                    "retry later",
                    retry_after=PARK_FULL_RETRY_AFTER_S,
                )
            if cid is not None:
                bind_conversation(cid)
                if payload is not None:
                    payload.conversation_id = cid
                result = await self.store.agent_event(
                    cid,
                    dedupe_id,
                    payload.SerializeToString() if payload is not None else None,
                    reason,
                )
            if result == 0:
                ignored += 1
            elif result == INGEST_DUPLICATE:
                duplicates += 1
            else:
                accepted += 1
                if cid is not None:
                    (replies if kind == "agent_message" else closing).append(cid)
        if replies:
            self._wake(replies, [Lane.OUTBOX])
        if closing:
            self._wake(closing)
        return session_pb2.ReportCaseEventsResponse(
            accepted=accepted, duplicates=duplicates, ignored=ignored
        )

    async def ReportEndUserTyping(
        self,
        request: session_pb2.ReportEndUserTypingRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.ReportEndUserTypingRequest, session_pb2.ReportEndUserTypingResponse
        ],
    ) -> session_pb2.ReportEndUserTypingResponse:
        cid = _check_cid(request.conversation_id)
        at_ms = request.at.ToMilliseconds() if request.HasField("at") else None
        relayed = self.typing is not None and await self.typing.to_agent(cid, request.typing, at_ms)
        return session_pb2.ReportEndUserTypingResponse(relayed=relayed)

    async def GetHandover(
        self,
        request: session_pb2.GetHandoverRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.GetHandoverRequest, session_pb2.GetHandoverResponse
        ],
    ) -> session_pb2.GetHandoverResponse:
        cid = request.conversation_id
        if not cid:
            if not (request.connector and request.external_id):
                raise InvalidHandoverRequest("give conversation_id, or connector and external_id")
            found = await self.store.lookup_case(request.connector, request.external_id)
            if found is None:
                raise HandoverNotFound("no handover for that case")
            cid = found
        rec = await self._load(_check_cid(cid))
        return session_pb2.GetHandoverResponse(handover=await self.to_proto(rec))

    async def ListHandovers(
        self,
        request: session_pb2.ListHandoversRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.ListHandoversRequest, session_pb2.ListHandoversResponse
        ],
    ) -> session_pb2.ListHandoversResponse:
        state = _STATE_NAMES.get(request.state)
        if state is None:
            raise InvalidHandoverRequest("state is required")
        size = _page_size(request.page_size)
        offset = _page_offset(request.page_token)
        ids, more = await self.store.list_state(state, offset, size)
        handovers = []
        for cid in ids:
            rec = await self.store.get(cid)
            if rec is not None:
                handovers.append(await self.to_proto(rec))
        return session_pb2.ListHandoversResponse(
            handovers=handovers, next_page_token=_page_token(offset + size) if more else ""
        )

    async def CloseHandover(
        self,
        request: session_pb2.CloseHandoverRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.CloseHandoverRequest, session_pb2.CloseHandoverResponse
        ],
    ) -> session_pb2.CloseHandoverResponse:
        cid = _check_cid(request.conversation_id)
        by = {
            session_pb2.CLOSE_INITIATOR_INFOBIP: "INFOBIP",
            session_pb2.CLOSE_INITIATOR_CCAAS: "CCAAS",
        }.get(request.initiator, "OPERATOR")
        event_ms: int | None = None
        if request.HasField("event_time"):
            try:  # checks the range too: nanos outside 0..999999999 or years beyond 9999
                event_ms = request.event_time.ToMilliseconds()
            except ValueError:
                raise InvalidHandoverRequest("event_time is not a valid timestamp") from None
        rec = await self._load(cid)
        if event_ms is not None and event_ms < rec.get_int("created_at"):
            # A late or replayed close about an earlier handover of this conversation.
            log.info("close older than the handover ignored", extra={"closed_by": by})
            return session_pb2.CloseHandoverResponse(handover=await self.to_proto(rec))
        if rec.state in ("CLOSED", "CLOSING"):
            return session_pb2.CloseHandoverResponse(handover=await self.to_proto(rec))
        if rec.state in ("FAILED", "REJECTED"):
            await self.store.transition(
                cid,
                allowed=("FAILED", "REJECTED"),
                new_state="CLOSED",
                values={"closed_by": by, "close_reason": request.reason[:200]},
            )
            await self.store.finish_closed(cid)
        else:
            ok, prev = await self.store.transition(
                cid,
                allowed=("OPENING", "ACTIVE"),
                new_state="CLOSING",
                due=LANES,
                values={"closed_by": by, "close_reason": request.reason[:200] or by.lower()},
            )
            if not ok and prev not in ("CLOSING", "CLOSED"):
                raise HandoverStateConflict(f"cannot close a handover in state {prev}")
            log.info("close requested", extra={"closed_by": by})
            self._wake([cid])
        rec = await self._load(cid)
        return session_pb2.CloseHandoverResponse(handover=await self.to_proto(rec))

    async def SendAgentMessage(
        self,
        request: session_pb2.SendAgentMessageRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.SendAgentMessageRequest, session_pb2.SendAgentMessageResponse
        ],
    ) -> session_pb2.SendAgentMessageResponse:
        cid = _check_cid(request.conversation_id)
        rec = await self._load(cid)
        if rec.state not in ("OPENING", "ACTIVE"):
            raise HandoverStateConflict(f"handover is {rec.state}")
        msg = common_pb2.Message()
        msg.CopyFrom(request.message)
        msg.id = msg.id or uuid.uuid4().hex
        if not is_message_id(msg.id):
            raise InvalidHandoverRequest(f"message.id must be {MESSAGE_ID_RULE}")
        msg.conversation_id = cid
        msg.direction = common_pb2.DIRECTION_OUTBOUND
        msg.author_type = msg.author_type or "AGENT"
        msg.content_type = msg.content_type or "TEXT"
        msg.trace_parent = msg.trace_parent or traceparent()
        try:
            content = orjson.loads(msg.content_json or "null")
        except ValueError:
            raise InvalidHandoverRequest("message.content_json must be a JSON object") from None
        if not isinstance(content, dict) or not (
            content or msg.attachments or msg.HasField("location")
        ):
            raise InvalidHandoverRequest(
                "message.content_json must be a non-empty JSON object "
                "(or the message carries attachments or a location)"
            )
        queued = await self.store.queue_agent_message(cid, msg)
        if queued:
            self._wake([cid], [Lane.OUTBOX])
        return session_pb2.SendAgentMessageResponse(message_id=msg.id, duplicate=not queued)

    async def RetryHandover(
        self,
        request: session_pb2.RetryHandoverRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.RetryHandoverRequest, session_pb2.RetryHandoverResponse
        ],
    ) -> session_pb2.RetryHandoverResponse:
        cid = _check_cid(request.conversation_id)
        ok, prev = await self.store.transition(
            cid,
            allowed=("FAILED",),
            new_state="OPENING",
            due=(Lane.INBOX,),
            values={"open_attempts": "0", "open_next_at": "0", "failure_reason": ""},
        )
        if not ok and prev == "REJECTED":
            ok = await self.store.reopen_rejected(cid)
        if not ok:
            if prev == "missing":
                raise HandoverNotFound(f"no handover for conversation {cid}")
            raise HandoverStateConflict(
                f"only FAILED and REJECTED handovers can be retried, not {prev}"
            )
        self._wake([cid], [Lane.INBOX])
        rec = await self._load(cid)
        return session_pb2.RetryHandoverResponse(handover=await self.to_proto(rec))

    async def ListDeadLetters(
        self,
        request: session_pb2.ListDeadLettersRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.ListDeadLettersRequest, session_pb2.ListDeadLettersResponse
        ],
    ) -> session_pb2.ListDeadLettersResponse:
        size = _page_size(request.page_size)
        offset = _page_offset(request.page_token)
        records, next_offset = await self.store.list_dead_letters(
            request.conversation_id, offset, size
        )
        return session_pb2.ListDeadLettersResponse(
            dead_letters=[
                session_pb2.DeadLetter(
                    id=r.id,
                    conversation_id=r.conversation_id,
                    queue=r.queue,
                    message=common_pb2.Message.FromString(r.message),
                    reason=r.reason,
                    attempts=r.attempts,
                    dead_at=_ts(r.dead_at_ms),
                )
                for r in records
            ],
            next_page_token=_page_token(next_offset) if next_offset is not None else "",
        )

    async def ReplayDeadLetter(
        self,
        request: session_pb2.ReplayDeadLetterRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.ReplayDeadLetterRequest, session_pb2.ReplayDeadLetterResponse
        ],
    ) -> session_pb2.ReplayDeadLetterResponse:
        if not request.id:
            raise InvalidHandoverRequest("id is required")
        rec = await self.store.get_dead_letter(request.id)
        if rec is None:
            raise HandoverNotFound(f"no dead letter {request.id}")
        lane, state = await self.store.replay_dead_letter(rec)
        if lane is None:
            # The letter stays where it is: an operator can still read it.
            if not state:
                raise HandoverStateConflict(
                    f"the handover of {rec.conversation_id} no longer exists (expired or "
                    "erased); the dead letter cannot be delivered"
                )
            allowed = " or ".join(REPLAYABLE_STATES[rec.queue])
            raise HandoverStateConflict(
                f"the handover of {rec.conversation_id} is {state}; a dead letter of its "
                f"{rec.queue} can be replayed only while it is {allowed}"
            )
        self._wake([rec.conversation_id], [lane])
        return session_pb2.ReplayDeadLetterResponse(conversation_id=rec.conversation_id)

    async def DiscardDeadLetter(
        self,
        request: session_pb2.DiscardDeadLetterRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.DiscardDeadLetterRequest, session_pb2.DiscardDeadLetterResponse
        ],
    ) -> session_pb2.DiscardDeadLetterResponse:
        if not request.id:
            raise InvalidHandoverRequest("id is required")
        rec = await self.store.get_dead_letter(request.id)
        if rec is None or not await self.store.discard_dead_letter(rec):
            raise HandoverNotFound(f"no dead letter {request.id}")
        log.info("dead letter %s discarded", rec.id)
        return session_pb2.DiscardDeadLetterResponse(conversation_id=rec.conversation_id)

    async def GetTimeline(
        self,
        request: session_pb2.GetTimelineRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.GetTimelineRequest, session_pb2.GetTimelineResponse
        ],
    ) -> session_pb2.GetTimelineResponse:
        cid = _check_cid(request.conversation_id)
        if request.limit < 0 or request.limit > TIMELINE_MAX:
            raise InvalidHandoverRequest(f"limit must be 0..{TIMELINE_MAX}")
        events = await self.store.timeline(cid, request.limit or 100)
        return session_pb2.GetTimelineResponse(
            events=[
                session_pb2.TimelineEvent(
                    at=_ts(e.at_ms),
                    kind=_TIMELINE_KINDS[e.kind],
                    queue=e.queue,
                    message_id=e.message_id,
                    state=e.state,
                    detail=e.detail,
                )
                for e in events
            ]
        )

    async def EraseData(
        self,
        request: session_pb2.EraseDataRequest,
        context: grpc.aio.ServicerContext[
            session_pb2.EraseDataRequest, session_pb2.EraseDataResponse
        ],
    ) -> session_pb2.EraseDataResponse:
        subject = request.WhichOneof("subject")
        if subject == "conversation_id":
            cids = [_check_cid(request.conversation_id)]
        elif subject == "end_user" and request.end_user.strip():
            cids = await self.store.conversations_of(request.end_user)
        else:
            raise InvalidHandoverRequest("give conversation_id or a non-blank end_user")
        still_open = [(cid, state) for cid in cids if (state := await self.store.open_state(cid))]
        if still_open:
            shown = ", ".join(f"{cid} is {state}" for cid, state in still_open[:5])
            raise HandoverStateConflict(
                f"{len(still_open)} handover(s) still open ({shown}); close them first "
                "(ccbridge handovers close); nothing was erased"
            )
        erased: list[str] = []
        letters = 0
        for cid in cids:
            done, count = await self.store.erase_conversation(cid)
            if not done:  # escalated again meanwhile
                raise HandoverStateConflict(
                    f"{cid} was opened again meanwhile; erased so far: {erased or 'none'}"
                )
            erased.append(cid)
            letters += count
        # Counts only: the request's subject (an end user's address) is personal data.
        log.info("data erased: %d conversations, %d dead letters", len(erased), letters)
        return session_pb2.EraseDataResponse(conversation_ids=erased, dead_letters=letters)
