"""The Infobip Conversations API client (``/ccaas/1/...``) every ccbridge process shares.

It owns the HTTP edge towards Infobip: ``Authorization: App <key>``, JSON, a total
timeout per attempt, parsing of both error shapes Infobip answers with
(``requestError.serviceException`` and ``{statusCode, message}``), and the mapping of
failures onto :class:`InfobipError` (a :class:`~ccbridge.services.runtime.errors.FarSideError`;
what is retryable and ``Retry-After`` are the far-side policy's,
:mod:`ccbridge.services.runtime.farside`). Calls go through the one far-side HTTP client
(:mod:`ccbridge.services.runtime.http_client`); JSON is orjson's.

Retries: reads (GET) and repeatable writes (PUT, PATCH, and the POSTs whose repetition is
harmless: create/add tag, route) are retried here on retryable failures with capped
exponential backoff and full jitter, never sooner than a ``Retry-After`` asks. Create
Message is never retried here: the caller's durable outbox owns that retry and its
idempotency.

Message text and the API key are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import grpc
import orjson

from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument
from ccbridge.services.runtime.http_client import HttpAnswer, HttpClient, HttpFailure, Params
from ccbridge.services.runtime.ids import CONVERSATION_ID_RULE, is_conversation_id
from ccbridge.services.runtime.settings import Secret

log = logging.getLogger(__name__)

CONVERSATIONS = "/ccaas/1/conversations"
TAGS = "/ccaas/1/tags"
ACCOUNT_CONFIGURATION = "/ccaas/1/account/configuration"
SUBSCRIPTIONS = "/subscriptions/1/subscription/CUSTOMER_ENGAGEMENT"
PROFILES = "/subscriptions/1/profiles"
SECURITY = "/subscriptions/1/security"
SUBSCRIPTION_PAGE_SIZE = 100
"""Get Subscriptions' maximum ``size``."""

MAX_PAGE_SIZE = 999
"""Infobip's maximum ``limit`` for every list endpoint."""

# Infobip's ContentType for "the end user is typing" (its content is not documented: every
# one counts as typing started, unconfirmed). Not a message: never delivered as one.
TYPING_INDICATOR = "TYPING_INDICATOR"

DEFAULT_SUBSCRIPTION_EVENTS = (
    "CONVERSATION_MESSAGE_RECEIVED",
    "CONVERSATION_STATUS_UPDATED",
)

_CLOSED_TEXT = "closed conversation cannot be changed"
_TAG_EXISTS_TEXT = "already exists"
# Guard the pagers against a far side that ignores `page`.
_MAX_TAG_PAGES = 100
_MAX_SUBSCRIPTION_PAGES = 100


class InfobipError(FarSideError):
    """Infobip refused or failed a call.

    ``status`` is the HTTP status (None when no response arrived: timeout, connection
    error), ``message_id`` Infobip's ``messageId`` (e.g. ``BAD_REQUEST``) or the
    ``statusCode`` of the status-shaped body, ``text`` its human-readable text.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        message_id: str = "",
        text: str = "",
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after, status=status)
        self.message_id = message_id
        self.text = text


class InfobipNotFound(InfobipError):
    """The conversation, tag or other entity does not exist (Infobip answers 400 or 404
    with ``NOT_FOUND``). Never retryable; maps to gRPC NOT_FOUND."""

    def __init__(
        self, message: str, *, status: int | None, message_id: str = "NOT_FOUND", text: str = ""
    ) -> None:
        super().__init__(message, status=status, message_id=message_id, text=text, retryable=False)

    @property
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND


def parse_error_body(body: object) -> tuple[str, str]:
    """Returns ``(message_id, text)`` from either Infobip error shape ('' when absent)."""
    if not isinstance(body, Mapping):
        return "", ""
    request_error = body.get("requestError")
    if isinstance(request_error, Mapping):
        exc = request_error.get("serviceException") or request_error.get("policyException")
        if isinstance(exc, Mapping):
            return str(exc.get("messageId") or ""), str(exc.get("text") or "")
    if "statusCode" in body or "message" in body:
        return str(body.get("statusCode") or ""), str(body.get("message") or "")
    return "", ""


# Get Messages pages hold up to 999 messages; far more than that is not an answer.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def _error_from_answer(
    status: int, headers: Mapping[str, str], content: bytes, what: str
) -> InfobipError:
    try:
        body: object = orjson.loads(content)
    except ValueError:
        body = None
    message_id, text = parse_error_body(body)
    verdict = farside.judge_status(status, headers)
    summary = f"Infobip {what} failed: {verdict.reason}"
    if message_id:
        summary += f" {message_id}"
    if text:
        summary += f": {text[:200]}"
    if status == 404 or (status == 400 and message_id.upper() == "NOT_FOUND"):
        return InfobipNotFound(
            summary, status=status, message_id=message_id or "NOT_FOUND", text=text
        )
    return InfobipError(
        summary,
        status=status,
        message_id=message_id,
        text=text,
        retryable=verdict.retryable,
        retry_after=verdict.retry_after,
    )


def _answer(answer: HttpAnswer, what: str) -> object:
    """The parsed JSON answer of a call, or the InfobipError it means."""
    status = answer.status
    if status >= 400:
        raise _error_from_answer(status, answer.headers, answer.body, what)
    if not answer.body:
        return {}
    try:
        body: object = answer.json()
    except ValueError as exc:
        raise InfobipError(
            f"Infobip {what} answered a body that is not JSON", status=status, retryable=False
        ) from exc
    # The 2019 API answered some failures 200 with a status-shaped body.
    if isinstance(body, Mapping) and str(body.get("statusCode", "")).upper() == "ERROR":
        _, text = parse_error_body(body)
        raise InfobipError(
            f"Infobip {what} failed: {text[:200]}",
            status=status,
            message_id="ERROR",
            text=text,
            retryable=False,
        )
    return body


def _is_closed_error(exc: InfobipError) -> bool:
    return exc.status == 400 and _CLOSED_TEXT in exc.text.lower()


def _checked(conversation_id: str) -> str:
    """Defence in depth: every id was checked where it came in; one that is not a
    conversation id (``..``, ``a/b``, ``?``...) never becomes part of a URL."""
    if not is_conversation_id(conversation_id):
        raise InvalidArgument(f"conversation_id must be {CONVERSATION_ID_RULE}")
    return conversation_id


class InfobipClient:
    """Async client of the Infobip Conversations API.

    Create it inside the running event loop and close it with :meth:`aclose` (or use it
    as an async context manager).
    """

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 5.0,
    ) -> None:
        self._max_retries = max(0, max_retries)
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._http = HttpClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"App {api_key.value}",
                "Accept": "application/json",
                "User-Agent": "ccbridge",
            },
            timeout_s=timeout_s,
            max_answer_bytes=MAX_ANSWER_BYTES,
            max_connections=64,
            system="infobip",
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InfobipClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- transport ----------------------------------------------------------------------

    async def _send_once(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Params | None,
        json_body: object,
        headers: Mapping[str, str] | None,
        timeout_s: float | None = None,
    ) -> object:
        try:
            answer = await self._http.request(
                method,
                path,
                params=params,
                json_body=json_body,
                headers=headers,
                timeout_s=timeout_s,
                operation=what,
            )
        except HttpFailure as exc:
            verdict = farside.judge_failure(exc)
            raise InfobipError(
                f"Infobip {what} failed: {verdict.reason}",
                status=verdict.status,
                retryable=verdict.retryable,
                retry_after=verdict.retry_after,
            ) from exc
        return _answer(answer, what)

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when a retry here would have
        to wait longer than the cap (the caller's own retry should handle it)."""
        delay = random.uniform(0, min(self._backoff_cap_s, self._backoff_base_s * 2**attempt))
        if retry_after is not None:
            if retry_after > self._backoff_cap_s:
                return None
            delay = max(delay, retry_after)
        return delay

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        retry: bool,
        params: Params | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> object:
        attempt = 0
        while True:
            try:
                return await self._send_once(
                    method,
                    path,
                    what,
                    params=params,
                    json_body=json_body,
                    headers=headers,
                    timeout_s=timeout_s,
                )
            except InfobipError as exc:
                if not (retry and exc.retryable and attempt < self._max_retries):
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                if delay is None:
                    raise
                log.warning(
                    "Infobip %s failed (status %s %s); retry %d/%d in %.2fs",
                    what,
                    exc.status,
                    exc.message_id,
                    attempt + 1,
                    self._max_retries,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    @staticmethod
    def _object(body: object, what: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InfobipError(
                f"Infobip {what} answered {type(body).__name__}, not an object",
                status=200,
                retryable=False,
            )
        return body

    @staticmethod
    def _conversation_path(conversation_id: str, suffix: str = "") -> str:
        # Percent-encoded as well, so the path can never leave the conversation.
        return f"{CONVERSATIONS}/{quote(_checked(conversation_id), safe='')}{suffix}"

    # -- conversations and messages -------------------------------------------------------

    async def get_messages(
        self,
        conversation_id: str,
        *,
        page: int = 0,
        limit: int = MAX_PAGE_SIZE,
        order_by: str = "createdAt:desc",
        direction: str = "",
        created_after: datetime | None = None,
        message_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One page of Get Messages: ``{"messages": [...], "pagination": {...}}``;
        ``direction`` (INBOUND/OUTBOUND), ``created_after`` and ``message_ids`` (only these
        messages) are documented filters."""
        params: dict[str, str | int | Sequence[str]] = {
            "page": page,
            "limit": limit,
            "orderBy": order_by,
        }
        if message_ids:
            params["messageIds"] = list(message_ids)
        if direction:
            params["direction"] = direction
        if created_after is not None:
            params["createdAfter"] = format_filter_time(created_after)
        body = await self._request(
            "GET",
            self._conversation_path(conversation_id, "/messages"),
            "get messages",
            retry=True,
            params=params,
        )
        return self._object(body, "get messages")

    async def list_conversations(
        self,
        *,
        status: str = "",
        updated_after: datetime | None = None,
        page: int = 0,
        limit: int = MAX_PAGE_SIZE,
        order_by: str = "updatedAt:asc",
    ) -> dict[str, Any]:
        """One page of Get Conversations (``{"conversations": [...], "pagination":
        {...}}``) filtered by the documented ``status`` and ``updatedAfter``."""
        params: dict[str, str | int] = {"page": page, "limit": limit, "orderBy": order_by}
        if status:
            params["status"] = status
        if updated_after is not None:
            params["updatedAfter"] = format_filter_time(updated_after)
        body = await self._request(
            "GET", CONVERSATIONS, "get conversations", retry=True, params=params
        )
        return self._object(body, "get conversations")

    async def route_conversation(self, conversation_id: str) -> dict[str, Any]:
        """Route Conversation: hands the conversation back to Infobip's routing (drops its
        assignee). Retried: routing an already routed conversation again is harmless."""
        body = await self._request(
            "POST",
            self._conversation_path(conversation_id, "/route"),
            "route conversation",
            retry=True,
        )
        return self._object(body, "route conversation")

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """Get Conversation (``ConversationApiModel``)."""
        body = await self._request(
            "GET", self._conversation_path(conversation_id), "get conversation", retry=True
        )
        return self._object(body, "get conversation")

    async def create_message(
        self,
        conversation_id: str,
        body: Mapping[str, Any],
        *,
        agent_id: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Create Message (agent → end user), with ``x-agent-id: agent_id`` when given.
        Infobip refuses the header on an unassigned conversation and requires it on one
        assigned to an agent, so the caller passes the conversation's assignee. Not retried
        here: a failure is raised so the caller's durable queue retries with its
        idempotency handling. ``timeout_s``: at most this long instead of the client's
        timeout (a sender whose lease ends sooner)."""
        created = await self._request(
            "POST",
            self._conversation_path(conversation_id, "/messages"),
            "create message",
            retry=False,
            json_body=dict(body),
            headers={"x-agent-id": agent_id} if agent_id else None,
            timeout_s=timeout_s,
        )
        return self._object(created, "create message")

    async def create_event(self, conversation_id: str, body: Mapping[str, Any]) -> None:
        """Create Conversation Event (``POST .../events``: TYPING_STARTED, TYPING_STOPPED;
        documented for LIVE_CHAT, APPLE_BUSINESS_CHAT and WHATSAPP). Not retried: a late
        typing indicator is worth less than none."""
        await self._request(
            "POST",
            self._conversation_path(conversation_id, "/events"),
            "create event",
            retry=False,
            json_body=dict(body),
        )

    async def assign_conversation(self, conversation_id: str, agent_id: str) -> dict[str, Any]:
        """Change Conversation Assignment (``PUT .../assignee``) to ``agent_id``; the
        conversation as Infobip answers it. Repeating it is harmless, so it is retried."""
        body = await self._request(
            "PUT",
            self._conversation_path(conversation_id, "/assignee"),
            "assign conversation",
            retry=True,
            json_body={"agentId": agent_id},
        )
        return self._object(body, "assign conversation")

    async def close_conversation(self, conversation_id: str) -> bool:
        """Closes the conversation; returns True when it was already closed.

        One Patch Conversation with only ``{"status": "CLOSED"}``: the other fields are
        left as Infobip holds them (a GET then a full PUT could undo a change made in
        between). A 400 "Closed conversation cannot be changed" counts as already closed
        (also when a retried PATCH finds its own first attempt applied).
        """
        try:
            await self._request(
                "PATCH",
                self._conversation_path(conversation_id),
                "close conversation",
                retry=True,
                json_body={"status": "CLOSED"},
            )
        except InfobipError as exc:
            if _is_closed_error(exc):
                return True
            raise
        return False

    # -- tags -----------------------------------------------------------------------------

    async def create_tag(self, name: str) -> None:
        """Creates the tag; a 400 "Tag already exists" counts as success."""
        try:
            await self._request("POST", TAGS, "create tag", retry=True, json_body={"name": name})
        except InfobipError as exc:
            if exc.status == 400 and _TAG_EXISTS_TEXT in exc.text.lower():
                return
            raise

    async def add_tag(self, conversation_id: str, name: str) -> None:
        """Adds an existing tag to the conversation (create it first with create_tag)."""
        await self._request(
            "POST",
            self._conversation_path(conversation_id, "/tags"),
            "add tag",
            retry=True,
            json_body={"tagName": name},
        )

    async def get_tags(self, conversation_id: str) -> list[str]:
        """Names of the tags attached to the conversation (pages through Get Tags)."""
        names: list[str] = []
        seen: set[str] = set()
        for page in range(_MAX_TAG_PAGES):
            body = self._object(
                await self._request(
                    "GET",
                    TAGS,
                    "get tags",
                    retry=True,
                    params={
                        "conversationId": _checked(conversation_id),
                        "page": page,
                        "limit": MAX_PAGE_SIZE,
                    },
                ),
                "get tags",
            )
            items = body.get("tags")
            if not isinstance(items, list):
                break
            fresh = 0
            for item in items:
                name = item.get("name") if isinstance(item, Mapping) else None
                if isinstance(name, str) and name and name not in seen:
                    seen.add(name)
                    names.append(name)
                    fresh += 1
            total = _int_or_none(_mapping(body.get("pagination")).get("totalItems"))
            if (
                len(items) < MAX_PAGE_SIZE
                or fresh == 0
                or (total is not None and (page + 1) * MAX_PAGE_SIZE >= total)
            ):
                break
        return names

    # -- metadata -------------------------------------------------------------------------

    async def get_metadata(self, conversation_id: str) -> dict[str, str]:
        """The conversation's metadata; non-string values are JSON-encoded to strings."""
        body = await self._request(
            "GET", self._conversation_path(conversation_id, "/metadata"), "get metadata", retry=True
        )
        # The spec declares the schema as a string; accept a JSON-encoded object too.
        if isinstance(body, str):
            try:
                body = orjson.loads(body)
            except ValueError:
                return {}
        if not isinstance(body, Mapping):
            return {}
        return {str(key): _as_str(value) for key, value in body.items()}

    async def patch_metadata(self, conversation_id: str, metadata: Mapping[str, str]) -> None:
        """Merges ``metadata`` into the conversation's metadata (creates it when absent)."""
        await self._request(
            "PATCH",
            self._conversation_path(conversation_id, "/metadata"),
            "patch metadata",
            retry=True,
            json_body=dict(metadata),
        )

    # -- account and subscriptions --------------------------------------------------------

    async def update_account_configuration(self, webhook_url: str) -> dict[str, Any]:
        """Sets the legacy account webhook (every inbound message is POSTed there)."""
        body = await self._request(
            "PUT",
            ACCOUNT_CONFIGURATION,
            "update account configuration",
            retry=True,
            json_body={"webhookUrl": webhook_url},
        )
        return self._object(body, "update account configuration")

    async def create_subscription(
        self,
        subscription_id: str,
        name: str,
        events: Iterable[str],
        profile: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Create Subscription on CUSTOMER_ENGAGEMENT with ``profile`` (a full
        ProfileRequest, see :func:`webhook_profile`, or ``{"profileId"}`` to reuse one).
        Not retried (a repeated create would conflict with the first)."""
        body = {
            "subscriptionId": subscription_id,
            "name": name,
            "events": list(events),
            "profile": dict(profile),
        }
        created = await self._request(
            "POST", SUBSCRIPTIONS, "create subscription", retry=False, json_body=body
        )
        return self._object(created, "create subscription")

    async def update_subscription(
        self, subscription_id: str, name: str, events: Iterable[str], profile_id: str
    ) -> dict[str, Any]:
        """Update Subscription (PUT: name, events and the profile by id)."""
        body = {"name": name, "events": list(events), "profile": {"profileId": profile_id}}
        updated = await self._request(
            "PUT",
            f"{SUBSCRIPTIONS}/{quote(subscription_id, safe='')}",
            "update subscription",
            retry=True,
            json_body=body,
        )
        return self._object(updated, "update subscription")

    async def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Get Single Subscription; :class:`InfobipNotFound` when there is none."""
        body = await self._request(
            "GET",
            f"{SUBSCRIPTIONS}/{quote(subscription_id, safe='')}",
            "get subscription",
            retry=True,
        )
        return self._object(body, "get subscription")

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every CUSTOMER_ENGAGEMENT subscription (pages through Get Subscriptions)."""
        found: list[dict[str, Any]] = []
        for page in range(_MAX_SUBSCRIPTION_PAGES):
            body = self._object(
                await self._request(
                    "GET",
                    SUBSCRIPTIONS,
                    "get subscriptions",
                    retry=True,
                    params={"page": page, "size": SUBSCRIPTION_PAGE_SIZE},
                ),
                "get subscriptions",
            )
            results = body.get("results")
            if not isinstance(results, list):
                break
            found.extend(item for item in results if isinstance(item, dict))
            pages = _int_or_none(_mapping(body.get("paging")).get("totalPages"))
            if len(results) < SUBSCRIPTION_PAGE_SIZE or (pages is not None and page + 1 >= pages):
                break
        return found

    async def delete_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Delete Subscription; :class:`InfobipNotFound` when there is none."""
        body = await self._request(
            "DELETE",
            f"{SUBSCRIPTIONS}/{quote(subscription_id, safe='')}",
            "delete subscription",
            retry=True,
        )
        return self._object(body, "delete subscription")

    async def create_profile(self, profile: Mapping[str, Any]) -> dict[str, Any]:
        """Create Notification Profile (with its security settings). Not retried."""
        created = await self._request(
            "POST", PROFILES, "create profile", retry=False, json_body=dict(profile)
        )
        return self._object(created, "create profile")

    async def get_profile(self, profile_id: str) -> dict[str, Any]:
        """Get Single Notification Profile (webhook URL, security authId)."""
        body = await self._request(
            "GET", f"{PROFILES}/{quote(profile_id, safe='')}", "get profile", retry=True
        )
        return self._object(body, "get profile")

    async def delete_profile(self, profile_id: str) -> None:
        await self._request(
            "DELETE", f"{PROFILES}/{quote(profile_id, safe='')}", "delete profile", retry=True
        )

    async def delete_security(self, auth_id: str) -> None:
        await self._request(
            "DELETE", f"{SECURITY}/{quote(auth_id, safe='')}", "delete security", retry=True
        )


def webhook_profile(
    profile_id: str, auth_id: str, notify_url: str, credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """A ProfileRequest: ``notify_url`` with new security settings ``auth_id`` whose type is
    HMAC when ``credentials`` has ``secretKey`` (and ``algorithm``), else BASIC
    (``username``, ``password``)."""
    kind = "HMAC" if "secretKey" in credentials else "BASIC"
    return {
        "profileId": profile_id,
        "webhook": {"notifyUrl": notify_url},
        "security": {"authId": auth_id, "type": kind, "credentials": dict(credentials)},
    }


def format_filter_time(moment: datetime) -> str:
    """A date-time query filter in the documented format ``yyyy-MM-dd'T'HH:mm:ss.SSS+0000``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
