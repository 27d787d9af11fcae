"""The Genesys Cloud Open Messaging (``genesys``) connector (docs/connectors/genesys.md).

Bridge → Genesys: every end-user message is an inbound open message
(``POST /api/v2/conversations/messages/{integrationId}/inbound/open/message``, the
``OpenInboundNormalizedMessage`` of Genesys's SDK) from the end user's ``channel.from``
identity with the Infobip message id as ``channel.messageId``. There is no "create case":
the first inbound message (the transcript's first part) creates the Genesys conversation.
The transcript goes as the first inbound messages, ``[time] role: text`` lines in parts
of at most ``CCBRIDGE_GENESYS_TRANSCRIPT_CHUNK_CHARS`` characters; routing, tags and the
Infobip metadata ride in the first message's ``metadata``. Calls carry an OAuth
client-credentials token, cached and renewed before it expires (and once on a 401).

Genesys → bridge: the integration's outbound notification webhook (``OpenNormalizedMessage``
bodies) verified with ``X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(raw body)>``:
agent ``Text`` messages (with attachments) and ``Typing`` events. Receipts are counted
as ignored.

Close: the webhook has no "agent closed" event. The adapter runs in poll mode and reads
each open case's conversation (``GET /api/v2/conversations/messages/{conversationId}``,
``MessageConversation``): once the customer participant is disconnected, or every agent
participant is while no other one is active, the case is closed. An Infobip-side close
disconnects the customer participant
(``PATCH …/{conversationId}/participants/{participantId}`` ``{"state": "disconnected"}``).

The case's external id is the end user's ``channel.from`` id: it is what the outbound
webhook names (``channel.to.id``); the Genesys conversation id is kept in Redis. This
module never logs message text or secrets.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.genesys_settings import GenesysSettings
from ccbridge.services.connector.base import (
    Adapter,
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    CaseEvent,
    CaseToOpen,
    OpenedCase,
    WebhookBatch,
    gather_all,
    webhook_json,
)
from ccbridge.services.connector.case_text import (
    media_url,
    message_text,
    transcript_lines,
)
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.http_client import HttpAnswer, HttpClient, HttpFailure
from ccbridge.services.runtime.redis import redis_text

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
POLL_CONCURRENCY = 8
# Clock difference allowed between Genesys's participant start times and the bridge's.
START_SLACK_S = 60.0
# Infobip channels whose end-user address is a phone number (idType Phone); e-mail is
# Email; anything else (ids of chat apps) is Opaque.
PHONE_CHANNELS = frozenset({"SMS", "MMS", "WHATSAPP", "VIBER", "VIBER_BM", "RCS", "VOICE"})
# Genesys attachment mediaType → Infobip content type of an agent's file.
MEDIA_TYPES = {"Image": "IMAGE", "Video": "VIDEO", "Audio": "AUDIO", "File": "DOCUMENT"}
# Infobip content type of an end user's file → Genesys attachment mediaType.
_TO_MEDIA = {"IMAGE": "Image", "VIDEO": "Video", "AUDIO": "Audio", "VOICE": "Audio"}
# Participant states after which a participant takes no further part.
ENDED = frozenset({"disconnected", "terminated"})
_ACTIVE_PURPOSES = frozenset({"agent", "user", "acd", "ivr", "workflow", "external"})


def id_type(channel: str, end_user: str) -> Literal["Email", "Phone", "Opaque"]:
    """The ``channel.from.idType`` of an end user (OpenMessagingFromRecipient's enum)."""
    if channel.upper() == "EMAIL" or "@" in end_user:
        return "Email"
    if channel.upper() in PHONE_CHANNELS:
        return "Phone"
    return "Opaque"


def iso_time(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds, as the API's examples write ``channel.time``."""
    moment = datetime.fromtimestamp(max(seconds, 0.0), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Genesys sends with ``body``."""
    digest = hmac.digest(secret.encode(), body, "sha256")
    return "sha256=" + base64.b64encode(digest).decode()


def verify_signature(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> None:
    """Raises Unauthenticated unless ``X-Hub-Signature-256`` matches one of ``secrets``
    (compared in constant time). ``headers`` must have lower-case names."""
    offered = headers.get(SIGNATURE_HEADER.lower(), "").strip()
    if not offered:
        raise Unauthenticated(f"missing {SIGNATURE_HEADER} header")
    ok = False
    for secret in secrets:
        # No early exit: the work done does not depend on which secret matched.
        ok |= hmac.compare_digest(sign(secret, body).encode(), offered.encode())
    if not ok:
        raise Unauthenticated("bad signature")


def transcript_chunks(case: CaseToOpen, limit: int) -> list[str]:
    """The transcript as texts of at most ``limit`` characters, each starting with a
    heading line; a single line longer than the limit is cut into pieces."""
    heading = "Transcript (times UTC, oldest first)"
    if case.transcript_truncated:
        heading += ", older messages left out"
    lines = transcript_lines(case.transcript) or ["(the end user wrote nothing before)"]
    budget = limit - len(heading) - 16  # room for the heading and " (part n/m)"
    pieces: list[str] = []
    for line in lines:
        while len(line) > budget:
            pieces.append(line[:budget])
            line = "    " + line[budget:]
        pieces.append(line)
    chunks: list[list[str]] = [[]]
    size = 0
    for piece in pieces:
        if chunks[-1] and size + len(piece) + 1 > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(piece)
        size += len(piece) + 1
    total = len(chunks)
    return [
        f"{heading} (part {i}/{total})\n" + "\n".join(chunk)
        for i, chunk in enumerate(chunks, start=1)
    ]


def open_metadata(case: CaseToOpen) -> dict[str, str]:
    """The first message's ``metadata`` (``dict(str, str)`` in the SDK model): routing,
    tags and the Infobip conversation's metadata, for the Architect flow to read."""
    meta = {
        "ccbridge.conversationId": case.conversation_id,
        "ccbridge.channel": case.channel,
        "ccbridge.queue": case.queue,
        "ccbridge.priority": str(case.priority),
        "ccbridge.skills": ",".join(case.skills),
        "ccbridge.rule": case.rule,
        "ccbridge.tags": ",".join(case.tags),
    }
    meta.update({f"infobip.{k}": str(v) for k, v in case.metadata.items()})
    return {k: v for k, v in meta.items() if v}


def message_body(
    end_user: str,
    kind: str,
    message_id: str,
    text: str,
    at: float,
    *,
    attachment: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ``OpenInboundNormalizedMessage``."""
    body: dict[str, Any] = {
        "channel": {
            "from": {"id": end_user, "idType": kind, "nickname": end_user},
            "messageId": message_id,
            "time": iso_time(at),
        },
        "text": text,
    }
    if attachment:
        body["content"] = [{"attachment": dict(attachment)}]
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def customer_body(
    end_user: str, kind: str, message: common_pb2.Message, now: float
) -> dict[str, Any]:
    """An end user's Infobip message as an inbound open message: text as written, every
    other type as ``[<type>] …`` text (as the RT connector writes it), and a file's link
    also as the message's attachment (Image/Video/Audio/File)."""
    created = message.created_at
    at = created.seconds + created.nanos / 1e9 if created.seconds else now
    text = message_text(message)
    attachment = None
    url = media_url(message)
    if url:
        attachment = {"mediaType": _TO_MEDIA.get(message.content_type.upper(), "File"), "url": url}
    return message_body(end_user, kind, message.id, text, at, attachment=attachment)


# --- the outbound webhook ---------------------------------------------------------------


def _str(item: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidArgument(f"{where}: {key} must be a non-empty string")
    return value


def _time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _agent_attachments(content: object, where: str) -> tuple[common_pb2.Attachment, ...]:
    if content is None:
        return ()
    if not isinstance(content, list):
        raise InvalidArgument(f"{where}: content must be an array")
    found = []
    for index, item in enumerate(content):
        here = f"{where} content[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{here}: must be an object")
        attachment = item.get("attachment")
        if item.get("contentType") != "Attachment" or not isinstance(attachment, dict):
            continue  # other content (buttons, cards) has no Infobip counterpart: text only
        url = _str(attachment, "url", f"{here} attachment")
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"{here} attachment: url must be an http(s) URL")
        kind = MEDIA_TYPES.get(str(attachment.get("mediaType")))
        if kind is None:
            continue  # "Link": the URL is in the text
        found.append(
            common_pb2.Attachment(
                url=url,
                content_type=kind,
                name=str(attachment.get("filename") or "")[:255],
                caption=str(attachment.get("text") or "")[:4096],
                size=int(attachment.get("contentSizeBytes") or 0),
            )
        )
    return tuple(found)


def _agent_name(channel: Mapping[str, Any]) -> str:
    sender = channel.get("from")
    name = sender.get("nickname") if isinstance(sender, dict) else None
    return name if isinstance(name, str) else ""


def parse_notification(body: bytes) -> WebhookBatch:
    """Parses a verified outbound notification (one normalized message)."""
    doc = webhook_json(body)
    if not isinstance(doc, dict):
        raise InvalidArgument("body must be a JSON object")
    channel = doc.get("channel")
    if not isinstance(channel, dict):
        raise InvalidArgument("channel must be an object")
    to = channel.get("to")
    if not isinstance(to, dict):
        raise InvalidArgument("channel.to must be an object")
    case = _str(to, "id", "channel.to")
    kind = doc.get("type")
    if doc.get("direction", "Outbound") != "Outbound":
        return WebhookBatch([], 1)  # not an agent's: nothing to relay
    message_id = _str(doc, "id", "message")
    if kind == "Text":
        text = _str(doc, "text", "message", required=False)
        attachments = _agent_attachments(doc.get("content"), "message")
        if not text and not attachments:
            return WebhookBatch([], 1)  # e.g. only a card: nothing the end user can get
        return WebhookBatch(
            [
                AgentMessage(
                    external_id=case,
                    event_id=message_id,
                    message_id=message_id,
                    text=text,
                    agent_name=_agent_name(channel),
                    attachments=attachments,
                )
            ]
        )
    if kind == "Event":
        events: list[CaseEvent] = []
        ignored = 0
        items = doc.get("events")
        if not isinstance(items, list):
            raise InvalidArgument("events must be an array")
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("eventType") == "Typing":
                events.append(
                    AgentTyping(
                        external_id=case,
                        event_id=f"{message_id}:{index}",
                        typing=True,
                        at=_time(channel.get("time")),
                    )
                )
            else:
                ignored += 1
        return WebhookBatch(events, ignored)
    return WebhookBatch([], 1)  # Receipt, and types newer than this adapter


# --- the adapter ---------------------------------------------------------------------------


class TokenCache:
    """The OAuth client-credentials access token (``POST {login}/oauth/token``): fetched
    once, shared by concurrent callers, renewed ``margin_s`` before it expires and at once
    when the API answered 401 to it."""

    def __init__(
        self,
        http: HttpClient,
        login_url: str,
        client_id: str,
        client_secret: str,
        *,
        margin_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._url = f"{login_url}/oauth/token"
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._margin_s = margin_s
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many tokens were fetched (tests, metrics)

    async def get(self) -> str:
        if self._token and self._clock() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token and self._clock() < self._expires_at:
                return self._token
            return await self._fetch()

    def invalidate(self, token: str) -> None:
        """Forgets ``token`` (the API refused it); a newer one is kept."""
        if token == self._token:
            self._token = ""

    async def _fetch(self) -> str:
        try:
            answer = await self._http.request(
                "POST",
                self._url,
                body=b"grant_type=client_credentials",
                headers={
                    "Authorization": f"Basic {self._basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
        except HttpFailure as exc:
            raise farside.failure_error("genesys: POST /oauth/token", exc) from None
        if not answer.ok:
            error = farside.status_error(
                "genesys: POST /oauth/token", answer.status, answer.headers
            )
            if answer.status in (400, 401):  # wrong client id/secret: an operator's fix
                error = FarSideError(str(error), retryable=True, status=answer.status)
            raise error
        doc = answer.json_object()
        token = doc.get("access_token")
        expires_in = doc.get("expires_in")
        if not isinstance(token, str) or not token:
            raise FarSideError("genesys: the token answer has no access_token", retryable=True)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._token = token
        self._expires_at = self._clock() + max(lifetime - self._margin_s, lifetime / 2)
        self.fetches += 1
        log.info("genesys: new access token (valid %.0f s)", lifetime)
        return token


class GenesysApi:
    """The Genesys Cloud platform API with the OAuth client's cached token (shared by the
    adapter and ``ccbridge genesys setup``)."""

    def __init__(
        self,
        settings: GenesysSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._http = HttpClient(
            system="genesys",  # ccbridge_farside_* (the operation: the HTTP method)
            headers={"User-Agent": "ccbridge-genesys-connector/1", "Accept": "application/json"},
            timeout_s=settings.timeout_s,
            max_answer_bytes=MAX_RESPONSE_BYTES,
        )
        self.tokens = TokenCache(
            self._http,
            settings.login_url,
            settings.client_id,
            settings.client_secret.value,
            margin_s=settings.token_margin_s,
            clock=monotonic,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> HttpAnswer:
        """One API call with the cached token; a 401 renews the token and retries once.
        Statuses in ``allow`` are returned, other non-2xx raise FarSideError."""
        what = f"genesys {method} {path.split('?')[0]}"
        url = self.settings.api_url + path + (f"?{urlencode(params)}" if params else "")
        for attempt in (1, 2):
            token = await self.tokens.get()
            try:
                answer = await self._http.request(
                    method,
                    url,
                    json_body=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except HttpFailure as exc:
                error = farside.failure_error(what, exc)
                log.warning("%s failed: %s", what, error.__cause__)
                raise error from None
            if answer.status == 401 and attempt == 1:
                self.tokens.invalidate(token)
                continue
            if answer.ok or answer.status in allow:
                return answer
            error = farside.status_error(what, answer.status, answer.headers, now=self._clock())
            if answer.status == 401:  # refused a fresh token: the OAuth client's to fix
                error = FarSideError(str(error), retryable=True, status=401)
            log.warning("%s answered HTTP %d (retryable=%s)", what, answer.status, error.retryable)
            raise error
        raise AssertionError("unreachable")


class GenesysAdapter(Adapter):
    """Genesys Cloud Open Messaging: webhooks for agent messages, polling for closes."""

    name = "genesys"
    mode: Literal["push", "poll"] = "poll"

    def __init__(
        self,
        settings: GenesysSettings,
        store: ConnectorStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.webhook_secrets:
            raise ValueError("the genesys connector needs the outbound webhook secret")
        self.settings = settings
        self._store = store
        self._redis = store.redis
        self._secrets = tuple(s.value for s in settings.webhook_secrets)
        self._clock = clock
        self.api = GenesysApi(settings, clock=clock, monotonic=monotonic)
        self.tokens = self.api.tokens
        self._api = self.api.call
        self._inbound = (
            f"/api/v2/conversations/messages/{quote(settings.integration_id, safe='')}/inbound/open"
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- HTTP --------------------------------------------------------------------------------

    async def _send(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POSTs one inbound open message; returns the answer (OpenMessageNormalizedMessage)."""
        answer = await self._api(
            "POST",
            f"{self._inbound}/message",
            body=body,
            params={"prefetchConversationId": "true"},
        )
        return answer.json_object()

    # -- records -----------------------------------------------------------------------------

    async def _record(self, external_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self._store.genesys_case(external_id))
        return {redis_text(k): redis_text(v) for k, v in raw.items()}

    # -- bridge → Genesys ----------------------------------------------------------------------

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        end_user = case.end_user or case.conversation_id
        kind = id_type(case.channel, end_user)
        key = self._store.genesys_case(end_user)
        record = await self._record(end_user)
        if record and record.get("cid") != case.conversation_id:
            # One open Genesys conversation per end-user identity and integration.
            if not await self._conversation_closed(record.get("conversation", "")):
                raise FarSideError(
                    "genesys: the end user already has an open conversation through this "
                    "integration (another Infobip conversation)",
                    retryable=True,
                )
            await self._redis.delete(key)
            record = {}
        chunks = transcript_chunks(case, self.settings.transcript_chunk_chars)
        sent = int(record.get("sent") or 0)
        # A previous attempt created the conversation (it may not have sent every part).
        existing = bool(record.get("conversation"))
        conversation = record.get("conversation", "")
        now = self._clock()
        for index in range(sent, len(chunks)):
            body = message_body(
                end_user,
                kind,
                f"{case.conversation_id}:transcript:{index + 1}",
                chunks[index],
                now,
                metadata=open_metadata(case) if index == 0 else None,
            )
            answer = await self._send(body)
            found = answer.get("conversationId")
            if isinstance(found, str) and found:
                conversation = found
            await self._redis.hset(
                key,
                mapping={
                    "cid": case.conversation_id,
                    "conversation": conversation,
                    "id_type": kind,
                    "sent": str(index + 1),
                    "opened_at": record.get("opened_at") or str(now),
                },
            )
        if not conversation:
            raise FarSideError(
                "genesys: the inbound message answer named no conversationId", retryable=True
            )
        await self._redis.sadd(self._store.genesys_open, end_user)
        log.info("genesys: case %s (%s)", "found" if existing else "opened", conversation)
        return OpenedCase(external_id=end_user, existing=existing)

    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        done_key = self._store.genesys_message(external_id, idempotency_key or message.id)
        done = await self._redis.get(done_key)
        if done is not None:
            return redis_text(done)
        record = await self._record(external_id)
        if not record:
            raise FarSideError("genesys: no open case for this end user", retryable=False)
        body = customer_body(external_id, record.get("id_type", "Opaque"), message, self._clock())
        if idempotency_key and idempotency_key != message.id:
            body["channel"]["messageId"] = idempotency_key
        answer = await self._send(body)
        found = answer.get("id")
        genesys_id = found if isinstance(found, str) else ""
        await self._redis.set(done_key, genesys_id, ex=self.settings.dedupe_ttl_s)
        return genesys_id

    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        """A ``Failed`` receipt for the agent's message (``…/inbound/open/receipt``, the
        way Genesys's forum answer recommends: the agent sees the message failed), then a
        notice as an inbound message (``[ccbridge notice] …``, metadata
        ``ccbridge.notice``) so the reason is readable in the conversation too."""
        record = await self._record(external_id)
        if not record:
            raise FarSideError("genesys: no open case for this end user", retryable=False)
        kind = record.get("id_type", "Opaque")
        why = reason or "unknown reason"
        receipt = {
            "id": message_id,
            "channel": {"to": {"id": external_id, "idType": kind}, "time": iso_time(self._clock())},
            "status": "Failed",
            "reasons": [{"code": "GeneralError", "message": why[:500]}],
            "isFinalReceipt": True,
        }
        await self._api("POST", f"{self._inbound}/receipt", body=receipt)
        text = f"[ccbridge notice] Your reply {message_id} was NOT delivered to the customer: {why}"
        body = message_body(
            external_id,
            kind,
            f"ccbridge-failed:{idempotency_key or message_id}"[:255],
            text,
            self._clock(),
            metadata={"ccbridge.notice": "reply-not-delivered", "ccbridge.messageId": message_id},
        )
        await self._send(body)
        log.info("genesys: told the agent a reply was not delivered")

    async def post_typing(self, external_id: str, conversation_id: str, typing: bool) -> bool:
        if not typing:
            return True  # Genesys's typing indicator ends on its own
        record = await self._record(external_id)
        if not record:
            return False
        body = {
            "channel": {
                "from": {"id": external_id, "idType": record.get("id_type", "Opaque")},
                "time": iso_time(self._clock()),
            },
            "events": [{"eventType": "Typing"}],
        }
        await self._api("POST", f"{self._inbound}/event", body=body)
        return True

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        record = await self._record(external_id)
        conversation = record.get("conversation", "")
        if not conversation or (record.get("cid") not in ("", conversation_id)):
            return True  # nothing of this conversation is open at Genesys
        customer = await self._customer(conversation)
        already = customer is None or str(customer.get("state")) in ENDED
        if not already and customer is not None:
            await self._api(
                "PATCH",
                f"/api/v2/conversations/messages/{quote(conversation, safe='')}/participants/"
                f"{quote(str(customer.get('id')), safe='')}",
                body={"state": "disconnected"},
            )
        await self._forget(external_id, conversation)
        return already

    async def _conversation(self, conversation: str) -> dict[str, Any] | None:
        """The MessageConversation; None when Genesys no longer knows it (404)."""
        answer = await self._api(
            "GET",
            f"/api/v2/conversations/messages/{quote(conversation, safe='')}",
            allow=frozenset({404}),
        )
        return None if answer.status == 404 else answer.json_object()

    async def _customer(self, conversation: str) -> dict[str, Any] | None:
        found = await self._conversation(conversation)
        for participant in _participants(found):
            if participant.get("purpose") == "customer":
                return participant
        return None

    async def _conversation_closed(self, conversation: str) -> bool:
        if not conversation:
            return True
        return is_closed(await self._conversation(conversation))

    async def _forget(self, external_id: str, conversation: str) -> None:
        key = self._store.genesys_case(external_id)
        current = await self._redis.hget(key, "conversation")
        if current is None or redis_text(current) == conversation:
            await self._redis.delete(key)
            await self._redis.srem(self._store.genesys_open, external_id)

    # -- Genesys → bridge ----------------------------------------------------------------------

    def parse_webhook_batch(self, headers: Mapping[str, str], body: bytes) -> WebhookBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_signature(self._secrets, lowered, body)
        return parse_notification(body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        return self.parse_webhook_batch(headers, body).events

    async def poll(self) -> list[CaseEvent]:
        """A close event for each open case whose Genesys conversation has ended."""
        members = sorted(
            redis_text(m) for m in await self._redis.smembers(self._store.genesys_open)
        )
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def check(external_id: str) -> CaseEvent | None:
            async with gate:
                record = await self._record(external_id)
                conversation = record.get("conversation", "")
                if not conversation:
                    return None
                found = await self._conversation(conversation)
                if not is_closed(found, since=float(record.get("opened_at") or 0)):
                    return None
                return CaseClosedEvent(
                    external_id=external_id,
                    event_id=f"genesys-end:{conversation}",
                    reason="the Genesys conversation ended",
                )

        return [e for e in await gather_all(check(m) for m in members) if e is not None]

    async def commit_poll(self, events: Sequence[CaseEvent]) -> None:
        for event in events:
            if isinstance(event, CaseClosedEvent):
                await self._forget(event.external_id, event.event_id.removeprefix("genesys-end:"))


def _participants(conversation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    found = (conversation or {}).get("participants")
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def is_closed(conversation: Mapping[str, Any] | None, *, since: float = 0.0) -> bool:
    """Whether a MessageConversation has ended for the agent: gone (None), its customer
    participant disconnected, or every agent participant disconnected while no
    participant but the customer is still active (a transfer adds one first).

    Participants that started more than ``START_SLACK_S`` before ``since`` (the case's
    opening, unix seconds) are not counted: should Genesys put a new handover into an
    earlier conversation of the same identity (unconfirmed), its old, disconnected
    participants must not close the new case."""
    if conversation is None:
        return True
    participants = [
        p
        for p in _participants(conversation)
        if (_time(p.get("startTime")) or since) >= since - START_SLACK_S
    ]
    customer = [p for p in participants if p.get("purpose") == "customer"]
    if customer and all(str(p.get("state")) in ENDED for p in customer):
        return True
    agents = [p for p in participants if p.get("purpose") in ("agent", "user")]
    others = [p for p in participants if p.get("purpose") in _ACTIVE_PURPOSES]
    return bool(agents) and all(str(p.get("state")) in ENDED for p in others)


def build(settings: GenesysSettings, store: ConnectorStore) -> GenesysAdapter:
    """The adapter for its parsed settings (the connector registry calls it)."""
    return GenesysAdapter(settings, store)
