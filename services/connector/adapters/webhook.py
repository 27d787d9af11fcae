"""The generic ``webhook`` connector: a documented HTTP+JSON contract any CCaaS or in-house
desk can implement (docs/connectors/webhook.md is the normative description).

Bridge → CCaaS: ``case.open`` / ``case.message`` / ``case.close`` events POSTed to one
URL, each with a deterministic event id and an idempotency key (with
``CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX`` > 1, case.message events of several cases may go
as one JSON array answered with per-event results). CCaaS → bridge:
``agent.message`` and ``case.closed`` events pushed to the gateway. Both directions are
signed: ``X-Ccbridge-Signature: v1=<hex HMAC-SHA256("<timestamp>.<raw body>")>`` with the
unix ``X-Ccbridge-Timestamp``; several comma-separated secrets allow rotation (the first
signs, any verifies). This module never logs message text or secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import orjson
from google.protobuf import timestamp_pb2

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.adapters.webhook_signature import (
    signed_headers,
    verify_signature,
)
from ccbridge.services.connector.base import (
    CASE_CONCURRENCY,
    Adapter,
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    CaseDelivery,
    CaseEvent,
    CaseMessages,
    CaseToOpen,
    OpenedCase,
    WebhookBatch,
    gather_all,
    may_start_post,
    webhook_json,
)
from ccbridge.services.infobip.outbound import FILE_TYPES
from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument
from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    HttpAnswer,
    HttpClient,
    HttpFailure,
)
from ccbridge.services.runtime.ids import MESSAGE_ID_RULE, is_message_id

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# A CCaaS that replays a stored answer for a repeated key may say so with this header.
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_EVENTS_PER_WEBHOOK = 100
# agent.message attachments and location (contract v2): what one message may carry.
MAX_ATTACHMENTS = 10
MAX_URL_CHARS = 2048
MAX_CAPTION_CHARS = 4096
MAX_NAME_CHARS = 255
MAX_PLACE_CHARS = 1000
MAX_FILE_SIZE = 2**53  # bytes; JSON integers beyond it do not survive every reader

EventType = Literal["case.open", "case.message", "case.close", "message.failed", "case.typing"]

_DIRECTIONS = {
    common_pb2.DIRECTION_INBOUND: "INBOUND",
    common_pb2.DIRECTION_OUTBOUND: "OUTBOUND",
}


def event_id(event_type: str, idempotency_key: str) -> str:
    """Deterministic id of an outgoing event: redeliveries carry the same id."""
    digest = hashlib.sha256(f"{event_type}\n{idempotency_key}".encode()).hexdigest()
    return "evt_" + digest[:32]


# --- payloads -------------------------------------------------------------------------


def iso8601(ts: timestamp_pb2.Timestamp) -> str | None:
    """A protobuf Timestamp as ISO-8601 UTC with milliseconds; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return _now_iso(ts.seconds + ts.nanos / 1e9)


def _now_iso(now: float) -> str:
    moment = datetime.fromtimestamp(now, tz=UTC)
    if moment.year < 1000:  # strftime's %Y does not pad these to 4 digits, isoformat does
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    # The same text as the strftime form (milliseconds truncated), at ~2/3 of its cost.
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


# --- JSON -----------------------------------------------------------------------------
#
# orjson, as everywhere in ccbridge. What it refuses (NaN, Infinity, lone surrogates, a
# byte-order mark; integers beyond 64 bits when writing) makes the message's content
# invalid: a non-retryable failure of that message, never a crash. Integers beyond 64 bits
# are read as floats.


def _dumps(doc: object, *, what: str) -> bytes:
    """Compact UTF-8 JSON of an outgoing body (a value orjson refuses fails the call)."""
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        raise FarSideError(
            f"webhook connector: {what} cannot be written as JSON ({exc})", retryable=False
        ) from None


def message_json(message: common_pb2.Message) -> dict[str, object]:
    """The contract's message object."""
    content: object = {}
    if message.content_json:
        try:
            content = orjson.loads(message.content_json)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(
                f"message {message.id!r}: content_json is not JSON ({exc})"
            ) from None
        if not isinstance(content, dict):
            raise InvalidArgument(f"message {message.id!r}: content_json is not a JSON object")
    return {
        "id": message.id,
        "direction": _DIRECTIONS.get(message.direction, "UNSPECIFIED"),
        "authorType": message.author_type,
        "createdAt": iso8601(message.created_at),
        "contentType": message.content_type,
        "content": content,
    }


# --- inbound events -------------------------------------------------------------------


def _required_id(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where}: {key} is required (a non-empty string)")
    if not is_message_id(value):
        raise InvalidArgument(f"{where}: {key} must be {MESSAGE_ID_RULE}")
    return value


def _optional_str(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {key} must be a string")
    return value


def _optional_time(item: Mapping[str, object], key: str, where: str) -> float | None:
    """An ISO-8601 instant with its offset (``2025-01-01T10:00:00.000Z``) as unix seconds."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {key} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{where}: {key} must be an ISO-8601 instant") from None
    if moment.tzinfo is None:
        raise InvalidArgument(f"{where}: {key} needs its UTC offset (e.g. Z)")
    return moment.timestamp()


def _url(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{where}: url is required (a non-empty string)")
    if len(value) > MAX_URL_CHARS:
        raise InvalidArgument(f"{where}: url is longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{where}: url must be an absolute http or https URL")
    if any(c.isspace() for c in value):
        raise InvalidArgument(f"{where}: url must not contain whitespace")
    return value


def _bounded_str(item: Mapping[str, object], key: str, where: str, limit: int) -> str:
    value = _optional_str(item, key, where)
    if len(value) > limit:
        raise InvalidArgument(f"{where}: {key} is longer than {limit} characters")
    return value


def _attachments(value: object, where: str) -> tuple[common_pb2.Attachment, ...]:
    """The contract's ``attachments`` (absent or null: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: attachments must be an array")
    if len(value) > MAX_ATTACHMENTS:
        raise InvalidArgument(f"{where}: more than {MAX_ATTACHMENTS} attachments")
    found: list[common_pb2.Attachment] = []
    for index, item in enumerate(value):
        here = f"{where} attachments[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{here}: must be an object")
        kind = item.get("contentType")
        if kind not in FILE_TYPES:
            raise InvalidArgument(f"{here}: contentType must be one of {', '.join(FILE_TYPES)}")
        size = item.get("size")
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_FILE_SIZE
        ):
            raise InvalidArgument(f"{here}: size must be an integer of bytes, 1..{MAX_FILE_SIZE}")
        found.append(
            common_pb2.Attachment(
                url=_url(item.get("url"), here),
                content_type=str(kind),
                caption=_bounded_str(item, "caption", here, MAX_CAPTION_CHARS),
                name=_bounded_str(item, "name", here, MAX_NAME_CHARS),
                size=size or 0,
            )
        )
    return tuple(found)


def _degrees(item: Mapping[str, object], key: str, where: str, limit: float) -> float:
    value = item.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidArgument(f"{where}: {key} is required (a number)")
    if not -limit <= value <= limit:
        raise InvalidArgument(f"{where}: {key} must be within -{limit:g}..{limit:g}")
    return float(value)


def _location(value: object, where: str) -> common_pb2.Location | None:
    """The contract's ``location`` (absent or null: none)."""
    if value is None:
        return None
    here = f"{where} location"
    if not isinstance(value, dict):
        raise InvalidArgument(f"{here}: must be an object")
    return common_pb2.Location(
        latitude=_degrees(value, "latitude", here, 90),
        longitude=_degrees(value, "longitude", here, 180),
        name=_bounded_str(value, "name", here, MAX_PLACE_CHARS),
        address=_bounded_str(value, "address", here, MAX_PLACE_CHARS),
    )


def parse_events(body: bytes) -> WebhookBatch:
    """Parses a verified body: one event object or an array of them."""
    doc = webhook_json(body)
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > MAX_EVENTS_PER_WEBHOOK:
        raise InvalidArgument(f"more than {MAX_EVENTS_PER_WEBHOOK} events in one webhook")
    events: list[CaseEvent] = []
    ignored = 0
    for index, item in enumerate(items):
        where = f"event #{index}"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where}: must be a JSON object")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise InvalidArgument(f"{where}: type is required")
        if kind == "agent.message":
            event_id_ = _required_id(item, "id", where)
            case_id = _required_id(item, "caseId", where)
            message = item.get("message")
            if not isinstance(message, dict):
                raise InvalidArgument(f"{where}: message must be an object")
            message_id = _required_id(message, "id", f"{where} message")
            text = message.get("text")
            if text is not None and not isinstance(text, str):
                raise InvalidArgument(f"{where} message: text must be a string")
            attachments = _attachments(message.get("attachments"), f"{where} message")
            location = _location(message.get("location"), f"{where} message")
            if not text and not attachments and location is None:
                raise InvalidArgument(
                    f"{where} message: text (a non-empty string), attachments or location "
                    "is required"
                )
            agent_name = _optional_str(message, "agentName", f"{where} message")
            events.append(
                AgentMessage(
                    external_id=case_id,
                    event_id=event_id_,
                    message_id=message_id,
                    text=text or "",
                    agent_name=agent_name,
                    attachments=attachments,
                    location=location,
                )
            )
        elif kind == "agent.typing":
            event_id_ = _required_id(item, "id", where)
            case_id = _required_id(item, "caseId", where)
            typing = item.get("typing")
            if not isinstance(typing, bool):
                raise InvalidArgument(f"{where}: typing is required (true or false)")
            events.append(
                AgentTyping(
                    external_id=case_id,
                    event_id=event_id_,
                    typing=typing,
                    at=_optional_time(item, "timestamp", where),
                )
            )
        elif kind == "case.closed":
            event_id_ = _required_id(item, "id", where)
            case_id = _required_id(item, "caseId", where)
            reason = _optional_str(item, "reason", where) or "closed"
            events.append(CaseClosedEvent(external_id=case_id, event_id=event_id_, reason=reason))
        else:
            ignored += 1  # newer event types of the contract must not break older bridges
    return WebhookBatch(events, ignored)


# --- batched case.message ------------------------------------------------------------


class _Slot(NamedTuple):
    """A case's messages in one batched request (all of them, or one chunk of a case
    longer than the batch size)."""

    case_index: int  # the case's position in the call
    case: CaseMessages  # only this slot's messages
    bodies: list[dict[str, object]]  # message_json of each message


class _EventResult(NamedTuple):
    """One entry of a batch answer's ``results``."""

    status: int
    message_id: str
    retry_after: float | None


def _plan(slots_by_case: Sequence[list[_Slot]], batch_max: int) -> list[list[_Slot]]:
    """Groups whole cases into requests of at most ``batch_max`` events (first fit).
    A case longer than that is not planned here: its chunks go one after another."""
    requests: list[list[_Slot]] = []
    sizes: list[int] = []
    for slots in slots_by_case:
        if len(slots) != 1:
            continue
        size = len(slots[0].bodies)
        for position, used in enumerate(sizes):
            if used + size <= batch_max:
                requests[position].append(slots[0])
                sizes[position] += size
                break
        else:
            requests.append([slots[0]])
            sizes.append(size)
    return requests


def _batch_results(raw: bytes, count: int, now: float) -> list[_EventResult] | None:
    """The per-event results of a 2xx batch answer; None unless it is a well-formed
    ``{"results": [...]}`` with one object carrying an integer ``status`` per event."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    items = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(items, list) or len(items) != count:
        return None
    results: list[_EventResult] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        status = item.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            return None
        message_id = item.get("messageId")
        retry_after = item.get("retryAfter")
        results.append(
            _EventResult(
                status,
                message_id if isinstance(message_id, str) else "",
                farside.parse_retry_after(str(retry_after), now=now)
                if isinstance(retry_after, int | float | str) and not isinstance(retry_after, bool)
                else None,
            )
        )
    return results


def _case_delivery(results: Sequence[_EventResult]) -> CaseDelivery:
    """A case's outcome from its events' results: the leading 2xx ones were accepted, the
    first other one stops the case (later ones do not count, whatever they say)."""
    ids: list[str] = []
    for result in results:
        if 200 <= result.status < 300:
            ids.append(result.message_id)
            continue
        retryable = farside.is_retryable_status(result.status)
        error = FarSideError(
            f"webhook connector: CCaaS answered status {result.status} to case.message (batched)",
            retryable=retryable,
            retry_after=result.retry_after if retryable else None,
            status=result.status,
        )
        return CaseDelivery(len(ids), ids, error)
    return CaseDelivery(len(ids), ids)


# --- the adapter ----------------------------------------------------------------------


class WebhookAdapter(Adapter):
    """The generic signed HTTP+JSON connector (push mode)."""

    name = "webhook"
    mode: Literal["push", "poll"] = "push"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.secrets:
            raise ValueError("the webhook connector needs at least one secret")
        self.url = settings.url
        self.batch_max = settings.batch_max
        self._secrets = tuple(s.value for s in settings.secrets)
        self._clock = clock
        self._http = HttpClient(
            headers={"User-Agent": "ccbridge-webhook-connector/1", "Accept": "application/json"},
            timeout_s=settings.timeout_s,
            max_answer_bytes=MAX_RESPONSE_BYTES,
            system="webhook",
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # bridge → CCaaS

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        key = case.idempotency_key or case.conversation_id
        payload = {
            "case": {
                "channel": case.channel,
                "endUser": case.end_user,
                "routing": {
                    "queue": case.queue,
                    "priority": case.priority,
                    "skills": list(case.skills),
                    "rule": case.rule,
                },
                "tags": list(case.tags),
                "metadata": dict(case.metadata),
            },
            "transcript": [message_json(m) for m in case.transcript],
            "transcriptTruncated": case.transcript_truncated,
        }
        body, replayed = await self._send("case.open", key, case.conversation_id, payload)
        case_id = body.get("caseId")
        if not isinstance(case_id, str) or not case_id:
            raise FarSideError("webhook connector: case.open answer has no caseId", retryable=False)
        existing = replayed or body.get("existing") is True
        log.info("webhook connector: case %s %s", case_id, "found" if existing else "opened")
        return OpenedCase(external_id=case_id, existing=existing)

    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        key = idempotency_key or message.id
        payload = {"caseId": external_id, "message": message_json(message)}
        body, _ = await self._send("case.message", key, conversation_id, payload)
        message_id = body.get("messageId")
        return message_id if isinstance(message_id, str) else ""

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        key = idempotency_key or f"{conversation_id or external_id}:close"
        payload = {"caseId": external_id, "reason": reason}
        body, _ = await self._send("case.close", key, conversation_id, payload)
        return body.get("alreadyClosed") is True

    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        key = idempotency_key or f"failed:{message_id}"
        payload = {"caseId": external_id, "messageId": message_id, "reason": reason}
        await self._send("message.failed", key, conversation_id, payload)
        log.info("webhook connector: told case %s a reply was not delivered", external_id)

    async def post_typing(self, external_id: str, conversation_id: str, typing: bool) -> bool:
        # Each indicator is its own event (a key per instant): never a replay of an older one.
        key = f"typing:{conversation_id}:{int(self._clock() * 1000)}"
        await self._send(
            "case.typing", key, conversation_id, {"caseId": external_id, "typing": typing}
        )
        return True

    async def post_customer_messages(self, cases: Sequence[CaseMessages]) -> list[CaseDelivery]:
        """With ``batch_max`` 1, one event per POST (the default). Otherwise the case.message
        events go as JSON arrays of at most ``batch_max`` events: a case is never split
        across requests unless it alone is longer (its chunks then go in order)."""
        if self.batch_max <= 1:
            return await super().post_customer_messages(cases)
        slots_by_case: list[list[_Slot]] = []
        invalid: dict[int, FarSideError] = {}
        n = self.batch_max
        for index, case in enumerate(cases):
            bodies: list[dict[str, object]] = []
            for message in case.messages:
                try:
                    bodies.append(message_json(message))
                except InvalidArgument as exc:
                    # The messages before it still go; the case stops at this one.
                    invalid[index] = FarSideError(str(exc), retryable=False)
                    break
            if len(bodies) == len(case.messages) and len(bodies) <= n:
                # The usual case: the whole case in one slot, as it came.
                slots_by_case.append([_Slot(index, case, bodies)] if bodies else [])
                continue
            messages = list(case.messages)[: len(bodies)]
            slots_by_case.append(
                [
                    _Slot(
                        index,
                        CaseMessages(case.external_id, case.conversation_id, messages[i : i + n]),
                        bodies[i : i + n],
                    )
                    for i in range(0, len(bodies), n)
                ]
            )
        gate = asyncio.Semaphore(CASE_CONCURRENCY)
        outcome: dict[int, CaseDelivery] = {}

        async def shared(slots: list[_Slot]) -> None:
            async with gate:
                for slot, delivery in zip(slots, await self._post_batch(slots), strict=True):
                    outcome[slot.case_index] = delivery

        async def chunked(slots: list[_Slot]) -> None:
            ids: list[str] = []
            for slot in slots:
                if ids and not may_start_post():
                    break  # the rest of the case: Session's next call
                async with gate:
                    (delivery,) = await self._post_batch([slot])
                ids.extend(delivery.message_ids)
                if delivery.error is not None:
                    outcome[slot.case_index] = CaseDelivery(len(ids), ids, delivery.error)
                    return
            outcome[slots[0].case_index] = CaseDelivery(len(ids), ids)

        await gather_all(
            [shared(slots) for slots in _plan(slots_by_case, self.batch_max)]
            + [chunked(slots) for slots in slots_by_case if len(slots) > 1]
        )
        results: list[CaseDelivery] = []
        for index in range(len(cases)):
            delivery = outcome.get(index, CaseDelivery(0, []))
            if delivery.error is None and index in invalid:
                delivery = CaseDelivery(delivery.delivered, delivery.message_ids, invalid[index])
            results.append(delivery)
        return results

    async def _post_batch(self, slots: Sequence[_Slot]) -> list[CaseDelivery]:
        """POSTs the slots' events as one signed JSON array; one result per slot."""
        now = self._clock()
        stamp = _now_iso(now)  # one instant for the whole request, formatted once
        # The fields and their order of _event("case.message", ...) with the fields of
        # post_customer_message ({"caseId", "message"}), built in one go.
        docs = [
            {
                "type": "case.message",
                "id": event_id("case.message", message.id),
                "conversationId": slot.case.conversation_id,
                "idempotencyKey": message.id,
                "timestamp": stamp,
                "caseId": slot.case.external_id,
                "message": message_body,
            }
            for slot in slots
            for message, message_body in zip(slot.case.messages, slot.bodies, strict=True)
        ]
        body = _dumps(docs, what="a batch of case.message events")
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self._secrets[0], body, now=now),
        }
        what = f"a batch of {len(docs)} case.message events"
        try:
            answer = await self._post(what, body, headers, operation="case.message batch")
            if not answer.ok:
                if not farside.is_retryable_status(answer.status):
                    # The CCaaS may refuse arrays, or one bad event spoils the request:
                    # one by one, only the bad event fails.
                    log.warning(
                        "webhook connector: CCaaS answered HTTP %d to %s; posting them one by one",
                        answer.status,
                        what,
                    )
                    return await super().post_customer_messages([slot.case for slot in slots])
                raise self._status_error(what, answer, now)
        except FarSideError as exc:
            return [CaseDelivery(0, [], exc) for _ in slots]
        results = _batch_results(answer.body, len(docs), now)
        if results is None:  # no usable results: every event counts as accepted
            return [CaseDelivery(len(slot.bodies), [""] * len(slot.bodies)) for slot in slots]
        deliveries: list[CaseDelivery] = []
        position = 0
        for slot in slots:
            deliveries.append(_case_delivery(results[position : position + len(slot.bodies)]))
            position += len(slot.bodies)
        failed = sum(1 for delivery in deliveries if delivery.error is not None)
        if failed:
            log.warning(
                "webhook connector: %s: %d of %d cases stopped at a failed event",
                what,
                failed,
                len(slots),
            )
        return deliveries

    def _event(
        self,
        event_type: EventType,
        key: str,
        conversation_id: str,
        fields: Mapping[str, object],
        now: float,
    ) -> dict[str, object]:
        """An outgoing event: the envelope (deterministic id) and its fields."""
        return {
            "type": event_type,
            "id": event_id(event_type, key),
            "conversationId": conversation_id,
            "idempotencyKey": key,
            "timestamp": _now_iso(now),
            **fields,
        }

    async def _send(
        self, event_type: EventType, key: str, conversation_id: str, fields: Mapping[str, object]
    ) -> tuple[dict[str, Any], bool]:
        """POSTs one signed event; returns (JSON object answer or {}, replayed)."""
        now = self._clock()
        body = _dumps(self._event(event_type, key, conversation_id, fields, now), what=event_type)
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            **signed_headers(self._secrets[0], body, now=now),
        }
        answer = await self._post(event_type, body, headers, operation=event_type)
        if not answer.ok:
            raise self._status_error(event_type, answer, now)
        replayed = answer.headers.get(REPLAYED_HEADER, "").lower() == "true"
        return answer.json_object(), replayed

    async def _post(
        self, what: str, body: bytes, headers: Mapping[str, str], *, operation: str
    ) -> HttpAnswer:
        """POSTs ``body``. Transport failures, and a 2xx answer over MAX_RESPONSE_BYTES,
        raise the FarSideError they mean (farside); a non-2xx answer is returned (its
        body, unused, may be cut to b'')."""
        try:
            return await self._http.request(
                "POST", self.url, body=body, headers=headers, operation=operation
            )
        except AnswerTooLarge as exc:
            if not 200 <= exc.status < 300:
                return HttpAnswer(exc.status, exc.headers, b"")
            error = farside.failure_error(f"webhook connector: {what}", exc)
        except HttpFailure as exc:
            error = farside.failure_error(f"webhook connector: {what}", exc)
        log.warning("webhook connector: %s failed: %s", what, error.__cause__)
        raise error

    @staticmethod
    def _status_error(what: str, answer: HttpAnswer, now: float) -> FarSideError:
        error = farside.status_error(
            f"webhook connector: CCaaS answered {what}", answer.status, answer.headers, now=now
        )
        log.warning(
            "webhook connector: %s answered HTTP %d (retryable=%s)",
            what,
            answer.status,
            error.retryable,
        )
        return error

    # CCaaS → bridge

    def parse_webhook_batch(self, headers: Mapping[str, str], body: bytes) -> WebhookBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_signature(self._secrets, lowered, body, now=self._clock())
        return parse_events(body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        return self.parse_webhook_batch(headers, body).events


def build(settings: WebhookSettings, store: object) -> WebhookAdapter:
    """The adapter for its parsed settings (the connector registry calls it; the webhook
    connector keeps no state in Redis)."""
    return WebhookAdapter(settings)
