"""The in-memory world of the Infobip simulator: conversations, messages, tags, metadata,
the account webhook, subscriptions and injected failures.

Every operation is synchronous and runs under one ``threading.Lock`` (the state may be
shared by a uvicorn thread and a test), so no ``await`` happens while it is held.
Operations raise :class:`SimError`, which the app renders in Infobip's error shape.
Timestamps are all produced by :func:`format_ts` (UTC, millis, ``+00:00``), so their
string order is their time order.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ccbridge.services.infobip.webhook_auth import ENCODINGS, HMAC_ALGORITHMS
from ccbridge.simulators.infobip.contract import Contract, default_contract
from ccbridge.simulators.infobip.recorder import Recorder
from ccbridge.simulators.infobip.webhooks import Delivery, WebhookSender

log = logging.getLogger(__name__)

CONTRACT_MODES = ("strict", "warn", "off")

MAX_LIMIT = 999
MAX_TEXT = 4096
CONVERSATION_STATUSES = ("OPEN", "WAITING", "SOLVED", "CLOSED")
PRIORITIES = ("URGENT", "HIGH", "NORMAL", "LOW")
# Channels Create Message accepts (spec enum of the request, plus the post channels used
# in the spec's own examples).
# ConversationEventChannel of the document: the channels with typing events.
EVENT_CHANNELS = frozenset({"LIVE_CHAT", "APPLE_BUSINESS_CHAT", "WHATSAPP"})
REQUEST_CHANNELS = frozenset(
    {
        "SMS",
        "VIBER",
        "FACEBOOK_MESSENGER",
        "WHATSAPP",
        "RCS",
        "LIVE_CHAT",
        "LINE",
        "APPLE_BUSINESS_CHAT",
        "EMAIL",
        "TELEGRAM",
        "INSTAGRAM_MESSAGING",
        "KAKAO_SANGDAM",
        "VIBER_BOT",
        "FACEBOOK_POST",
        "INSTAGRAM_POST",
    }
)
SUBSCRIPTION_EVENTS = frozenset(
    {
        "CONVERSATION_ASSIGNMENT_UPDATED",
        "CONVERSATION_CREATED",
        "CONVERSATION_MESSAGE_DELETED",
        "CONVERSATION_MESSAGE_RECEIVED",
        "CONVERSATION_MESSAGE_UPDATED",
        "CONVERSATION_STATUS_UPDATED",
    }
)
MESSAGE_FIELDS = frozenset(
    {
        "id",
        "channel",
        "from",
        "to",
        "direction",
        "conversationId",
        "authorId",
        "authorType",
        "createdAt",
        "updatedAt",
        "contentType",
    }
)
CONVERSATION_FIELDS = frozenset(
    {
        "id",
        "topic",
        "summary",
        "status",
        "priority",
        "queueId",
        "agentId",
        "createdAt",
        "updatedAt",
        "closedAt",
    }
)
TAG_FIELDS = frozenset({"id", "name", "createdAt", "updatedAt"})
_TAG_NAME = re.compile(r"^[A-Za-z0-9._]{1,100}$")
_SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,255}$")

_CUSTOMER_LINES = (
    "Hi, I need help with my order",
    "It was supposed to arrive yesterday",
    "The order number is in my account",
    "Can I change the delivery address?",
    "That did not help",
    "I would like to talk to a person, please",
)
_BOT_LINES = (
    "Hello! I am the virtual assistant. How can I help?",
    "Sorry to hear that. Let me check the status of your order.",
    "Your order is on its way and should arrive within two days.",
    "You can change the address in your account settings.",
    "I can connect you with an agent.",
)


class SimError(Exception):
    """An API error, rendered as Infobip's ``requestError`` (or status) body."""

    def __init__(
        self,
        status: int,
        message_id: str,
        text: str,
        validation_errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        shape: str = "requestError",
    ) -> None:
        super().__init__(text)
        self.status = status
        self.message_id = message_id
        self.text = text
        self.validation_errors = dict(validation_errors or {})
        self.headers = dict(headers or {})
        self.shape = shape

    def body(self) -> dict[str, Any]:
        if self.shape == "status":
            return {"statusCode": "ERROR", "message": self.text}
        exc: dict[str, Any] = {"messageId": self.message_id, "text": self.text}
        if self.validation_errors:
            exc["validationErrors"] = self.validation_errors
        return {"requestError": {"serviceException": exc}}


def not_found(ident: str) -> SimError:
    return SimError(400, "NOT_FOUND", f"Invalid id '{ident}' given! No such entity exists.")


def closed_error() -> SimError:
    return SimError(400, "BAD_REQUEST", "Closed conversation cannot be changed")


def bad_request(
    errors: Mapping[str, list[str]] | None = None, text: str = "Bad request"
) -> SimError:
    return SimError(400, "BAD_REQUEST", text, errors)


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_ts(value: datetime) -> str:
    """Infobip's response timestamp format, e.g. ``2024-01-01T00:00:00.000+00:00``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+00:00"


def parse_ts(value: str) -> datetime:
    """Parses a date-time query filter (``+0000``, ``+00:00``, ``Z``; naive means UTC)."""
    text = value.strip().replace(" ", "+")  # an unencoded '+' arrives as a space
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def without_nulls(value: Any) -> Any:
    """``value`` without null members, at any depth (the documents declare no field
    nullable; an unset one is absent)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def status_body(message: str) -> dict[str, str]:
    return {"statusCode": "SUCCESS", "message": message}


@dataclass
class Conversation:
    """One conversation and everything attached to it."""

    id: str
    short_id: int
    channel: str
    end_user: str
    business_sender: str
    created_at: datetime
    updated_at: datetime
    status: str = "OPEN"
    priority: str = "NORMAL"
    topic: str | None = None
    summary: str | None = None
    queue_id: str | None = None
    agent_id: str | None = None
    closed_at: datetime | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    agent_messages: list[dict[str, Any]] = field(default_factory=list)
    # Create Conversation Event calls (typing indicators), oldest first.
    events: list[dict[str, Any]] = field(default_factory=list)
    routed: int = 0  # Route Conversation calls (handed back to Infobip's routing)

    def to_api(self) -> dict[str, Any]:
        api = {
            "id": self.id,
            "topic": self.topic,
            "summary": self.summary,
            "status": self.status,
            "priority": self.priority,
            "queueId": self.queue_id,
            "agentId": self.agent_id,
            "createdAt": format_ts(self.created_at),
            "updatedAt": format_ts(self.updated_at),
            "closedAt": format_ts(self.closed_at) if self.closed_at else None,
        }
        # Unset fields are left out: the documents type them string, not nullable.
        return {key: value for key, value in api.items() if value is not None}

    def ensure_open(self) -> None:
        if self.status == "CLOSED":
            raise closed_error()

    def next_created_at(self) -> datetime:
        """Now, but strictly after the latest message (keeps createdAt order total)."""
        current = now_utc()
        if self.messages:
            last = datetime.fromisoformat(self.messages[-1]["createdAt"])
            if current <= last:
                current = last + timedelta(milliseconds=1)
        return current


@dataclass
class SecuritySettings:
    """A Subscriptions API security setting (HMAC or BASIC; credentials never shown)."""

    auth_id: str
    security_type: str
    secret: str = field(default="", repr=False)
    algorithm: str = ""
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass
class Profile:
    """A notification profile: where events go and, optionally, how they are signed."""

    profile_id: str
    notify_url: str
    security: SecuritySettings | None = None

    def to_api(self) -> dict[str, Any]:
        """ProfileResponse."""
        answer: dict[str, Any] = {
            "profileId": self.profile_id,
            "webhook": {"contentType": "application/json", "notifyUrl": self.notify_url},
        }
        if self.security is not None:
            answer["security"] = {"authId": self.security.auth_id}
        return answer

    def id_only(self) -> dict[str, Any]:
        """IdOnlyProfileResponse."""
        answer: dict[str, Any] = {"profileId": self.profile_id}
        if self.security is not None:
            answer["security"] = {"authId": self.security.auth_id}
        return answer


@dataclass
class Subscription:
    """A Subscriptions API subscription on the CUSTOMER_ENGAGEMENT channel; its profile
    is shared with the state's profiles (an update of the profile applies to it)."""

    subscription_id: str
    name: str
    events: list[str]
    profile: Profile

    # The webhook sender's view (webhooks.Security).
    @property
    def notify_url(self) -> str:
        return self.profile.notify_url

    @property
    def security_type(self) -> str:
        return self.profile.security.security_type if self.profile.security else ""

    @property
    def secret(self) -> str:
        return self.profile.security.secret if self.profile.security else ""

    @property
    def algorithm(self) -> str:
        return self.profile.security.algorithm if self.profile.security else ""

    @property
    def username(self) -> str:
        return self.profile.security.username if self.profile.security else ""

    @property
    def password(self) -> str:
        return self.profile.security.password if self.profile.security else ""

    def to_api(self) -> dict[str, Any]:
        """SubscriptionResponse."""
        return {
            "subscriptionId": self.subscription_id,
            "name": self.name,
            "events": list(self.events),
            "profile": self.profile.id_only(),
        }

    def id_only(self) -> dict[str, Any]:
        """IdOnlySubscriptionResponse."""
        return {"subscriptionId": self.subscription_id, "profile": self.profile.id_only()}

    def to_config(self) -> dict[str, Any]:
        """The control API's view: the subscription with its profile's webhook URL."""
        answer = self.to_api()
        answer["profile"] = self.profile.to_api()
        answer["profile"]["security"] = {
            "authId": self.profile.security.auth_id if self.profile.security else None,
            "type": self.security_type or None,
            "algorithm": self.algorithm or None,
        }
        return answer


@dataclass
class Failure:
    """``remaining`` next matching API calls fail with ``status`` (or are only delayed by
    ``delay_ms`` when ``status`` is 0, or lose their connection with ``drop``), before or
    ``when="after"`` the call took effect."""

    remaining: int
    status: int
    retry_after: float | None = None
    method: str = ""
    path_prefix: str = ""
    shape: str = "requestError"
    delay_ms: int = 0
    # "after": the call is carried out (e.g. the message stored) and then fails, the
    # ambiguous failure a client cannot tell from one before the call took effect.
    when: str = "before"
    # Instead of an answer, the connection is dropped mid-answer.
    drop: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method) and path.startswith(
            self.path_prefix or "/"
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "remaining": self.remaining,
            "status": self.status,
            "retry_after": self.retry_after,
            "method": self.method,
            "path_prefix": self.path_prefix,
            "shape": self.shape,
            "delay_ms": self.delay_ms,
            "when": self.when,
            "drop": self.drop,
        }

    def error(self) -> SimError:
        message_id, text = {
            429: ("TOO_MANY_REQUESTS", "Too many requests"),
            500: ("GENERAL_ERROR", "Something went wrong. Please contact support."),
            503: ("GENERAL_ERROR", "Service unavailable"),
            401: ("UNAUTHORIZED", "Invalid login details"),
            403: ("FORBIDDEN", "Forbidden"),
        }.get(self.status, ("GENERAL_ERROR", f"Injected failure {self.status}"))
        headers = {}
        if self.retry_after is not None and self.status in (429, 503):
            retry_after = self.retry_after
            headers["Retry-After"] = (
                str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
            )
        return SimError(self.status, message_id, text, headers=headers, shape=self.shape)


class InfobipSimState:
    """Everything the simulator knows, behind one lock.

    ``webhook_url`` is the legacy account webhook (also settable through Update Account
    Configuration), ``page_delay_ms`` delays every Get Messages page (benchmarks),
    ``webhook_timeout_s`` bounds each webhook POST (sent over real HTTP, with the
    product's :class:`~ccbridge.services.runtime.http_client.HttpClient`).

    Requests are always validated against Infobip's published documents (a violation is
    Infobip's 400). ``contract_mode`` decides what a violation by the simulator's *own*
    answer or webhook does: ``strict`` (tests) answers 500 naming the violation / does
    not send the webhook, ``warn`` (the demo) logs a warning and goes on, ``off`` skips
    the check (benchmarks). Every violation is kept in ``contract_violations``.
    ``record_path`` records every exchange and webhook as JSON lines
    (:mod:`~ccbridge.simulators.infobip.recorder`).
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        page_delay_ms: int = 0,
        webhook_timeout_s: float = 5.0,
        seed: int | None = None,
        contract_mode: str = "strict",
        record_path: str | None = None,
    ) -> None:
        if contract_mode not in CONTRACT_MODES:
            raise ValueError(f"contract_mode must be one of {', '.join(CONTRACT_MODES)}")
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.initial_webhook_url = webhook_url
        self.initial_page_delay_ms = page_delay_ms
        self.contract: Contract = default_contract()
        self.contract_mode = contract_mode
        self.contract_violations: list[dict[str, Any]] = []
        self.recorder = Recorder(record_path) if record_path else None
        self.sender = WebhookSender(timeout_s=webhook_timeout_s)
        self.sender.inspect = self.inspect_delivery
        self._reset_locked()

    async def aclose(self) -> None:
        """Waits briefly for webhooks still being sent and closes their HTTP client (the
        app's lifespan does this; in-process tests call it themselves)."""
        await self.sender.aclose()
        if self.recorder is not None:
            self.recorder.close()

    # -- the published contract -----------------------------------------------------------

    def contract_violation(self, what: str, errors: Mapping[str, list[str]]) -> None:
        """Keeps and logs a violation of the documents by the simulator's own output."""
        with self._lock:
            self.contract_violations.append({"what": what, "errors": dict(errors)})
        level = logging.ERROR if self.contract_mode == "strict" else logging.WARNING
        log.log(level, "simulator %s violates Infobip's published schema: %s", what, dict(errors))

    def inspect_delivery(self, delivery: Delivery) -> bool:
        """Checks (and records) a webhook before it is sent; False: do not send it."""
        errors: dict[str, list[str]] = {}
        if self.contract_mode != "off":
            if delivery.kind == "event":
                errors = self.contract.webhook_errors(delivery.body)
            else:
                errors = self.contract.message_errors(delivery.body)
        if self.recorder is not None:
            self.recorder.write(
                {"kind": "webhook", "webhook": delivery.kind, "body": delivery.body}
            )
        if errors:
            self.contract_violation(f"{delivery.kind} webhook", errors)
            return self.contract_mode != "strict"
        return True

    def _reset_locked(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.profiles: dict[str, Profile] = {}
        self.security: dict[str, SecuritySettings] = {}
        self.failures: list[Failure] = []
        # Media files (``POST /_sim/media``), served at ``GET /_sim/media/{id}``.
        self.media: dict[str, tuple[bytes, str]] = {}
        self.webhook_url: str | None = self.initial_webhook_url
        self.page_delay_ms = self.initial_page_delay_ms
        self.emit_api_events = True
        self.agent_must_be_assignee = False
        # WhatsApp's customer-care window: seconds after the end user's last message in
        # which a free-form reply is taken (None: not enforced). The document does not
        # describe this error; its wording here is the simulator's (unconfirmed).
        self.whatsapp_window_s: int | None = None
        self._short_ids = 100

    def reset(self) -> None:
        """Forgets every conversation, tag, subscription and failure; the webhook URL and
        page delay go back to the values the state was created with."""
        with self._lock:
            self._reset_locked()

    def put_media(self, data: bytes, content_type: str) -> str:
        """Stores a media file; returns its id."""
        with self._lock:
            media_id = self.new_id()
            self.media[media_id] = (data, content_type)
            return media_id

    # -- ids and helpers ------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _get(self, conversation_id: str) -> Conversation:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise not_found(conversation_id)
        return conversation

    # -- control: conversations ----------------------------------------------------------

    def create_conversation(
        self,
        *,
        history: int = 0,
        channel: str = "WHATSAPP",
        end_user: str | None = None,
        business_sender: str | None = None,
        conversation_id: str | None = None,
        status: str = "OPEN",
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        topic: str | None = None,
        agent_id: str | None = None,
        queue_id: str | None = None,
    ) -> Conversation:
        """Creates a conversation with ``history`` messages that alternate between the
        end user (INBOUND, CUSTOMER) and the bot (OUTBOUND, BOT), 5-120 s apart, the
        latest one a minute ago."""
        if history < 0 or history > 1_000_000:
            raise bad_request({"history": ["must be between 0 and 1000000"]})
        if status not in CONVERSATION_STATUSES:
            raise bad_request({"status": [f"must be one of {', '.join(CONVERSATION_STATUSES)}"]})
        for tag in tags:
            if not _TAG_NAME.match(tag):
                raise bad_request({"tags": [f"invalid tag name '{tag}'"]})
        with self._lock:
            cid = conversation_id or self.new_id()
            if cid in self.conversations:
                raise bad_request(text=f"Conversation '{cid}' already exists")
            end_user = end_user or self._default_end_user(channel)
            business_sender = business_sender or self._default_business_sender(channel)
            gaps = [self._rng.randint(5, 120) for _ in range(history)]
            latest = now_utc() - timedelta(minutes=1)
            started = latest - timedelta(seconds=sum(gaps))
            self._short_ids += 1
            conversation = Conversation(
                id=cid,
                short_id=self._short_ids,
                channel=channel,
                end_user=end_user,
                business_sender=business_sender,
                created_at=started,
                updated_at=latest,
                status=status,
                topic=topic,
                agent_id=agent_id,
                queue_id=queue_id,
                metadata=dict(metadata or {}),
            )
            if status == "CLOSED":
                conversation.closed_at = latest
            at = started
            for index in range(history):
                at += timedelta(seconds=gaps[index], milliseconds=self._rng.randint(0, 999))
                conversation.messages.append(self._history_message(conversation, index, at))
            for tag in tags:
                self._ensure_tag_locked(tag)
                if tag not in conversation.tags:
                    conversation.tags.append(tag)
            self.conversations[cid] = conversation
            return conversation

    def _default_end_user(self, channel: str) -> str:
        if channel == "LIVE_CHAT":
            return f"CHAT-{self.new_id()}"
        if channel == "EMAIL":
            return f"customer{self._rng.randint(1000, 9999)}@example.com"
        return f"38598{self._rng.randint(1000000, 9999999)}"

    def _default_business_sender(self, channel: str) -> str:
        if channel == "LIVE_CHAT":
            return "4f1c6e4c-0f0a-4a2e-9d57-1c9a3e3b9c11"
        if channel == "EMAIL":
            return "support@example.com"
        return "447492263897"

    def _history_message(
        self, conversation: Conversation, index: int, at: datetime
    ) -> dict[str, Any]:
        inbound = index % 2 == 0
        turn = index // 2
        if inbound and turn % 25 == 24:
            content_type = "IMAGE"
            content: dict[str, Any] = {
                "url": f"https://example.com/media/{turn}.jpg",
                "caption": "photo of the parcel",
            }
        else:
            content_type = "TEXT"
            lines = _CUSTOMER_LINES if inbound else _BOT_LINES
            content = {"text": lines[turn % len(lines)]}
        return {
            "id": self.new_id(),
            "channel": conversation.channel,
            "from": conversation.end_user if inbound else conversation.business_sender,
            "to": conversation.business_sender if inbound else conversation.end_user,
            "direction": "INBOUND" if inbound else "OUTBOUND",
            "conversationId": conversation.id,
            "authorId": conversation.end_user if inbound else "chatbot",
            "authorType": "CUSTOMER" if inbound else "BOT",
            "createdAt": format_ts(at),
            "updatedAt": format_ts(at),
            "contentType": content_type,
            "content": content,
        }

    def snapshot(self, conversation_id: str) -> dict[str, Any]:
        """What the control API shows of a conversation."""
        with self._lock:
            conversation = self._get(conversation_id)
            return {
                **conversation.to_api(),
                "shortId": str(conversation.short_id),
                "channel": conversation.channel,
                "endUser": conversation.end_user,
                "businessSender": conversation.business_sender,
                "tags": list(conversation.tags),
                "metadata": dict(conversation.metadata),
                "messageCount": len(conversation.messages),
                "agentMessageCount": len(conversation.agent_messages),
                "routed": conversation.routed,
            }

    def create_event(self, conversation_id: str, body: object) -> None:
        """Create Conversation Event: kept (with when it arrived) for the control API."""
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        if body.get("channel") not in EVENT_CHANNELS:
            # The document's own 400 example.
            raise bad_request(text="Channel is not supported for provided event type")
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            conversation.events.append({**dict(body), "receivedAt": format_ts(now_utc())})

    def conversation_events(self, conversation_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(event) for event in self._get(conversation_id).events]

    def agent_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Messages created through Create Message, oldest first."""
        with self._lock:
            return [dict(m) for m in self._get(conversation_id).agent_messages]

    def end_user_message(
        self, conversation_id: str, content_type: str, content: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """Stores an end-user message and returns it with the webhooks to POST.

        A CLOSED conversation is terminal: the message opens a new conversation of the
        same end user, business sender and channel (its id is in the message).
        """
        with self._lock:
            conversation = self._get(conversation_id)
            if conversation.status == "CLOSED":
                self._short_ids += 1
                at = now_utc()
                conversation = Conversation(
                    id=self.new_id(),
                    short_id=self._short_ids,
                    channel=conversation.channel,
                    end_user=conversation.end_user,
                    business_sender=conversation.business_sender,
                    created_at=at,
                    updated_at=at,
                )
                self.conversations[conversation.id] = conversation
            at = conversation.next_created_at()
            message = {
                "id": self.new_id(),
                "channel": conversation.channel,
                "from": conversation.end_user,
                "to": conversation.business_sender,
                "direction": "INBOUND",
                "conversationId": conversation.id,
                "authorId": conversation.end_user,
                "authorType": "CUSTOMER",
                "createdAt": format_ts(at),
                "updatedAt": format_ts(at),
                "contentType": content_type,
                "content": dict(content),
            }
            conversation.messages.append(message)
            conversation.updated_at = at
            deliveries: list[Delivery] = []
            if self.webhook_url:
                deliveries.append(Delivery("legacy", self.webhook_url, dict(message)))
            deliveries.extend(
                self._events_locked(
                    "CONVERSATION_MESSAGE_RECEIVED", "INBOUND_MESSAGE", conversation, message
                )
            )
            return dict(message), deliveries

    def close_from_infobip(self, conversation_id: str) -> tuple[bool, list[Delivery]]:
        """Closes the conversation as an Infobip agent or the platform would; returns
        whether it was already closed and the CONVERSATION_STATUS_UPDATED deliveries."""
        with self._lock:
            conversation = self._get(conversation_id)
            if conversation.status == "CLOSED":
                return True, []
            conversation.status = "CLOSED"
            conversation.closed_at = conversation.updated_at = now_utc()
            return False, self._events_locked(
                "CONVERSATION_STATUS_UPDATED", "CONVERSATION_STATUS_UPDATED", conversation, None
            )

    # -- webhook payloads -----------------------------------------------------------------

    def _events_locked(
        self,
        event: str,
        event_type: str,
        conversation: Conversation,
        message: Mapping[str, Any] | None,
    ) -> list[Delivery]:
        targets = [s for s in self.subscriptions.values() if event in s.events]
        if not targets:
            return []
        body = {
            "type": event_type,
            "timestamp": format_ts(now_utc()),
            "payload": without_nulls(self._event_payload_locked(conversation, message)),
        }
        return [Delivery("event", s.notify_url, body, s) for s in targets]

    def _event_payload_locked(
        self, conversation: Conversation, message: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        last = message or (conversation.messages[-1] if conversation.messages else None)
        payload: dict[str, Any] = {
            "id": conversation.id,
            "shortId": str(conversation.short_id),
            "status": conversation.status,
            "priority": conversation.priority,
            "channel": conversation.channel,
            "direction": (last or {}).get("direction", "INBOUND"),
            "queue": {"id": conversation.queue_id, "name": None},
            "assignee": {
                "id": conversation.agent_id,
                "name": None,
                "email": None,
                "role": "AGENT" if conversation.agent_id else None,
            },
            "customer": {"id": None, "name": None, "personId": None},
            "form": {"id": None, "name": None},
            "tags": [
                {"id": self.tags.get(name, {}).get("id"), "name": name}
                for name in conversation.tags
            ],
            "topic": conversation.topic,
            "summary": conversation.summary,
            "invoker": {"type": "SYSTEM", "id": None, "name": None},
        }
        if message is not None:
            payload["message"] = {
                "id": message["id"],
                "messageId": f"ABG{message['id'].replace('-', '')[:19]}",
                "channel": message["channel"],
                "from": message["from"],
                "to": message["to"],
                "conversationId": conversation.id,
                "createdAt": message["createdAt"],
                "updatedAt": message["updatedAt"],
                "content": message["content"],
            }
        elif last is not None:
            payload["lastMessage"] = {
                key: last[key] for key in ("from", "to", "direction", "channel")
            }
        return payload

    # -- API: conversations ---------------------------------------------------------------

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            return self._get(conversation_id).to_api()

    def list_conversations(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        page, limit, order = parse_paging(query, "id:asc", CONVERSATION_FIELDS)
        ids = set(_multi(query, "conversationIds"))
        queue_ids = set(_multi(query, "queueIds"))
        tag_names = set(_multi(query, "tagNames"))
        status = _single(query, "status")
        priority = _single(query, "priority")
        agent_id = _single(query, "agentId")
        errors: dict[str, list[str]] = {}
        enums = {"status": status, "priority": priority}
        _check_enum(enums, "status", CONVERSATION_STATUSES, errors)
        _check_enum(enums, "priority", PRIORITIES, errors)
        if errors:
            raise bad_request(errors)
        # The documented date filters, each strict ("after"/"before" the instant).
        windows = [
            (field_name, _date_filter(query, name + "After"), _date_filter(query, name + "Before"))
            for name, field_name in (
                ("created", "created_at"),
                ("updated", "updated_at"),
                ("closed", "closed_at"),
            )
        ]

        def in_windows(c: Conversation) -> bool:
            for field_name, after, before in windows:
                moment: datetime | None = getattr(c, field_name)
                if after is not None and (moment is None or moment <= after):
                    return False
                if before is not None and (moment is None or moment >= before):
                    return False
            return True

        with self._lock:
            items = [
                c
                for c in self.conversations.values()
                if (not ids or c.id in ids)
                and (not queue_ids or c.queue_id in queue_ids)
                and (not tag_names or tag_names.intersection(c.tags))
                and (not status or c.status == status)
                and (not priority or c.priority == priority)
                and (not agent_id or c.agent_id == agent_id)
                and in_windows(c)
            ]
            rows = [c.to_api() for c in items]
        return {
            "conversations": paginate(rows, page, limit, order),
            "pagination": pagination(len(rows), page, limit, order),
        }

    def update_conversation(
        self, conversation_id: str, body: object, *, partial: bool
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """PUT (full update) or PATCH (partial). Returns the conversation and the
        CONVERSATION_STATUS_UPDATED deliveries when the status changed."""
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        errors: dict[str, list[str]] = {}
        _check_enum(body, "status", CONVERSATION_STATUSES, errors)
        _check_enum(body, "priority", PRIORITIES, errors)
        for key, limit in (("topic", 1000), ("summary", 4000), ("queueId", 255), ("agentId", 255)):
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                errors[key] = [f"must be a string of at most {limit} characters"]
        if errors:
            raise bad_request(errors)
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            before = conversation.status

            def pick(key: str, current: Any, default: Any) -> Any:
                if key in body:
                    return body[key] if body[key] is not None else default
                return current if partial else default

            conversation.topic = pick("topic", conversation.topic, None)
            conversation.summary = pick("summary", conversation.summary, None)
            conversation.queue_id = pick("queueId", conversation.queue_id, None)
            conversation.agent_id = pick("agentId", conversation.agent_id, None)
            conversation.status = pick("status", conversation.status, "OPEN")
            conversation.priority = pick("priority", conversation.priority, "NORMAL")
            conversation.updated_at = now_utc()
            deliveries: list[Delivery] = []
            if conversation.status != before:
                if conversation.status == "CLOSED":
                    conversation.closed_at = conversation.updated_at
                if self.emit_api_events:
                    deliveries = self._events_locked(
                        "CONVERSATION_STATUS_UPDATED",
                        "CONVERSATION_STATUS_UPDATED",
                        conversation,
                        None,
                    )
            return conversation.to_api(), deliveries

    def route_conversation(self, conversation_id: str) -> dict[str, Any]:
        """Route Conversation: drops the assignee and records the routing request
        (``routed``); a closed conversation cannot be routed (400)."""
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            conversation.agent_id = None
            conversation.routed += 1
            conversation.updated_at = now_utc()
            return conversation.to_api()

    def assign(self, conversation_id: str, body: object) -> dict[str, Any]:
        """Change Conversation Assignment (``PUT .../assignee``)."""
        agent_id = body.get("agentId") if isinstance(body, Mapping) else None
        if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 255:
            raise bad_request({"agentId": ["must be a string of 1-255 characters"]})
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            conversation.agent_id = agent_id
            conversation.updated_at = now_utc()
            return conversation.to_api()

    def unassign(self, conversation_id: str) -> dict[str, Any]:
        """Unassign Conversation Agent (``DELETE .../assignee``)."""
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            conversation.agent_id = None
            conversation.updated_at = now_utc()
            return conversation.to_api()

    # -- API: messages --------------------------------------------------------------------

    def list_messages(
        self, conversation_id: str, query: Mapping[str, Sequence[str]]
    ) -> dict[str, Any]:
        page, limit, order = parse_paging(query, "id:asc", MESSAGE_FIELDS)
        message_ids = set(_multi(query, "messageIds"))
        channel = _single(query, "channel")
        direction = _single(query, "direction")
        after = _date_filter(query, "createdAfter")
        before = _date_filter(query, "createdBefore")
        with self._lock:
            conversation = self._get(conversation_id)
            rows = [
                m
                for m in conversation.messages
                if (not message_ids or m["id"] in message_ids)
                and (not channel or m["channel"] == channel)
                and (not direction or m["direction"] == direction)
                and (after is None or datetime.fromisoformat(m["createdAt"]) > after)
                and (before is None or datetime.fromisoformat(m["createdAt"]) < before)
            ]
            selected = paginate(rows, page, limit, order)
            return {
                "messages": [dict(m) for m in selected],
                "pagination": pagination(len(rows), page, limit, order),
            }

    def create_message(
        self, conversation_id: str, body: object, agent_id: str | None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        errors: dict[str, list[str]] = {}
        for key in ("channel", "from", "to", "contentType"):
            value = body.get(key)
            if not isinstance(value, str) or not value:
                errors[key] = ["must not be null"]
        content = body.get("content")
        if not isinstance(content, Mapping):
            errors["content"] = ["must not be null"]
        else:
            text = content.get("text")
            if body.get("contentType") == "TEXT" and (not isinstance(text, str) or not text):
                errors["content.text"] = ["must not be blank"]
            if isinstance(text, str) and len(text) > MAX_TEXT:
                errors["content"] = [f"size cannot be longer than {MAX_TEXT} characters."]
        channel = body.get("channel")
        if isinstance(channel, str) and channel and channel not in REQUEST_CHANNELS:
            errors["channel"] = [f"unsupported channel '{channel}'"]
        if errors:
            raise bad_request(errors)
        assert isinstance(content, Mapping)
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            # Infobip's Conversations messages documentation: the header is required on
            # a conversation assigned to an agent and refused on an unassigned one. The
            # wording of these two errors is the simulator's (not published).
            if conversation.agent_id and not agent_id:
                raise bad_request(
                    {"x-agent-id": ["must be present: the conversation is assigned to an agent"]}
                )
            if agent_id and not conversation.agent_id:
                raise bad_request(
                    {"x-agent-id": ["must be absent: the conversation is not assigned"]}
                )
            if body["channel"] == "WHATSAPP" and self.whatsapp_window_s is not None:
                last = max(
                    (
                        parse_ts(m["createdAt"])
                        for m in conversation.messages
                        if m.get("direction") == "INBOUND"
                    ),
                    default=None,
                )
                if last is None or (now_utc() - last).total_seconds() > self.whatsapp_window_s:
                    raise bad_request(
                        text="Outside of the customer care window: the end user's last "
                        "message is older than 24 hours; only a template can be sent"
                    )
            # Whether it must name the assignee is not published: a setting, off by default.
            if self.agent_must_be_assignee and agent_id and agent_id != conversation.agent_id:
                raise bad_request(
                    {"x-agent-id": ["must be the id of the agent the conversation is assigned to"]}
                )
            at = conversation.next_created_at()
            message = {
                "id": self.new_id(),
                "channel": body["channel"],
                "from": body["from"],
                "to": body["to"],
                "direction": "OUTBOUND",
                "conversationId": conversation.id,
                "authorId": agent_id or "",
                "authorType": "AGENT" if agent_id else "SYSTEM",
                "createdAt": format_ts(at),
                "updatedAt": format_ts(at),
                "contentType": body["contentType"],
                "content": dict(content),
            }
            conversation.messages.append(message)
            # receivedMonotonic: CLOCK_MONOTONIC is system-wide, so benchmarks in other
            # processes can time the relay agent reply → Create Message.
            conversation.agent_messages.append(
                {**message, "agentIdHeader": agent_id, "receivedMonotonic": time.monotonic()}
            )
            conversation.updated_at = at
            return dict(message)

    # -- API: tags ------------------------------------------------------------------------

    def _ensure_tag_locked(self, name: str) -> bool:
        if name in self.tags:
            return False
        stamp = format_ts(now_utc())
        self.tags[name] = {
            "id": self.new_id(),
            "name": name,
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        return True

    def create_tag(self, body: object) -> dict[str, Any]:
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not _TAG_NAME.match(name):
            raise bad_request(
                {
                    "name": [
                        "Numbers, uppercase and lowercase letters, along with "
                        "'.' and '_' are allowed (1-100 characters)"
                    ]
                }
            )
        with self._lock:
            if not self._ensure_tag_locked(name):
                raise bad_request(text="Tag already exists.")
            tag = self.tags[name]
            return {"name": tag["name"], "createdAt": tag["createdAt"]}

    def add_tag(self, conversation_id: str, body: object) -> dict[str, str]:
        name = body.get("tagName") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not name or len(name) > 100:
            raise bad_request({"tagName": ["must not be blank"]})
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            if name not in self.tags:
                raise SimError(400, "NOT_FOUND", f"Invalid tagName '{name}'")
            if name not in conversation.tags:
                conversation.tags.append(name)
                conversation.updated_at = now_utc()
        return status_body("Tag added to conversation successfully.")

    def remove_tag(self, conversation_id: str, name: str) -> dict[str, str]:
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            if name not in conversation.tags:
                raise SimError(400, "NOT_FOUND", f"Invalid tagName '{name}'")
            conversation.tags.remove(name)
        return status_body("Tag removed from conversation successfully.")

    def delete_tag(self, name: str) -> dict[str, str]:
        with self._lock:
            if self.tags.pop(name, None) is None:
                raise SimError(400, "NOT_FOUND", f"Invalid tagName '{name}'")
            for conversation in self.conversations.values():
                if name in conversation.tags:
                    conversation.tags.remove(name)
        return status_body("Tag deleted successfully.")

    def list_tags(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        page, limit, order = parse_paging(query, "id:asc", TAG_FIELDS)
        conversation_id = _single(query, "conversationId")
        name = (_single(query, "name") or "").lower()
        with self._lock:
            if conversation_id:
                names: Iterable[str] = self._get(conversation_id).tags
            else:
                names = self.tags
            rows = [dict(self.tags[n]) for n in names if n in self.tags and name in n.lower()]
        return {
            "tags": paginate(rows, page, limit, order),
            "pagination": pagination(len(rows), page, limit, order),
        }

    # -- API: metadata --------------------------------------------------------------------

    def get_metadata(self, conversation_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._get(conversation_id).metadata)

    def set_metadata(self, conversation_id: str, body: object, *, merge: bool) -> dict[str, str]:
        if not isinstance(body, Mapping) or not body:
            raise bad_request({"metadata": ["must be a JSON object with at least one property"]})
        values: dict[str, str] = {}
        for key, value in body.items():
            if isinstance(value, (dict, list)) or value is None:
                raise bad_request({str(key): ["must be a string, number or boolean"]})
            values[str(key)] = value if isinstance(value, str) else _scalar(value)
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            if merge:
                conversation.metadata.update(values)
            else:
                conversation.metadata = values
            conversation.updated_at = now_utc()
        return status_body("Metadata added to conversation successfully.")

    def delete_metadata(self, conversation_id: str) -> dict[str, str]:
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ensure_open()
            conversation.metadata = {}
        return status_body("Metadata deleted successfully.")

    # -- API: account, subscriptions ------------------------------------------------------

    def set_account_configuration(self, body: object) -> dict[str, str]:
        url = body.get("webhookUrl") if isinstance(body, Mapping) else None
        if not isinstance(url, str) or len(url) > 255:
            raise bad_request({"webhookUrl": ["must be a string of at most 255 characters"]})
        with self._lock:
            self.webhook_url = url or None
        return status_body("Account configuration successfully updated.")

    def _subscription_fields(
        self, body: Mapping[str, Any], errors: dict[str, list[str]]
    ) -> tuple[str, list[str]]:
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 255):
            errors["name"] = ["size must be between 1 and 255"]
        events = body.get("events")
        if (
            not isinstance(events, list)
            or len(events) > 255
            or not all(isinstance(e, str) and e in SUBSCRIPTION_EVENTS for e in events)
        ):
            errors["events"] = [f"must be a list of {', '.join(sorted(SUBSCRIPTION_EVENTS))}"]
            events = []
        return (name if isinstance(name, str) else ""), [str(e) for e in events]

    def _new_security(
        self, security: Mapping[str, Any], errors: dict[str, list[str]], where: str
    ) -> SecuritySettings | None:
        """SecurityRequest: only ``authId`` reuses an existing setting; with ``type`` and
        ``credentials`` a new one is made (built here, stored by the caller)."""
        auth_id = security.get("authId")
        if not isinstance(auth_id, str) or not _SUBSCRIPTION_ID.match(auth_id):
            errors[f"{where}.authId"] = ["must be 1-255 characters that need no URL encoding"]
            return None
        kind = security.get("type")
        if kind is None and "credentials" not in security:
            existing = self.security.get(auth_id)
            if existing is None:
                errors[f"{where}.authId"] = ["no security settings with this ID"]
            return existing
        credentials = security.get("credentials")
        credentials = credentials if isinstance(credentials, Mapping) else {}

        def text(key: str) -> str:
            value = credentials.get(key)
            if not isinstance(value, str) or not 1 <= len(value) <= 255:
                errors[f"{where}.credentials.{key}"] = ["size must be between 1 and 255"]
                return ""
            return value

        if kind == "HMAC":
            algorithm = credentials.get("algorithm")
            if algorithm not in HMAC_ALGORITHMS:
                errors[f"{where}.credentials.algorithm"] = [
                    f"must be one of {', '.join(HMAC_ALGORITHMS)}"
                ]
            return SecuritySettings(
                auth_id, "HMAC", secret=text("secretKey"), algorithm=str(algorithm)
            )
        if kind == "BASIC":
            return SecuritySettings(
                auth_id, "BASIC", username=text("username"), password=text("password")
            )
        errors[f"{where}.type"] = ["the simulator supports HMAC and BASIC"]
        return None

    def _new_profile(
        self, profile: Mapping[str, Any], errors: dict[str, list[str]], where: str
    ) -> tuple[Profile | None, bool]:
        """ProfileRequest: only ``profileId`` reuses an existing profile; otherwise a new
        one is built. Returns (profile, whether it is new)."""
        profile_id = profile.get("profileId")
        if not isinstance(profile_id, str) or not _SUBSCRIPTION_ID.match(profile_id):
            errors[f"{where}.profileId"] = ["must be 1-255 characters that need no URL encoding"]
            return None, False
        if set(profile) == {"profileId"}:
            existing = self.profiles.get(profile_id)
            if existing is None:
                errors[f"{where}.profileId"] = ["no notification profile with this ID"]
            return existing, False
        webhook = profile.get("webhook")
        notify_url = webhook.get("notifyUrl") if isinstance(webhook, Mapping) else None
        if (
            not isinstance(notify_url, str)
            or len(notify_url) > 512
            or not notify_url.startswith(("http://", "https://"))
        ):
            errors[f"{where}.webhook.notifyUrl"] = ["must be an http(s) URL of at most 512"]
        security_body = profile.get("security")
        security = None
        if isinstance(security_body, Mapping):
            security = self._new_security(security_body, errors, f"{where}.security")
        elif security_body is not None:
            errors[f"{where}.security"] = ["must be an object"]
        return Profile(profile_id, str(notify_url), security), True

    def _store_profile_locked(self, profile: Profile) -> None:
        if profile.profile_id in self.profiles:
            raise bad_request(text="Notification profile with the given ID already exists.")
        security = profile.security
        if security is not None and self.security.get(security.auth_id) is not security:
            if security.auth_id in self.security:
                raise bad_request(text="Security settings with the given ID already exist.")
            self.security[security.auth_id] = security
        self.profiles[profile.profile_id] = profile

    def create_subscription(self, body: object) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        errors: dict[str, list[str]] = {}
        sid = body.get("subscriptionId")
        if not isinstance(sid, str) or not _SUBSCRIPTION_ID.match(sid):
            errors["subscriptionId"] = ["must be 1-255 characters that need no URL encoding"]
        name, events = self._subscription_fields(body, errors)
        profile_body = body.get("profile")
        with self._lock:
            profile, new = (
                self._new_profile(profile_body, errors, "profile")
                if isinstance(profile_body, Mapping)
                else (None, False)
            )
            if profile is None and "profile" not in "".join(errors):
                errors["profile"] = ["must not be null"]
            if errors:
                raise bad_request(errors)
            assert profile is not None and isinstance(sid, str)
            if sid in self.subscriptions:
                raise bad_request(text="Subscription with the given ID already exists.")
            if new:
                self._store_profile_locked(profile)
            subscription = Subscription(sid, name or sid, events, profile)
            self.subscriptions[sid] = subscription
            return subscription.id_only()

    def update_subscription(self, subscription_id: str, body: object) -> dict[str, Any]:
        """Update Subscription (NoIdSubscriptionRequest): name, events, and the profile by
        ID only."""
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        errors: dict[str, list[str]] = {}
        name, events = self._subscription_fields(body, errors)
        profile_body = body.get("profile")
        profile_id = profile_body.get("profileId") if isinstance(profile_body, Mapping) else None
        if not isinstance(profile_id, str) or not profile_id:
            errors["profile.profileId"] = ["must not be null"]
        if errors:
            raise bad_request(errors)
        with self._lock:
            subscription = self.subscriptions.get(subscription_id)
            if subscription is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            profile = self.profiles.get(str(profile_id))
            if profile is None:
                raise bad_request({"profile.profileId": ["no notification profile with this ID"]})
            subscription.name = name or subscription.name
            subscription.events = events
            subscription.profile = profile
            return subscription.id_only()

    def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        with self._lock:
            subscription = self.subscriptions.get(subscription_id)
            if subscription is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            return subscription.to_api()

    def list_subscriptions(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """Get Subscriptions: ``page`` (0..N), ``size`` (1..100, default 20), newest first."""
        errors: dict[str, list[str]] = {}
        page = _int_param(query, "page", 0, errors)
        size = _int_param(query, "size", 20, errors)
        if page < 0:
            errors["page"] = ["must be greater than or equal to 0"]
        if not 1 <= size <= 100:
            errors["size"] = ["must be between 1 and 100"]
        if errors:
            raise bad_request(errors)
        with self._lock:
            rows = [s.to_api() for s in reversed(self.subscriptions.values())]
        total = len(rows)
        return {
            "results": rows[page * size : (page + 1) * size],
            "paging": {
                "page": page,
                "size": size,
                "totalPages": (total + size - 1) // size,
                "totalResults": total,
            },
        }

    def delete_subscription(self, subscription_id: str) -> dict[str, Any]:
        with self._lock:
            subscription = self.subscriptions.pop(subscription_id, None)
            if subscription is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            return subscription.id_only()

    def create_profile(self, body: object) -> dict[str, Any]:
        """Create Notification Profile (ProfileRequest with webhook and security)."""
        if not isinstance(body, Mapping) or set(body) <= {"profileId"}:
            raise bad_request({"webhook": ["must not be null"]})
        errors: dict[str, list[str]] = {}
        with self._lock:
            profile, _ = self._new_profile(body, errors, "")
            if errors or profile is None:
                raise bad_request({key.lstrip("."): value for key, value in errors.items()})
            self._store_profile_locked(profile)
            return profile.id_only()

    def get_profile(self, profile_id: str) -> dict[str, Any]:
        with self._lock:
            profile = self.profiles.get(profile_id)
            if profile is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            return profile.to_api()

    def delete_profile(self, profile_id: str) -> dict[str, Any]:
        """Refused while a subscription uses the profile (the simulator's choice: Infobip
        does not document it)."""
        with self._lock:
            profile = self.profiles.get(profile_id)
            if profile is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            if any(s.profile is profile for s in self.subscriptions.values()):
                raise bad_request(text="Notification profile is used by a subscription.")
            del self.profiles[profile_id]
            return profile.id_only()

    def delete_security(self, auth_id: str) -> dict[str, str]:
        """Refused while a profile uses the settings (the simulator's choice)."""
        with self._lock:
            security = self.security.get(auth_id)
            if security is None:
                raise SimError(404, "NOT_FOUND", "Not found")
            if any(p.security is security for p in self.profiles.values()):
                raise bad_request(text="Security settings are used by a notification profile.")
            del self.security[auth_id]
            return {"authId": auth_id}

    # -- failure injection ----------------------------------------------------------------

    def inject_failure(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)

    def clear_failures(self) -> None:
        with self._lock:
            self.failures.clear()

    def take_failure(self, method: str, path: str) -> Failure | None:
        """Consumes one injected failure matching this call, if any."""
        with self._lock:
            for failure in self.failures:
                if failure.matches(method, path):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self.failures.remove(failure)
                    return failure
        return None

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {
                "webhook_url": self.webhook_url,
                "page_delay_ms": self.page_delay_ms,
                "emit_api_events": self.emit_api_events,
                "agent_must_be_assignee": self.agent_must_be_assignee,
                "whatsapp_window_s": self.whatsapp_window_s,
                "hmac_header": self.sender.hmac_header,
                "hmac_encoding": self.sender.hmac_encoding,
                "subscriptions": [s.to_config() for s in self.subscriptions.values()],
                "failures": [f.to_api() for f in self.failures],
                "contract": {
                    "mode": self.contract_mode,
                    "violations": list(self.contract_violations),
                },
            }

    def set_config(self, body: Mapping[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        delay = body.get("page_delay_ms")
        if delay is not None and (not isinstance(delay, int) or delay < 0):
            errors["page_delay_ms"] = ["must be a non-negative integer"]
        url = body.get("webhook_url", "")
        if url is not None and not isinstance(url, str):
            errors["webhook_url"] = ["must be a string or null"]
        emit = body.get("emit_api_events")
        if emit is not None and not isinstance(emit, bool):
            errors["emit_api_events"] = ["must be a boolean"]
        header = body.get("hmac_header")
        if header is not None and (not isinstance(header, str) or not header.strip()):
            errors["hmac_header"] = ["must be a header name"]
        encoding = body.get("hmac_encoding")
        if encoding is not None and encoding not in ENCODINGS:
            errors["hmac_encoding"] = [f"must be one of {', '.join(ENCODINGS)}"]
        must_match = body.get("agent_must_be_assignee")
        if must_match is not None and not isinstance(must_match, bool):
            errors["agent_must_be_assignee"] = ["must be a boolean"]
        window = body.get("whatsapp_window_s")
        if window is not None and (
            not isinstance(window, int) or isinstance(window, bool) or window < 1
        ):
            errors["whatsapp_window_s"] = ["must be a positive integer (seconds) or null"]
        if errors:
            raise bad_request(errors)
        with self._lock:
            if "whatsapp_window_s" in body:
                self.whatsapp_window_s = window
            if delay is not None:
                self.page_delay_ms = delay
            if "webhook_url" in body:
                self.webhook_url = url or None
            if emit is not None:
                self.emit_api_events = emit
            if header is not None:
                self.sender.hmac_header = header.strip()
            if encoding is not None:
                self.sender.hmac_encoding = encoding
            if must_match is not None:
                self.agent_must_be_assignee = must_match
        return self.config()


# -- paging -----------------------------------------------------------------------------


def parse_paging(
    query: Mapping[str, Sequence[str]], default_order: str, fields: frozenset[str]
) -> tuple[int, int, tuple[str, bool]]:
    """``page`` (≥0, default 0), ``limit`` (1..999, default 10), ``orderBy``
    (``field:asc|desc``); anything else is a 400."""
    errors: dict[str, list[str]] = {}
    page = _int_param(query, "page", 0, errors)
    limit = _int_param(query, "limit", 10, errors)
    if page < 0:
        errors["page"] = ["must be greater than or equal to 0"]
    if limit < 1 or limit > MAX_LIMIT:
        errors["limit"] = [f"must be between 1 and {MAX_LIMIT}"]
    raw_order = _single(query, "orderBy") or default_order
    name, _, direction = raw_order.partition(":")
    direction = (direction or "asc").lower()
    if name not in fields or direction not in ("asc", "desc"):
        errors["orderBy"] = [
            f"must be field:asc or field:desc, field one of {', '.join(sorted(fields))}"
        ]
    if errors:
        raise bad_request(errors)
    return page, limit, (name, direction == "desc")


def paginate(
    rows: list[dict[str, Any]], page: int, limit: int, order: tuple[str, bool]
) -> list[dict[str, Any]]:
    name, descending = order
    ordered = sorted(
        rows, key=lambda row: (str(row.get(name) or ""), str(row.get("id"))), reverse=descending
    )
    return ordered[page * limit : (page + 1) * limit]


def pagination(total: int, page: int, limit: int, order: tuple[str, bool]) -> dict[str, Any]:
    return {
        "totalItems": total,
        "page": page,
        "limit": limit,
        "orderBy": f"{order[0]}:{'desc' if order[1] else 'asc'}",
    }


def _multi(query: Mapping[str, Sequence[str]], name: str) -> list[str]:
    values = [*query.get(name, ()), *query.get(name + "[]", ())]
    return [part for value in values for part in value.split(",") if part]


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_param(
    query: Mapping[str, Sequence[str]], name: str, default: int, errors: dict[str, list[str]]
) -> int:
    raw = _single(query, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        errors[name] = ["must be an integer"]
        return default


def _date_filter(query: Mapping[str, Sequence[str]], name: str) -> datetime | None:
    raw = _single(query, name)
    if not raw:
        return None
    try:
        return parse_ts(raw)
    except ValueError:
        raise bad_request(
            {name: ["must be a date-time like 2024-01-01T00:00:00.000+0000"]}
        ) from None


def _check_enum(
    body: Mapping[str, Any], key: str, allowed: tuple[str, ...], errors: dict[str, list[str]]
) -> None:
    value = body.get(key)
    if value is not None and value not in allowed:
        errors[key] = [f"must be one of {', '.join(allowed)}"]


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
