"""Webhook routes: Infobip's legacy account-configuration webhook, Infobip's
Subscriptions ("Conversations webhook") events, and CCaaS pushes forwarded to Connector.

Subscriptions events are authenticated (HMAC per :class:`HmacScheme`, or Basic); a 401
is counted and logged, rate-limited, with the names (never the values) of the
authentication headers present. Each event's ``timestamp`` (required by Infobip's
schema) must be within ``CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S``: older events are refused,
counted and logged (a replay is either that old or still remembered by Session's dedupe).

This module also owns the translation of Infobip message JSON into
``ccbridge.common.v1.Message``. Parsing is tolerant (unknown fields ignored, timestamps
in every observed format; a content type that is absent stays empty, for Session to read
from Infobip, never guessed) but every request is
validated completely before any gRPC call, so a 400 never follows a partial effect.
Every webhook answers 2xx only after Session (or Connector) returned, i.e. after the
content is stored durably; transient backend failures answer 503 with ``Retry-After``
so the sender retries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2
from ccbridge.gateway._request import consteq, parse_json, read_body, require_json
from ccbridge.gateway.backends import Backends
from ccbridge.gateway.errors import HttpError, JsonResponse, http_error_from_grpc
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.connector.adapters.webhook_signature import (
    check_signature_headers,
    verify_signature,
)
from ccbridge.services.infobip.client import TYPING_INDICATOR
from ccbridge.services.infobip.webhook_auth import HmacScheme
from ccbridge.services.runtime.errors import Unauthenticated
from ccbridge.services.runtime.ids import (
    CONVERSATION_ID_RULE,
    MESSAGE_ID_RULE,
    is_conversation_id,
    is_message_id,
)
from ccbridge.services.runtime.tracing import bind_conversation, traceparent
from ccbridge.session.v1 import session_pb2

log = logging.getLogger(__name__)

_CONNECTOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# --------------------------------------------------------------------------- parsing


def _bad(where: str, problem: str, code: str = "invalid_message") -> HttpError:
    return HttpError(400, code, f"{where}: {problem}")


def _scalar_text(value: object) -> str:
    """Infobip string fields, tolerating numbers (phone numbers sent as JSON numbers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def _required_id(
    obj: dict[str, object], key: str, where: str, code: str = "invalid_message"
) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, f"{key} is required", code)
    if not is_message_id(value):
        raise _bad(where, f"{key} must be {MESSAGE_ID_RULE}", code)
    return value


def _conversation_id(
    obj: dict[str, object], key: str, where: str, code: str = "invalid_message"
) -> str:
    value = _required_id(obj, key, where, code)
    if not is_conversation_id(value):
        raise _bad(where, f"{key} must be {CONVERSATION_ID_RULE}", code)
    return value


# An instant as (seconds, nanos) since the epoch: set on the Timestamp field directly,
# which is several times cheaper than Timestamp.FromDatetime on this hot path.
Instant = tuple[int, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def now_instant() -> Instant:
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


def parse_instant(value: object) -> Instant | None:
    """Parses Infobip timestamps leniently: ``+00:00``, ``+0000`` or ``Z`` offsets,
    optional fractions; numbers are epoch seconds (or milliseconds when that large).
    Returns None when the value is missing or unreadable."""
    try:
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
            parsed = datetime.fromtimestamp(seconds, tz=UTC)
        else:
            return None
        delta = parsed - _EPOCH
        seconds = delta.days * 86_400 + delta.seconds
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            return None  # outside google.protobuf.Timestamp's range
        return seconds, delta.microseconds * 1000
    except (ValueError, OverflowError, OSError):
        return None


def _content_json(content: object) -> str:
    if content is None:
        return "{}"
    return orjson.dumps(content).decode()


def _build_message(
    msg: dict[str, object],
    *,
    message_id: str,
    conversation_id: str,
    channel: object,
    created_at: object,
    fallback: Instant,
) -> common_pb2.Message:
    content = msg.get("content")
    content_type = msg.get("contentType")
    message = common_pb2.Message(
        id=message_id,
        conversation_id=conversation_id,
        direction=common_pb2.DIRECTION_INBOUND,
        channel=_scalar_text(channel),
        to=_scalar_text(msg.get("to")),
        author_type=_scalar_text(msg.get("authorType")),
        # Subscriptions events carry no contentType: left empty here, Session reads it
        # from Infobip (Get Messages) before delivery; never guessed from the content.
        content_type=content_type if isinstance(content_type, str) else "",
        content_json=_content_json(content),
    )
    setattr(message, "from", _scalar_text(msg.get("from")))  # `from` is a Python keyword
    seconds, nanos = parse_instant(created_at) or fallback
    message.created_at.seconds = seconds
    message.created_at.nanos = nanos
    return message


def legacy_message(item: dict[str, object], where: str, now: Instant) -> common_pb2.Message:
    """One Get-Messages-shaped item of the legacy webhook → Message (direction INBOUND)."""
    message_id = _required_id(item, "id", where)
    conversation_id = _conversation_id(item, "conversationId", where)
    return _build_message(
        item,
        message_id=message_id,
        conversation_id=conversation_id,
        channel=item.get("channel"),
        created_at=item.get("createdAt"),
        fallback=now,
    )


def event_message(
    event: dict[str, object], payload: dict[str, object], where: str, now: Instant
) -> common_pb2.Message:
    """``payload.message`` of an INBOUND_MESSAGE event → Message.

    The conversation id is ``message.conversationId``, else ``payload.id`` (the payload
    of message events is the conversation). The event has no ``contentType``: the
    message's stays empty until Session reads it from Infobip.
    """
    msg = payload.get("message")
    if not isinstance(msg, dict):
        raise _bad(where, "payload.message must be an object", "invalid_event")
    message_id = _required_id(msg, "id", f"{where}.payload.message")
    conv = msg.get("conversationId") or payload.get("id")
    conversation_id = _conversation_id(
        {"conversationId": conv}, "conversationId", f"{where}.payload.message", "invalid_event"
    )
    fallback = parse_instant(event.get("timestamp")) or now
    return _build_message(
        msg,
        message_id=message_id,
        conversation_id=conversation_id,
        channel=msg.get("channel") or payload.get("channel"),
        created_at=msg.get("createdAt"),
        fallback=fallback,
    )


def _legacy_items(doc: object) -> tuple[Sequence[object], bool]:
    """The message items of a legacy webhook body and whether it was a single object."""
    if isinstance(doc, list):
        return doc, False
    if isinstance(doc, dict):
        for key in ("messages", "results"):
            if key in doc:
                items = doc[key]
                if not isinstance(items, list):
                    raise HttpError(400, "invalid_body", f"{key} must be an array")
                return items, False
        return [doc], True
    raise HttpError(
        400,
        "invalid_body",
        'body must be a message object, an array of them, or {"messages": [...]}',
    )


def _is_outbound(item: dict[str, object]) -> bool:
    direction = item.get("direction")
    return isinstance(direction, str) and direction.upper() == "OUTBOUND"


# Header names worth naming when a request is refused 401 (names only, never values).
_AUTH_HEADER_HINT = re.compile(r"sign|auth|hmac|token|hub|secret|key", re.I)
_LOG_EVERY_S = 10.0


class _RateLimitedLog:
    """At most one warning per ``every_s`` per reason; the next one says how many were
    left out in between (counters count them all)."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._every_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        if suppressed:
            message += f" ({suppressed} more like it not logged since the last one)"
        log.warning(message, *args, extra={"reason": reason})


@dataclass
class _Counts:
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: int = 0

    def add_results(self, results: Sequence[session_pb2.IngestResult]) -> None:
        for result in results:
            if result.outcome == session_pb2.INGEST_OUTCOME_ACCEPTED:
                self.accepted += 1
            elif result.outcome == session_pb2.INGEST_OUTCOME_DUPLICATE:
                self.duplicates += 1
            else:
                self.ignored += 1


# --------------------------------------------------------------------------- routes


class WebhookRoutes:
    """The three webhook endpoints, sharing one app's settings, backends and metrics."""

    def __init__(
        self, settings: GatewaySettings, backends: Backends, metrics: GatewayMetrics
    ) -> None:
        self._backends = backends
        self._metrics = metrics
        self._limit = settings.max_body_bytes
        self._body_timeout = settings.body_timeout_s
        self._connector_secrets = [s.value for s in settings.webhook_connector_secrets]
        self._webhook_tokens = tuple(
            t.strip() for t in settings.webhook_token.value.split(",") if t.strip()
        )
        self._allowed = settings.infobip_allowed_ips
        self._hmac_keys = tuple(s.value.encode() for s in settings.infobip_webhook_secrets)
        self._hmac: HmacScheme = settings.infobip_hmac
        self._max_age_s = settings.event_max_age_s
        self._auth_log = _RateLimitedLog()
        self._reject_log = _RateLimitedLog()
        self._basic: tuple[bytes, bytes] | None = (
            (
                settings.infobip_basic_user.value.encode(),
                settings.infobip_basic_password.value.encode(),
            )
            if settings.events_basic_enabled
            else None
        )

    def routes(self) -> list[Route]:
        # /events is declared before /{token}: the token (>= 16 chars) never equals it.
        return [
            Route("/webhooks/infobip/events", self.infobip_events, methods=["POST"]),
            Route("/webhooks/infobip/{token}", self.infobip_legacy, methods=["POST"]),
            Route("/webhooks/ccaas/{connector}", self.ccaas, methods=["POST"]),
        ]

    # ---- Infobip legacy account-configuration webhook

    async def infobip_legacy(self, request: Request) -> Response:
        """One message object, an array, or ``{"messages"|"results": [...]}`` → Ingest."""
        self._check_ip(request)
        token = request.path_params["token"]
        # Compare with every configured token (rotation), never short-circuiting.
        matches = [consteq(token, known) for known in self._webhook_tokens]
        if not any(matches):
            raise HttpError(401, "unauthorized", "invalid webhook token")
        require_json(request)
        doc = parse_json(await read_body(request, self._limit, self._body_timeout))
        items, single = _legacy_items(doc)
        now = now_instant()
        messages: list[common_pb2.Message] = []
        skipped = 0
        for index, item in enumerate(items):
            where = "body" if single else f"messages[{index}]"
            if not isinstance(item, dict):
                raise _bad(where, "must be an object")
            if _is_outbound(item):
                skipped += 1  # our own or the bot's messages: not from the end user
                continue
            messages.append(legacy_message(item, where, now))
        counts = await self._ingest(messages, "legacy")
        counts.ignored += skipped
        self._metrics.count_ingest("legacy", "skipped", skipped)
        self._metrics.webhook_accepted("legacy")
        return JsonResponse(
            {
                "accepted": counts.accepted,
                "duplicates": counts.duplicates,
                "ignored": counts.ignored,
            }
        )

    def _check_ip(self, request: Request) -> None:
        if not self._allowed:
            return
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise HttpError(403, "forbidden", "caller address not allowed") from None
        if not any(address in network for network in self._allowed):
            raise HttpError(403, "forbidden", "caller address not allowed")

    # ---- Infobip Subscriptions (Conversations webhook) events

    async def infobip_events(self, request: Request) -> Response:
        """``{type, timestamp, payload}`` or an array of them.

        INBOUND_MESSAGE → Ingest; CONVERSATION_STATUS_UPDATED with status CLOSED →
        CloseHandover(initiator INFOBIP, with the event time); every other type is
        counted as ignored. An event older than the age window is counted as rejected
        and not acted on (answered 200: sending it again would not make it younger).
        """
        if not self._hmac_keys and self._basic is None:
            self._refused(request, "not_configured")
            raise HttpError(
                401,
                "webhook_auth_not_configured",
                "this route needs INFOBIP_WEBHOOK_SECRET or Basic credentials",
            )
        # What can be checked before reading is checked first: a caller without valid
        # Basic credentials or a well-formed signature header costs no body read.
        basic_ok = self._basic is not None and self._basic_ok(request)
        if not basic_ok:
            self._precheck_signature(request)
        body = await read_body(request, self._limit, self._body_timeout)
        if not basic_ok:
            self._authenticate_events(request, body)
        require_json(request)
        doc = parse_json(body)
        if isinstance(doc, dict):
            events: Sequence[object] = [doc]
            single = True
        elif isinstance(doc, list):
            events, single = doc, False
        else:
            raise HttpError(400, "invalid_body", "body must be an event object or an array")

        # Validate everything first; then run the plan in event order, batching
        # consecutive inbound messages into one Ingest call.
        now = now_instant()
        plan: list[list[common_pb2.Message] | tuple[str, Instant]] = []
        ignored = 0
        too_old = 0
        for index, event in enumerate(events):
            where = "event" if single else f"events[{index}]"
            if not isinstance(event, dict):
                raise _bad(where, "must be an object", "invalid_event")
            kind = event.get("type")
            if not isinstance(kind, str) or not kind:
                raise _bad(where, "type is required", "invalid_event")
            # Required by Infobip's schema; without it the age cannot be judged.
            happened = parse_instant(event.get("timestamp"))
            if happened is None:
                raise _bad(where, "timestamp is required (an ISO 8601 date-time)", "invalid_event")
            payload = event.get("payload")
            age_s = now[0] - happened[0]
            if age_s > self._max_age_s:
                too_old += 1
                self._reject_log.warning(
                    "too_old",
                    "Infobip event refused: %s is %d s old, beyond "
                    "CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S=%d",
                    kind[:64],
                    age_s,
                    self._max_age_s,
                )
                continue
            if kind == "INBOUND_MESSAGE":
                if not isinstance(payload, dict):
                    raise _bad(where, "payload must be an object", "invalid_event")
                message = event_message(event, payload, where, now)
                if plan and isinstance(plan[-1], list):
                    plan[-1].append(message)
                else:
                    plan.append([message])
            elif kind == "CONVERSATION_STATUS_UPDATED":
                if not isinstance(payload, dict):
                    raise _bad(where, "payload must be an object", "invalid_event")
                status = payload.get("status")
                if isinstance(status, str) and status.upper() == "CLOSED":
                    cid = _conversation_id(payload, "id", f"{where}.payload", "invalid_event")
                    plan.append((cid, happened))
                else:
                    ignored += 1
            else:
                ignored += 1

        self._metrics.count_event_rejected("too_old", too_old)
        counts = _Counts(ignored=ignored, rejected=too_old)
        closed = 0
        for step in plan:
            if isinstance(step, list):
                result = await self._ingest(step, "events")
                counts.accepted += result.accepted
                counts.duplicates += result.duplicates
                counts.ignored += result.ignored
                continue
            outcome = await self._close(*step)
            if outcome == "closed":
                closed += 1
            elif outcome == "stale":
                counts.rejected += 1
            else:
                counts.ignored += 1
        self._metrics.webhook_accepted("events")
        return JsonResponse(
            {
                "accepted": counts.accepted,
                "duplicates": counts.duplicates,
                "ignored": counts.ignored,
                "closed": closed,
                "rejected": counts.rejected,
            }
        )

    def _precheck_signature(self, request: Request) -> None:
        """Refuses (401) before the body is read unless the request carries a signature
        header that decodes to a digest of the configured algorithm's size."""
        signature = request.headers.get(self._hmac.header)
        if self._hmac_keys and signature is not None and self._hmac.decode(signature):
            return
        self._authenticate_events(request, b"")  # raises the 401 with its reason

    def _authenticate_events(self, request: Request, body: bytes) -> None:
        signature = request.headers.get(self._hmac.header)
        authorization = request.headers.get("authorization")
        if self._hmac_keys and self._hmac.verify(self._hmac_keys, signature, body):
            return
        if self._basic is not None and self._basic_ok(request):
            return
        if self._hmac_keys and signature is not None:
            reason = "bad_signature"
        elif self._basic is not None and authorization is not None:
            reason = "bad_credentials"
        else:
            reason = "no_credentials"
        self._refused(request, reason)
        headers = {"WWW-Authenticate": 'Basic realm="ccbridge"'} if self._basic else None
        raise HttpError(
            401, "unauthorized", "missing or invalid webhook signature or credentials", headers
        )

    def _refused(self, request: Request, reason: str) -> None:
        """Counts a 401 of the events route and logs it (rate-limited) with the names of
        the authentication headers present: the way to find the header a real account
        signs with (INFOBIP_WEBHOOK_HMAC_HEADER is unconfirmed). Values never."""
        self._metrics.count_auth_failure("infobip_events", reason)
        names = sorted(
            {name.lower()[:64] for name in request.headers if _AUTH_HEADER_HINT.search(name)}
        )[:20]
        self._auth_log.warning(
            reason,
            "Infobip events webhook refused 401 (%s); expected HMAC header %s; "
            "authentication headers present: %s",
            reason,
            self._hmac.header.lower(),
            ", ".join(names) or "none",
        )

    def _basic_ok(self, request: Request) -> bool:
        assert self._basic is not None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self._basic[0])
        password_ok = hmac.compare_digest(password, self._basic[1])
        return bool(sep) and user_ok and password_ok

    async def _close(self, conversation_id: str, happened: Instant) -> str:
        """CloseHandover(INFOBIP, event time): ``closed``; ``none`` when Session has no
        such handover; ``stale`` when the event is older than the handover (Session
        leaves it open)."""
        bind_conversation(conversation_id)
        request = session_pb2.CloseHandoverRequest(
            conversation_id=conversation_id,
            initiator=session_pb2.CLOSE_INITIATOR_INFOBIP,
            reason="infobip_closed",
        )
        request.event_time.seconds, request.event_time.nanos = happened
        try:
            response = await self._backends.call(
                "CloseHandover", self._backends.session.CloseHandover, request
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "none"  # no handover: the bot owned the conversation
            raise http_error_from_grpc(exc, webhook=True) from None
        created = response.handover.created_at
        if (created.seconds, created.nanos) > happened:
            self._metrics.count_event_rejected("close_before_handover")
            self._reject_log.warning(
                "close_before_handover",
                "Infobip CLOSED event older than the current handover ignored",
            )
            return "stale"
        return "closed"

    async def _ingest(self, messages: list[common_pb2.Message], source: str) -> _Counts:
        """Every message of the request to Session.Ingest, in order (batched with
        concurrent requests by the backends; answered only once stored)."""
        counts = _Counts()
        typing = [m for m in messages if m.content_type == TYPING_INDICATOR]
        if typing:
            # The end user is typing: relayed at once or dropped, never stored or queued
            # behind the conversation's messages (services/session/typing_relay.py).
            messages = [m for m in messages if m.content_type != TYPING_INDICATOR]
            counts.ignored += len(typing)
            for indicator in typing:
                await self._end_user_typing(indicator)
        if not messages:
            return counts
        bind_conversation(messages[0].conversation_id)
        queued_by = traceparent()
        if queued_by:
            # Each message continues this request's trace when delivered (it is batched
            # with other requests' messages on the way and at delivery).
            for message in messages:
                message.trace_parent = queued_by
        try:
            results = await self._backends.ingest(messages)
        except grpc.aio.AioRpcError as exc:
            raise http_error_from_grpc(exc, webhook=True) from None
        counts.add_results(results)
        self._metrics.count_ingest(source, "accepted", counts.accepted)
        self._metrics.count_ingest(source, "duplicate", counts.duplicates)
        self._metrics.count_ingest(source, "ignored", counts.ignored)
        log.debug(
            "ingested %d messages: %d accepted, %d duplicates, %d ignored",
            len(messages),
            counts.accepted,
            counts.duplicates,
            counts.ignored,
        )
        return counts

    async def _end_user_typing(self, indicator: common_pb2.Message) -> None:
        """Session.ReportEndUserTyping; a failure drops the indicator (Infobip must not
        send it again: it would only be later)."""
        request = session_pb2.ReportEndUserTypingRequest(
            conversation_id=indicator.conversation_id, typing=True, at=indicator.created_at
        )
        try:
            await self._backends.call(
                "ReportEndUserTyping", self._backends.session.ReportEndUserTyping, request
            )
        except grpc.aio.AioRpcError:
            log.info("end-user typing indicator dropped")

    # ---- CCaaS pushes

    async def ccaas(self, request: Request) -> Response:
        """Forwards lower-cased headers and the raw body to ConnectorService.HandleWebhook;
        the connector verifies (signature, timestamp) and parses. For the ``webhook``
        connector an unsigned or stale request is refused here before its body is read, and
        a wrong signature before it is forwarded when the gateway holds the secret."""
        connector = request.path_params["connector"]
        if not _CONNECTOR_RE.match(connector):
            raise HttpError(404, "unknown_connector", "no such connector")
        lowered = {name.lower(): value for name, value in request.headers.items()}
        if connector == "webhook":
            # The generic contract's signature: headers checked before reading, the
            # HMAC before forwarding when the gateway holds the secret (else Connector).
            now = time.time()
            try:
                check_signature_headers(lowered, now=now)
                body = await read_body(request, self._limit, self._body_timeout)
                if self._connector_secrets:
                    verify_signature(self._connector_secrets, lowered, body, now=now)
            except Unauthenticated as exc:
                self._metrics.count_auth_failure("ccaas_webhook", "bad_signature")
                raise HttpError(401, "unauthorized", str(exc)) from None
        else:
            body = await read_body(request, self._limit, self._body_timeout)
        headers = [
            connector_pb2.Header(name=name.lower(), value=value)
            for name, value in request.headers.items()
        ]
        try:
            response = await self._backends.call(
                "HandleWebhook",
                self._backends.connector.HandleWebhook,
                connector_pb2.HandleWebhookRequest(connector=connector, headers=headers, body=body),
            )
        except grpc.aio.AioRpcError as exc:
            raise http_error_from_grpc(exc, webhook=True) from None
        return JsonResponse(
            {
                "accepted": response.accepted,
                "duplicates": response.duplicates,
                "ignored": response.ignored,
            }
        )
