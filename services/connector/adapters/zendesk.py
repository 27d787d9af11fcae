"""The ``zendesk`` connector: Zendesk messaging through Sunshine Conversations v2 and its
switchboard (docs/connectors/zendesk.md is the normative description).

Bridge → Zendesk: the end user is a Sunshine Conversations *user* keyed by
``externalId = <channel>:<address>`` (one profile per customer across handovers); each
handover is a ``personal`` conversation of that user whose metadata names the Infobip
conversation; the transcript goes in as business messages of at most 4,000 characters
(``Transcript part i/n``); then ``passControl`` hands the conversation to the agent
workspace's switchboard integration. End-user messages are posted as the user's
messages. Sunshine offers no idempotency key on writes, so every write carries a
``ccbridge_key`` in its message metadata and the adapter records it in Redis
(services/connector/store.py): a post whose outcome is unknown is searched for by that
key in the conversation's latest messages before it is sent again.

Zendesk → bridge: one webhook (``conversation:message``, ``conversation:typing``,
``switchboard:passControl``, ``switchboard:releaseControl``), authenticated by the
static ``X-API-Key`` header Sunshine sends (compared in constant time). Business
messages become agent messages (dedupe key: the message id); messages the bridge wrote
(metadata ``ccbridge_origin``) and user messages are echoes and are skipped; control
passed to any integration other than the agent workspace, or released, closes the case.

This module never logs message text or secrets.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.zendesk_settings import ZendeskSettings
from ccbridge.services.connector.base import (
    Adapter,
    AgentMessage,
    AgentTyping,
    CaseClosedEvent,
    CaseEvent,
    CaseToOpen,
    OpenedCase,
    WebhookBatch,
    webhook_json,
)
from ccbridge.services.connector.case_text import (
    case_fields,
    media_url,
    message_text,
    transcript_lines,
)
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, Unauthenticated
from ccbridge.services.runtime.http_client import HttpAnswer, HttpClient, HttpFailure
from ccbridge.services.runtime.ids import is_message_id
from ccbridge.services.runtime.lease import release_if_held
from ccbridge.services.runtime.redis import redis_text

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
ORIGIN = "ccbridge"  # metadata ccbridge_origin of everything the bridge writes
CONVERSATION_FIELD = "ccbridge_conversation_id"
MAX_TEXT = 4096  # textMessage.text maxLength
MAX_METADATA_BYTES = 4096  # "The metadata is limited to 4KB in size."
MAX_ANSWER_BYTES = 4 * 1024 * 1024
MAX_EVENTS = 100
MESSAGE_KEY_TTL_S = 14 * 24 * 3600
CASE_KEY_TTL_S = 90 * 24 * 3600
SEARCH_PAGES = 3  # pages of 100 latest messages searched for an in-doubt post
_PENDING = "pending"
_CONTEXT_LINE = 400  # characters of one context line (the first part must hold them all)
_MEDIA_TYPES = frozenset({"IMAGE", "VIDEO", "DOCUMENT", "AUDIO", "FILE", "VOICE"})


def build(settings: ZendeskSettings, store: ConnectorStore) -> ZendeskAdapter:
    """The adapter for its parsed settings (the connector registry calls it)."""
    return ZendeskAdapter(settings, store)


# --- what the bridge writes -------------------------------------------------------------


def user_external_id(channel: str, end_user: str, conversation_id: str) -> str:
    """The Sunshine user's ``externalId``: the end user's channel address, so one
    customer keeps one profile across conversations."""
    if not end_user:
        return f"ccbridge:{conversation_id}"
    return f"{(channel or 'chat').lower()}:{end_user}"


def _flat(value: object) -> str | int | float | bool:
    return value if isinstance(value, str | int | float | bool) else str(value)


def conversation_metadata(case: CaseToOpen) -> dict[str, str | int | float | bool]:
    """Flat metadata (strings, numbers, booleans; at most 4 KB as JSON): the routing
    decision, tags and the conversation's metadata (``ib_<key>``). The fixed fields come
    first; metadata entries that would pass the limit are left out (the first transcript
    message lists them all)."""
    meta: dict[str, str | int | float | bool] = {
        CONVERSATION_FIELD: case.conversation_id,
        "ccbridge_origin": ORIGIN,
        # Each bounded so the fixed fields stay under 4 KB together.
        "ccbridge_channel": case.channel[:50],
        "ccbridge_end_user": case.end_user[:300],
        "ccbridge_queue": case.queue[:300],
        "ccbridge_priority": case.priority,
        "ccbridge_skills": ",".join(case.skills)[:800],
        "ccbridge_rule": case.rule[:300],
        "ccbridge_tags": ",".join(case.tags)[:1500],
    }
    for key, value in sorted(case.metadata.items()):
        candidate = {**meta, f"ib_{key}"[:128]: _flat(value)}
        if len(orjson.dumps(candidate)) > MAX_METADATA_BYTES:
            continue
        meta = candidate
    return meta


def context_lines(case: CaseToOpen) -> list[str]:
    """The head of the first transcript message: who, where from, routing."""
    head = [
        "Chat handed over by the Infobip bridge. Reply in this conversation to answer the",
        "customer; pass control back (or close the ticket) to end the chat.",
        "",
        *case_fields(case),
    ]
    if case.transcript_truncated:
        head.append("(Transcript capped: earlier messages left out.)")
    # Each line bounded, so the context always fits the first part (the full metadata
    # is in the conversation's metadata as far as 4 KB allow).
    return [
        line if len(line) <= _CONTEXT_LINE else line[: _CONTEXT_LINE - 1] + "…" for line in head
    ] + [""]


def transcript_chunks(case: CaseToOpen, limit: int) -> list[str]:
    """The transcript as texts of at most ``limit`` characters, each starting with
    ``Transcript part i/n (times UTC, oldest first)``; the first also carries the
    context. A line longer than a chunk is cut across chunks."""
    lines = transcript_lines(case.transcript) or ["(no messages)"]
    heading_room = 64
    room = limit - heading_room
    bodies: list[list[str]] = [context_lines(case)]
    size = sum(len(line) + 1 for line in bodies[0])
    for line in lines:
        while len(line) > room:  # only a pathological line: cut it
            bodies.append([line[:room]])
            line = "    " + line[room:]
            size = room + 1
        if size + len(line) + 1 > room and bodies[-1]:
            bodies.append([])
            size = 0
        bodies[-1].append(line)
        size += len(line) + 1
    total = len(bodies)
    chunks = []
    for index, body in enumerate(bodies, start=1):
        heading = f"Transcript part {index}/{total} (times UTC, oldest first)"
        if index == 1:
            context, lines_ = body[: len(context_lines(case))], body[len(context_lines(case)) :]
            chunks.append("\n".join([*context, heading, *lines_]))
        else:
            chunks.append("\n".join([heading, *body]))
    return chunks


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    keep = MAX_TEXT - 64
    return text[:keep] + f"… (cut: {len(text) - keep} more characters)"


def _content(message: common_pb2.Message) -> dict[str, Any]:
    try:
        loaded = orjson.loads(message.content_json) if message.content_json else {}
    except orjson.JSONDecodeError:
        raise InvalidArgument(f"message {message.id!r}: content_json is not JSON") from None
    return loaded if isinstance(loaded, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def message_content(message: common_pb2.Message) -> dict[str, Any]:
    """The Sunshine ``content`` of an end-user message: text, image/file (``mediaUrl``,
    the caption as text), location (coordinates, name, address); every other type as
    the readable text the RT connector writes too (``[contact] …``, ``[email] …``)."""
    content = _content(message)
    kind = (message.content_type or "TEXT").upper()
    url = media_url(message)
    if url and kind in _MEDIA_TYPES:
        caption = content.get("caption") or content.get("text")
        body: dict[str, Any] = {"type": "image" if kind == "IMAGE" else "file", "mediaUrl": url}
        if isinstance(caption, str) and caption:
            body["text"] = _cut(caption)
        return body
    if kind == "LOCATION":
        lat, lon = _number(content.get("latitude")), _number(content.get("longitude"))
        if lat is not None and lon is not None:
            body = {"type": "location", "coordinates": {"lat": lat, "long": lon}}
            place = {
                key: str(content[source])
                for key, source in (("name", "locationName"), ("address", "address"))
                if isinstance(content.get(source), str) and content.get(source)
            }
            if place:
                body["location"] = place
            return body
    return {"type": "text", "text": _cut(message_text(message) or "(empty message)")}


# --- what Zendesk pushes ----------------------------------------------------------------


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _event_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not is_message_id(value):
        raise InvalidArgument(f"{where}: id is required (a message id)")
    return value


def _attachment(content: Mapping[str, Any], where: str) -> common_pb2.Attachment:
    url = content.get("mediaUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"{where}: mediaUrl must be an http(s) URL")
    media_type = str(content.get("mediaType") or "")
    if content.get("type") == "image" or media_type.startswith("image/"):
        kind = "IMAGE"
    elif media_type.startswith("video/"):
        kind = "VIDEO"
    elif media_type.startswith("audio/"):
        kind = "AUDIO"
    else:
        kind = "DOCUMENT"
    size = _number(content.get("mediaSize"))
    return common_pb2.Attachment(
        url=url,
        content_type=kind,
        caption=str(content.get("text") or ""),
        name=str(content.get("altText") or "")[:255],
        size=int(size) if size and size > 0 else 0,
    )


def agent_message(conversation_id: str, message: Mapping[str, Any], where: str) -> AgentMessage:
    """An agent's (business) message as an AgentMessage; its id is the dedupe key."""
    message_id = _event_id(message.get("id"), f"{where} message")
    author = _dict(message.get("author"))
    content = _dict(message.get("content"))
    kind = content.get("type")
    agent = str(author.get("displayName") or "")
    text = ""
    attachments: tuple[common_pb2.Attachment, ...] = ()
    location = None
    if kind == "text":
        text = str(content.get("text") or "")
    elif kind in ("image", "file"):
        attachments = (_attachment(content, f"{where} message"),)
    elif kind == "location":
        coordinates = _dict(content.get("coordinates"))
        lat, lon = _number(coordinates.get("lat")), _number(coordinates.get("long"))
        if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
            raise InvalidArgument(f"{where} message: location coordinates are required")
        place = _dict(content.get("location"))
        location = common_pb2.Location(
            latitude=lat,
            longitude=lon,
            name=str(place.get("name") or ""),
            address=str(place.get("address") or ""),
        )
    else:
        # carousel, list, form, template…: what the end user's channel would fall back
        # to (the text), else the content itself, marked with its type. Never dropped.
        fallback = content.get("text")
        text = (
            str(fallback)
            if isinstance(fallback, str) and fallback
            else f"[{kind}] {orjson.dumps(content).decode()[:MAX_TEXT]}"
        )
    if not text and not attachments and location is None:
        raise InvalidArgument(f"{where} message: no text, media or location")
    return AgentMessage(
        external_id=conversation_id,
        event_id=message_id,
        message_id=message_id,
        text=text,
        agent_name=agent,
        attachments=attachments,
        location=location,
    )


def parse_events(body: bytes, agent_integration: str) -> WebhookBatch:
    """The events of a verified webhook body (``{"app", "webhook", "events": [...]}``)."""
    doc = webhook_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise InvalidArgument("body must be an object with an events array")
    items = doc["events"]
    if len(items) > MAX_EVENTS:
        raise InvalidArgument(f"more than {MAX_EVENTS} events in one webhook")
    events: list[CaseEvent] = []
    ignored = 0
    for index, item in enumerate(items):
        where = f"event #{index}"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where}: must be an object")
        kind = item.get("type")
        payload = _dict(item.get("payload"))
        conversation = _dict(payload.get("conversation"))
        conversation_id = conversation.get("id")
        # Only conversations the bridge opened: others (Zendesk's own channels) are not
        # ours, and an unknown case's events would wait for an opening that never comes.
        if not _dict(conversation.get("metadata")).get(CONVERSATION_FIELD):
            ignored += 1
            continue
        if not isinstance(conversation_id, str) or not is_message_id(conversation_id):
            raise InvalidArgument(f"{where}: payload.conversation.id is required")
        if kind == "conversation:message":
            message = _dict(payload.get("message"))
            author = _dict(message.get("author"))
            mine = _dict(message.get("metadata")).get("ccbridge_origin") == ORIGIN
            subtypes = author.get("subtypes")
            activity = isinstance(subtypes, list) and "activity" in subtypes
            if author.get("type") != "business" or mine or activity:
                ignored += 1  # the end user's messages (the bridge posted them), echoes
                continue
            events.append(agent_message(conversation_id, message, where))
        elif kind == "conversation:typing":
            activity_ = _dict(payload.get("activity"))
            if _dict(activity_.get("author")).get("type") != "business":
                ignored += 1
                continue
            events.append(
                AgentTyping(
                    external_id=conversation_id,
                    event_id=_event_id(item.get("id"), where),
                    typing=activity_.get("type") == "typing:start",
                )
            )
        elif kind in ("switchboard:passControl", "switchboard:releaseControl"):
            if _dict(payload.get("metadata")).get("ccbridge_origin") == ORIGIN:
                ignored += 1  # the bridge's own pass (opening) or close
                continue
            active = _dict(conversation.get("activeSwitchboardIntegration"))
            if kind == "switchboard:passControl" and active.get("name") == agent_integration:
                ignored += 1  # to the agents: a transfer, not an end
                continue
            reason = payload.get("reason")
            target = active.get("name")
            events.append(
                CaseClosedEvent(
                    external_id=conversation_id,
                    event_id=_event_id(item.get("id"), where),
                    reason=str(reason)
                    if isinstance(reason, str) and reason
                    else (f"control passed to {target}" if target else "control released"),
                )
            )
        else:
            ignored += 1
    return WebhookBatch(events, ignored)


def verify_api_key(secrets_: Sequence[bytes], headers: Mapping[str, str]) -> None:
    """Raises Unauthenticated unless ``X-API-Key`` equals one of the secrets (compared in
    constant time, each secret compared whatever the outcome of the others)."""
    offered = headers.get(API_KEY_HEADER)
    if not offered:
        raise Unauthenticated("X-API-Key header is missing")
    given = offered.encode()
    matched = False
    for secret in secrets_:
        matched |= hmac.compare_digest(given, secret)
    if not matched:
        raise Unauthenticated("X-API-Key does not match the webhook's secret")


# --- the adapter ------------------------------------------------------------------------


class ZendeskAdapter(Adapter):
    """Sunshine Conversations v2 with the switchboard (push mode)."""

    name = "zendesk"
    mode: Literal["push", "poll"] = "push"

    def __init__(self, settings: ZendeskSettings, store: ConnectorStore) -> None:
        self.settings = settings
        self._store = store
        self._redis = store.redis
        self._webhook_secrets = tuple(s.value.encode() for s in settings.webhook_secrets)
        basic = base64.b64encode(f"{settings.key_id}:{settings.key_secret.value}".encode())
        self._http = HttpClient(
            system="zendesk",  # ccbridge_farside_* (the operation: the HTTP method)
            base_url=settings.api,
            headers={
                "Authorization": f"Basic {basic.decode()}",
                "Accept": "application/json",
                "User-Agent": "ccbridge-zendesk-connector/1",
            },
            timeout_s=settings.timeout_s,
            max_answer_bytes=MAX_ANSWER_BYTES,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- HTTP ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        params: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201),
    ) -> HttpAnswer:
        what = f"Zendesk {method} {path.split('?')[0]}"
        try:
            answer = await self._http.request(method, path, json_body=json_body, params=params)
        except HttpFailure as exc:
            error = farside.failure_error(what, exc)
            log.warning("zendesk: %s failed: %s", what, exc)
            raise error from exc
        if answer.status not in ok:
            error = farside.status_error(what, answer.status, answer.headers)
            log.warning(
                "zendesk: %s answered HTTP %d (retryable=%s)", what, answer.status, error.retryable
            )
            raise error
        return answer

    @staticmethod
    def _json(answer: HttpAnswer) -> dict[str, Any]:
        try:
            doc = answer.json()
        except ValueError:
            raise FarSideError(
                "Zendesk answered something that is not JSON", retryable=True
            ) from None
        if not isinstance(doc, dict):
            raise FarSideError("Zendesk answered JSON that is not an object", retryable=True)
        return doc

    # --- users and conversations -------------------------------------------------------

    async def _user_id(self, external_id: str) -> str:
        """The user with this externalId, created when missing."""
        path = f"/users/{quote(external_id, safe='')}"
        for _ in range(2):
            answer = await self._call("GET", path, ok=(200, 404))
            if answer.status == 200:
                user = _dict(self._json(answer).get("user"))
                if isinstance(user.get("id"), str):
                    return str(user["id"])
                raise FarSideError("Zendesk GET user: no user id", retryable=True)
            created = await self._call(
                "POST", "/users", json_body={"externalId": external_id}, ok=(201, 409)
            )
            if created.status == 201:
                user = _dict(self._json(created).get("user"))
                if isinstance(user.get("id"), str):
                    return str(user["id"])
            # 409: created by a concurrent attempt in the meantime: read it.
        raise FarSideError("Zendesk: the user could not be found or created", retryable=True)

    async def _find_conversation(self, user_id: str, conversation_id: str) -> str | None:
        """The user's conversation whose metadata names the Infobip conversation."""
        params: dict[str, str] = {"filter[userId]": user_id}
        for _ in range(100):
            doc = self._json(await self._call("GET", "/conversations", params=params))
            found = doc.get("conversations")
            for item in found if isinstance(found, list) else []:
                item = _dict(item)
                if _dict(item.get("metadata")).get(CONVERSATION_FIELD) == conversation_id:
                    return str(item.get("id"))
            meta = _dict(doc.get("meta"))
            if not meta.get("hasMore") or not meta.get("afterCursor"):
                return None
            params = {"filter[userId]": user_id, "page[after]": str(meta["afterCursor"])}
        return None

    async def _participant(self, conversation: str) -> str:
        doc = self._json(await self._call("GET", f"/conversations/{conversation}/participants"))
        for item in doc.get("participants") or []:
            user_id = _dict(item).get("userId")
            if isinstance(user_id, str) and user_id:
                return user_id
        raise FarSideError("Zendesk: the conversation has no participant", retryable=False)

    async def _lock(self, key: str, budget_s: float) -> str:
        token = secrets.token_hex(8)
        if not await self._redis.set(key, token, nx=True, px=int((budget_s + 5) * 1000)):
            wait_ms = await self._redis.pttl(key)
            raise FarSideError(
                "another attempt is working on this",
                retryable=True,
                retry_after=max(wait_ms, 1000) / 1000,
            )
        return token

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        cid = case.conversation_id
        state_key = self._store.zendesk_case(cid)
        lock_key = self._store.zendesk_open_lock(cid)
        chunks = transcript_chunks(case, self.settings.transcript_chunk_chars)
        budget = (len(chunks) + 8) * self.settings.timeout_s
        token = await self._lock(lock_key, budget)
        try:
            raw = await self._redis.hgetall(state_key)
            state = {_s(k): _s(v) for k, v in raw.items()}
            existing = bool(state.get("conversation"))
            user_id = state.get("user") or await self._user_id(
                user_external_id(case.channel, case.end_user, cid)
            )
            conversation = state.get("conversation") or await self._find_conversation(user_id, cid)
            if conversation:
                existing = True
            else:
                doc = self._json(
                    await self._call(
                        "POST",
                        "/conversations",
                        json_body={
                            "type": "personal",
                            "participants": [{"userId": user_id}],
                            "displayName": f"{case.channel or 'Chat'} {case.end_user}"[:100],
                            "metadata": conversation_metadata(case),
                        },
                        ok=(201,),
                    )
                )
                conversation = str(_dict(doc.get("conversation")).get("id") or "")
                if not conversation or not is_message_id(conversation):
                    raise FarSideError("Zendesk create conversation: no id", retryable=True)
            await self._redis.hset(
                state_key, mapping={"user": user_id, "conversation": conversation}
            )
            await self._redis.expire(state_key, CASE_KEY_TTL_S)
            for index, text in enumerate(chunks):
                await self._post_once(
                    cid,
                    conversation,
                    f"transcript:{index}",
                    {
                        "author": {"type": "business", "displayName": "Infobip transcript"},
                        "content": {"type": "text", "text": text},
                    },
                    kind="transcript",
                )
            if state.get("passed") != "1":
                await self._call(
                    "POST",
                    f"/conversations/{conversation}/passControl",
                    json_body={
                        "switchboardIntegration": self.settings.agent_integration,
                        "metadata": {
                            "ccbridge_origin": ORIGIN,
                            CONVERSATION_FIELD: cid,
                            # Bounded: 4 KB in all (the conversation has the rest).
                            "ccbridge_queue": case.queue[:500],
                            "ccbridge_priority": case.priority,
                            "ccbridge_skills": ",".join(case.skills)[:1000],
                            "ccbridge_tags": ",".join(case.tags)[:1500],
                        },
                    },
                )
                await self._redis.hset(state_key, "passed", "1")
            log.info(
                "zendesk: conversation %s %s for %s (%d transcript parts)",
                conversation,
                "found" if existing else "opened",
                cid,
                len(chunks),
            )
            return OpenedCase(external_id=conversation, existing=existing)
        finally:
            await release_if_held(self._redis, lock_key, token)

    # --- messages ------------------------------------------------------------------------

    async def _find_posted(self, conversation: str, key: str) -> str | None:
        """The id of the latest-pages message whose metadata carries ``key``."""
        params: dict[str, str] = {}
        for _ in range(SEARCH_PAGES):
            doc = self._json(
                await self._call("GET", f"/conversations/{conversation}/messages", params=params)
            )
            messages = doc.get("messages")
            for item in messages if isinstance(messages, list) else []:
                item = _dict(item)
                if _dict(item.get("metadata")).get("ccbridge_key") == key:
                    return str(item.get("id") or "")
            meta = _dict(doc.get("meta"))
            if not meta.get("hasMore") or not meta.get("beforeCursor"):
                return None
            params = {"page[before]": str(meta["beforeCursor"])}
        return None

    async def _post_once(
        self, cid: str, conversation: str, key: str, body: dict[str, Any], *, kind: str
    ) -> str:
        """POSTs one message with ``ccbridge_key`` = ``key`` once: a recorded post is not
        repeated; one whose outcome was unknown is searched for first."""
        done_key = self._store.zendesk_message(cid, key)
        state = _s(await self._redis.get(done_key))
        if state and state != _PENDING:
            return state
        lock_key = self._store.zendesk_message_lock(cid, key)
        token = await self._lock(lock_key, 3 * self.settings.timeout_s)
        in_doubt = False
        try:
            state = _s(await self._redis.get(done_key))
            if state and state != _PENDING:
                return state
            if state == _PENDING:
                found = await self._find_posted(conversation, key)
                if found:
                    await self._redis.set(done_key, found, ex=MESSAGE_KEY_TTL_S)
                    return found
            await self._redis.set(done_key, _PENDING, ex=MESSAGE_KEY_TTL_S)
            body = {
                **body,
                "metadata": {"ccbridge_origin": ORIGIN, "ccbridge_key": key, "ccbridge_kind": kind}
                | dict(body.get("metadata") or {}),
            }
            in_doubt = True
            try:
                answer = await self._call(
                    "POST", f"/conversations/{conversation}/messages", json_body=body, ok=(201,)
                )
            except FarSideError as exc:
                in_doubt = farside.may_have_been_processed(exc)
                if not in_doubt:
                    await self._redis.delete(done_key)
                raise
            in_doubt = False
            posted = self._json(answer).get("messages")
            first = _dict(posted[0]) if isinstance(posted, list) and posted else {}
            message_id = str(first.get("id") or "")
            await self._redis.set(done_key, message_id or "posted", ex=MESSAGE_KEY_TTL_S)
            return message_id
        finally:
            if not in_doubt:
                await release_if_held(self._redis, lock_key, token)

    async def _user_of(self, cid: str, conversation: str) -> str:
        state_key = self._store.zendesk_case(cid)
        user = _s(await self._redis.hget(state_key, "user"))
        if not user:
            user = await self._participant(conversation)
            await self._redis.hset(state_key, "user", user)
        return user

    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        if not is_message_id(external_id):
            raise FarSideError(f"not a Sunshine conversation id: {external_id!r}", retryable=False)
        key = idempotency_key or message.id
        if not key:
            raise FarSideError("an idempotency key is required", retryable=False)
        done = _s(await self._redis.get(self._store.zendesk_message(conversation_id, key)))
        if done and done != _PENDING:
            return done
        content = message_content(message)
        user = await self._user_of(conversation_id, external_id)
        return await self._post_once(
            conversation_id,
            external_id,
            key,
            {
                "author": {"type": "user", "userId": user},
                "content": content,
                "metadata": {"ccbridge_content_type": message.content_type or "TEXT"},
            },
            kind="customer",
        )

    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        """A business message (the bridge's user has no channel client, so only agents see
        it), marked as the bridge's: it never comes back as a reply."""
        await self._post_once(
            conversation_id,
            external_id,
            idempotency_key or f"failed:{message_id}",
            {
                "author": {"type": "business", "displayName": "Infobip bridge"},
                "content": {
                    "type": "text",
                    "text": _cut(
                        "⚠ This reply was NOT delivered to the customer.\n"
                        f"Reason: {reason}\nReply: {message_id}"
                    ),
                },
            },
            kind="failure",
        )
        log.info("zendesk: told conversation %s a reply was not delivered", external_id)

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        """Passes control to the bot integration (``switchboard:passControl``), unless
        the agents no longer hold it (already closed)."""
        answer = await self._call("GET", f"/conversations/{external_id}", ok=(200, 404))
        if answer.status == 404:
            return True
        conversation = _dict(self._json(answer).get("conversation"))
        active = _dict(conversation.get("activeSwitchboardIntegration"))
        if active.get("name") != self.settings.agent_integration:
            return True
        await self._call(
            "POST",
            f"/conversations/{external_id}/passControl",
            json_body={
                "switchboardIntegration": self.settings.bot_integration,
                "metadata": {
                    "ccbridge_origin": ORIGIN,
                    "ccbridge_closed_by": "infobip",
                    "ccbridge_reason": reason[:500],
                },
            },
        )
        log.info("zendesk: passed conversation %s back to the bot", external_id)
        return False

    # post_typing: Sunshine's activity API takes typing:start/stop only from a business
    # author ("If the author type is user, only conversation:read is supported"), so the
    # end user's typing cannot be shown: the default (False) stands.

    # --- webhooks ------------------------------------------------------------------------

    def parse_webhook_batch(self, headers: Mapping[str, str], body: bytes) -> WebhookBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_api_key(self._webhook_secrets, lowered)
        return parse_events(body, self.settings.agent_integration)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        return self.parse_webhook_batch(headers, body).events


def _s(value: object) -> str:
    return "" if value is None else redis_text(value)
