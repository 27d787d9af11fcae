"""The generic ``webhook`` connector: a documented HTTP+JSON contract any CCaaS or in-house
desk can implement (docs/connectors/webhook.md is the normative description).

Bridge → CCaaS: ``case.open`` / ``case.message`` / ``case.close`` events POSTed to one
URL, each with a deterministic event id and an idempotency key. CCaaS → bridge:
``agent.message`` and ``case.closed`` events pushed to the gateway. Both directions are
signed: ``X-Ccbridge-Signature: v1=<hex HMAC-SHA256("<timestamp>.<raw body>")>`` with the
unix ``X-Ccbridge-Timestamp``; several comma-separated secrets allow rotation (the first
signs, any verifies). This module never logs message text or secrets.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from google.protobuf import timestamp_pb2

from ccbridge.common.v1 import common_pb2
from services._runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from services.connector.base import (
    Adapter,
    AgentMessage,
    CaseClosedEvent,
    CaseEvent,
    CaseToOpen,
    OpenedCase,
    WebhookBatch,
)
from services.connector.settings import WebhookSettings

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Ccbridge-Timestamp"
SIGNATURE_HEADER = "X-Ccbridge-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A CCaaS that replays a stored answer for a repeated key may say so with this header.
REPLAYED_HEADER = "Idempotent-Replayed"
SIGNATURE_TOLERANCE_S = 300
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_EVENTS_PER_WEBHOOK = 100
MAX_ID_LENGTH = 256
MAX_RETRY_AFTER_S = 3600.0

EventType = Literal["case.open", "case.message", "case.close"]

_DIRECTIONS = {
    common_pb2.DIRECTION_INBOUND: "INBOUND",
    common_pb2.DIRECTION_OUTBOUND: "OUTBOUND",
}


# --- signatures -----------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Ccbridge-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Timestamp and signature headers for a request carrying ``body``."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify_signature(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> None:
    """Raises :class:`Unauthenticated` unless the timestamp is fresh and one ``v1=``
    signature of the header matches one of ``secrets`` (compared in constant time).

    ``headers`` must have lower-case names.
    """
    raw_ts = headers.get(TIMESTAMP_HEADER.lower(), "").strip()
    raw_sig = headers.get(SIGNATURE_HEADER.lower(), "")
    if not raw_ts or not raw_sig:
        raise Unauthenticated("missing signature or timestamp header")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise Unauthenticated("invalid timestamp header") from None
    if abs(now - timestamp) > tolerance_s:
        raise Unauthenticated("timestamp outside the accepted window")
    # The header may carry several signatures ("v1=a,v1=b") while the CCaaS rotates.
    candidates = [part.strip()[3:] for part in raw_sig.split(",") if part.strip().startswith("v1=")]
    signed = f"{timestamp}.".encode() + body
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for candidate in candidates:
            # No early exit: the work done does not depend on which secret matched.
            ok |= hmac.compare_digest(expected, candidate.lower())
    if not ok:
        raise Unauthenticated("bad signature")


def event_id(event_type: str, idempotency_key: str) -> str:
    """Deterministic id of an outgoing event: redeliveries carry the same id."""
    digest = hashlib.sha256(f"{event_type}\n{idempotency_key}".encode()).hexdigest()
    return "evt_" + digest[:32]


# --- payloads -------------------------------------------------------------------------


def iso8601(ts: timestamp_pb2.Timestamp) -> str | None:
    """A protobuf Timestamp as ISO-8601 UTC with milliseconds; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now_iso(now: float) -> str:
    moment = datetime.fromtimestamp(now, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def message_json(message: common_pb2.Message) -> dict[str, object]:
    """The contract's message object."""
    content: object = {}
    if message.content_json:
        try:
            content = json.loads(message.content_json)
        except ValueError:
            raise InvalidArgument(f"message {message.id!r}: content_json is not JSON") from None
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


def _parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# --- inbound events -------------------------------------------------------------------


def _required_id(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where}: {key} is required (a non-empty string)")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{where}: {key} is longer than {MAX_ID_LENGTH} characters")
    return value


def _optional_str(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {key} must be a string")
    return value


def parse_events(body: bytes) -> WebhookBatch:
    """Parses a verified body: one event object or an array of them."""
    try:
        doc = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        raise InvalidArgument("body is not JSON") from None
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
            if not isinstance(text, str) or not text:
                raise InvalidArgument(f"{where} message: text is required (a non-empty string)")
            agent_name = _optional_str(message, "agentName", f"{where} message")
            events.append(
                AgentMessage(
                    external_id=case_id,
                    event_id=event_id_,
                    message_id=message_id,
                    text=text,
                    agent_name=agent_name,
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


# --- the adapter ----------------------------------------------------------------------


class WebhookAdapter(Adapter):
    """The generic signed HTTP+JSON connector (push mode)."""

    name = "webhook"
    mode: Literal["push", "poll"] = "push"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.secrets:
            raise ValueError("the webhook connector needs at least one secret")
        self.url = settings.url
        self._secrets = tuple(s.value for s in settings.secrets)
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "ccbridge-webhook-connector/1", "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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

    async def _send(
        self, event_type: EventType, key: str, conversation_id: str, fields: Mapping[str, object]
    ) -> tuple[dict[str, Any], bool]:
        """POSTs one signed event; returns (JSON object answer or {}, replayed)."""
        now = self._clock()
        doc = {
            "type": event_type,
            "id": event_id(event_type, key),
            "conversationId": conversation_id,
            "idempotencyKey": key,
            "timestamp": _now_iso(now),
            **fields,
        }
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            **signed_headers(self._secrets[0], body, now=now),
        }
        try:
            async with self._client.stream(
                "POST", self.url, content=body, headers=headers
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    retryable = status in (408, 429) or status >= 500
                    retry_after = _parse_retry_after(response.headers.get("retry-after"), now)
                    log.warning(
                        "webhook connector: %s answered HTTP %d (retryable=%s)",
                        event_type,
                        status,
                        retryable,
                    )
                    raise FarSideError(
                        f"webhook connector: CCaaS answered HTTP {status} to {event_type}",
                        retryable=retryable,
                        retry_after=retry_after if retryable else None,
                        status=status,
                    )
                raw = await _read_limited(response)
                replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
        except httpx.TimeoutException:
            log.warning("webhook connector: %s timed out", event_type)
            raise FarSideError(
                f"webhook connector: {event_type} timed out", retryable=True
            ) from None
        except httpx.RequestError as exc:
            log.warning("webhook connector: %s failed: %s", event_type, type(exc).__name__)
            raise FarSideError(
                f"webhook connector: {event_type} failed ({type(exc).__name__})", retryable=True
            ) from None
        if raw is None:
            raise FarSideError(
                f"webhook connector: {event_type} answer larger than {MAX_RESPONSE_BYTES} bytes",
                retryable=False,
                status=status,
            )
        return _json_object(raw), replayed

    # CCaaS → bridge

    def parse_webhook_batch(self, headers: Mapping[str, str], body: bytes) -> WebhookBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_signature(self._secrets, lowered, body, now=self._clock())
        return parse_events(body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        return self.parse_webhook_batch(headers, body).events


async def _read_limited(response: httpx.Response) -> bytes | None:
    """The body, or None when it exceeds MAX_RESPONSE_BYTES (reading stops there)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
