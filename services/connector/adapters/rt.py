"""The ``rt`` connector: Request Tracker 5 through its REST2 API, by polling transactions.

A handover becomes an RT ticket in a queue (the routed queue or CCBRIDGE_RT_QUEUE) with
the transcript as its first message and the Infobip conversation id in a ticket custom
field. Customer messages are appended as correspondence by the bridge's RT user, each
carrying a ``(ccb:<key>)`` marker in its subject so that a retry after a crash finds the
message it already posted. Agent replies and resolutions are found by ONE TransactionSQL
query per queue and poll, from a cursor (the highest transaction id handled) kept in
Redis; a Redis lease lets only one replica poll a queue. Files agents attach to replies
reach the end user as signed gateway links that the gateway serves through
``FetchAgentFile`` (``agent_file`` streams them from RT with the RT token). See
docs/connectors/rt.md.
Its Redis keys are named by services/connector/store.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import mimetypes
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import quote

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.connector.base import (
    Adapter,
    AgentFile,
    AgentMessage,
    CaseClosedEvent,
    CaseEvent,
    CaseToOpen,
    OpenedCase,
)
from ccbridge.services.connector.case_text import (
    as_list,
    author_role,
    case_fields,
    content_of,
    html_to_text,
    media_url,
    message_text,
    transcript_lines,
)
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime import farside
from ccbridge.services.runtime.errors import FarSideError, NotFound, OutOfRange
from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    HttpAnswer,
    HttpClient,
    HttpFailure,
    HttpStream,
)
from ccbridge.services.runtime.lease import LEASE_LUA, Lease, release_if_held
from ccbridge.services.runtime.media import AgentFileLinks
from ccbridge.services.runtime.redis import redis_text

log = logging.getLogger(__name__)

INACTIVE_STATUSES = frozenset({"resolved", "rejected", "deleted"})
"""RT's default lifecycle: a ticket in one of these is closed."""

MESSAGE_KEY_TTL_S = 14 * 24 * 3600
"""How long a posted message's idempotency record lives (Infobip retries within minutes)."""

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""A page of 100 attachments with their content fits; far more than that is not an answer."""

MAX_PAGES_PER_POLL = 10
"""Bounds one poll (and the time a lease must cover); the rest comes next interval."""

# Moves the cursor forward only, and only while the caller still holds the queue's lease
# (a replica that lost it must not move the cursor of the one that took over).
_COMMIT_CURSOR = (
    LEASE_LUA
    + """
if not lease_held(KEYS[2], ARGV[1]) then
  return -1
end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > current then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

_PENDING = "pending"


def build(settings: RtSettings, store: ConnectorStore) -> RtAdapter:
    """The adapter for its parsed settings (the connector registry calls it)."""
    return RtAdapter(settings, store)


# --- RT query and text helpers --------------------------------------------------------


def sql_quote(value: str) -> str:
    """A TicketSQL/TransactionSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def message_marker(idempotency_key: str) -> str:
    """The ``(ccb:...)`` marker a customer message carries in its RT subject. Keys that
    could confuse a LIKE search or exceed RT's 255-character subject are hashed."""
    if re.fullmatch(r"[A-Za-z0-9.:@=-]{1,100}", idempotency_key):
        return f"(ccb:{idempotency_key})"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"(ccb:sha256-{digest})"


def requestor_address(channel: str, end_user: str, conversation_id: str, domain: str) -> str:
    """A stable made-up e-mail address for the end user (RT wants an address per person;
    the .invalid default domain guarantees RT's notifications go nowhere)."""
    local = f"{channel}-{end_user or conversation_id}".lower()
    local = re.sub(r"[^a-z0-9._-]+", "-", local)
    local = re.sub(r"[-.]{2,}", "-", local).strip(".-")[:64].strip(".-")
    return f"{local or 'customer'}@{domain}"


def file_name(message: common_pb2.Message, disposition: str, mime_type: str) -> str:
    """The attachment's file name: the content's, else the download's
    Content-Disposition, else ``<type>-<message id><extension of the MIME type>``."""
    content = content_of(message)
    name = next(
        (content[k] for k in ("filename", "fileName", "name") if isinstance(content.get(k), str)),
        "",
    )
    if not name:
        match = re.search(r'filename="?([^";]+)"?', disposition)
        name = match.group(1) if match else ""
    if not name:
        extension = mimetypes.guess_extension(mime_type) or ""
        name = f"{message.content_type.lower() or 'file'}-{message.id[:64]}{extension}"
    return re.sub(r"[\\/\x00-\x1f]+", "_", name).strip(" .")[:200] or "file"


def case_subject(case: CaseToOpen) -> str:
    first = next((message_text(m) for m in case.transcript if author_role(m) == "customer"), "")
    first = " ".join(first.split())
    if len(first) > 80:
        first = first[:79] + "…"
    return f"Chat handover ({case.channel or 'chat'}): {first or case.conversation_id}"


def case_content(case: CaseToOpen) -> str:
    """The ticket's first message: context, then the transcript as readable plain text."""
    head = [
        "Chat handed over by the Infobip bridge. Reply here to answer the customer;",
        "comments stay internal. Resolve the ticket to end the chat.",
        "",
        # No Queue line: the ticket is in its queue.
        *case_fields(case, queue=False),
    ]
    note = " (capped: earlier messages left out)" if case.transcript_truncated else ""
    head += ["", f"Transcript (times UTC, oldest first){note}:"]
    body = transcript_lines(case.transcript) or ["(no messages)"]
    return "\n".join(head + body) + "\n"


def _rt_message(answer: HttpAnswer) -> str:
    """RT's error text: {"message": ...} or a list of strings; else a short body excerpt."""
    try:
        body = answer.json()
    except ValueError:
        return answer.body[:200].decode(errors="replace").strip()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body, list):
        return "; ".join(str(item) for item in body)[:300]
    return ""


def item_id(item: Mapping[str, Any]) -> int | None:
    """The numeric id of a REST2 item; None when RT's answer has none (an answer is data:
    a malformed one is skipped or refused, never a crash of the poll)."""
    value = item.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _user_id(value: Any) -> str:
    """REST2 renders users as {"id": "<name>", ...}."""
    if isinstance(value, dict):
        return str(value.get("id", ""))
    return str(value or "")


def infobip_kind(mime_type: str) -> str:
    """The Infobip content type an agent's file is sent as, by its MIME type."""
    major = mime_type.split("/", 1)[0].strip().lower()
    return {"image": "IMAGE", "video": "VIDEO", "audio": "AUDIO"}.get(major, "DOCUMENT")


def is_file(mime_type: str, file_name: str, size: int | None) -> bool:
    """Whether an attachment of a reply is a file the agent attached, rather than the
    reply's body (text/plain, text/html), a MIME container (multipart/*, message/*) or the
    empty body part RT adds to a reply without text (``size``: its length, None when not
    known)."""
    if file_name:
        return True
    kind = mime_type.strip().lower()
    if not kind or kind.startswith(("text/", "multipart/", "message/")):
        return False
    return size != 0


def part_size(item: Mapping[str, Any]) -> int | None:
    """The decoded length of an attachment as RT recorded it (its ``Content-Length``
    header), None when the listing did not say."""
    match = re.search(r"(?im)^Content-Length:\s*(\d{1,18})\s*$", str(item.get("Headers") or ""))
    return int(match.group(1)) if match else None


_FILE_REF = re.compile(r"(\d{1,18})/(\d{1,18})")
"""An RT file reference in a signed media link: ``<transaction id>/<attachment id>``."""


@dataclass(frozen=True)
class ReplyFile:
    """A file attached to an agent's reply."""

    attachment_id: int
    name: str
    mime_type: str


@dataclass(frozen=True)
class _Ticket:
    """What the poll needs to know about a ticket."""

    requestors: frozenset[str]  # user names (for made-up requestors: the address)
    conversation_id: str  # '' when no handover opened it


@dataclass
class _QueuePoll:
    """What one poll saw in one queue, kept until ``commit_poll``."""

    lease_token: str
    max_seen: int
    events: list[tuple[int, CaseEvent]] = field(default_factory=list)


class RtAdapter(Adapter):
    """Request Tracker 5 over REST2 (poll mode). One instance per process."""

    name = "rt"
    mode: Literal["push", "poll"] = "poll"

    def __init__(self, settings: RtSettings, store: ConnectorStore) -> None:
        self.settings = settings
        self._store = store
        self._redis = store.redis
        self._http = HttpClient(
            base_url=f"{settings.url}/REST/2.0",
            headers={
                "Authorization": f"token {settings.token.value}",
                "Accept": "application/json",
            },
            timeout_s=settings.timeout_s,
            max_answer_bytes=MAX_ANSWER_BYTES,
            system="rt",  # the operation is the HTTP method: RT's paths carry ticket ids
        )
        # Inbound media downloads: whole URLs, never with the RT token.
        self._files = HttpClient(
            timeout_s=settings.timeout_s,
            max_answer_bytes=max(1, settings.attach_max_bytes),
            headers={"User-Agent": "ccbridge"},
            system="rt",
        )
        # Files of agent replies: RT's own download URL (raw bytes, with the RT token).
        self._downloads = HttpClient(
            base_url=settings.url,
            headers={"Authorization": f"token {settings.token.value}"},
            timeout_s=settings.timeout_s,
            max_answer_bytes=settings.media.max_bytes,
        )
        self._links = AgentFileLinks(settings.media)
        self._leases: dict[str, Lease] = {}  # queue → its poll lease
        self._pending: dict[str, _QueuePoll] = {}  # queue → last poll, until committed
        self._lease_ms = int(settings.lease_ttl_s * 1000)

    # --- HTTP ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        expect: tuple[int, ...] = (200,),
    ) -> HttpAnswer:
        """One REST2 call; far-side failures become the FarSideError the far-side policy
        says (runtime/farside.py), with RT's own error text."""
        what = f"RT {method} {path}"
        try:
            answer = await self._http.request(method, path, params=params, json_body=json_body)
        except HttpFailure as exc:
            raise farside.failure_error(what, exc) from exc
        if answer.status in expect:
            return answer
        verdict = farside.judge_status(answer.status, answer.headers)
        raise farside.error(
            what, replace(verdict, reason=f"{verdict.reason}: {_rt_message(answer)}")
        )

    async def _call_json(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None
    ) -> Any:
        """A GET-like call's JSON answer."""
        return self._json(await self._call(method, path, params=params), f"RT {method} {path}")

    @staticmethod
    def _json(answer: HttpAnswer, what: str) -> Any:
        try:
            return answer.json()
        except ValueError as exc:
            raise FarSideError(
                f"{what}: answered HTTP {answer.status} without JSON (is CCBRIDGE_RT_URL right?)",
                retryable=False,
                status=answer.status,
            ) from exc

    async def _items(self, path: str, params: Mapping[str, str | int]) -> list[dict[str, Any]]:
        if "[" in str(params.get("query", "")):
            # RT 5.0.3 takes any query containing '[' for a JSON search and fails (500).
            raise FarSideError(
                f"RT GET {path}: RT cannot search for a queue name or id containing '['",
                retryable=False,
            )
        body = await self._call_json("GET", path, params=params)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise FarSideError(f"RT GET {path}: no items in the answer", retryable=False)
        return [item for item in items if isinstance(item, dict)]

    async def _max_transaction_id(self) -> int:
        items = await self._items(
            "/transactions",
            {
                "query": "id > 0",
                "orderby": "id",
                "order": "DESC",
                "per_page": 1,
            },
        )
        if not items:
            return 0
        top = item_id(items[0])
        if top is None:
            raise FarSideError(
                "RT GET /transactions: no transaction id in the answer", retryable=False
            )
        return top

    # --- Redis helpers ---------------------------------------------------------------

    def _cursor_key(self, queue: str) -> str:
        return self._store.rt_cursor(queue)

    async def _get(self, key: str) -> str | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        return redis_text(raw)

    async def _release(self, key: str, token: str) -> None:
        await release_if_held(self._redis, key, token)

    async def _ensure_cursor(self, queue: str) -> int:
        """The queue's cursor; the first time, RT's current highest transaction id (so a
        fresh bridge does not replay history). SET NX: a concurrent start cannot move it."""
        current = await self._get(self._cursor_key(queue))
        if current is None:
            start = await self._get_v1(self._cursor_key(queue))
            await self._redis.set(
                self._cursor_key(queue), start or await self._max_transaction_id(), nx=True
            )
            current = await self._get(self._cursor_key(queue))
        return int(current or 0)

    async def _get_v1(self, key: str) -> str | None:
        """The key as releases up to d3ac8b9 kept it, if elsewhere (connector/store.py)."""
        v1 = self._store.rt_v1(key)
        return await self._get(v1) if v1 else None

    # --- open ------------------------------------------------------------------------

    async def _find_ticket(self, queue: str, conversation_id: str) -> str | None:
        query = (
            f"Queue = {sql_quote(queue)} AND "
            f"'CF.{{{self.settings.conversation_field}}}' = {sql_quote(conversation_id)}"
        )
        items = await self._items(
            "/tickets",
            {
                "query": query,
                "orderby": "id",
                "order": "DESC",
                "per_page": 1,
                "fields": "Status",
            },
        )
        return str(items[0]["id"]) if items else None

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        queue = case.queue or self.settings.queue
        lock_key = self._store.rt_open_lock(case.conversation_id)
        token = secrets.token_hex(8)
        # Three calls at most; the lock outlives them so two opens never race.
        budget = 3 * self.settings.timeout_s + 1
        if not await self._redis.set(lock_key, token, nx=True, px=int((budget + 5) * 1000)):
            wait_ms = await self._redis.pttl(lock_key)
            raise FarSideError(
                "another open of this conversation is in progress",
                retryable=True,
                retry_after=max(wait_ms, 1000) / 1000,
            )
        in_doubt = False  # the create may have reached RT without us learning the outcome
        try:
            async with asyncio.timeout(budget):
                existing = await self._find_ticket(queue, case.conversation_id)
                # Before the ticket exists: the first poll must see every later reply.
                await self._ensure_cursor(queue)
                await self._redis.sadd(self._store.rt_queues, queue)
                if existing is not None:
                    log.info(
                        "rt: ticket %s already exists for conversation %s",
                        existing,
                        case.conversation_id,
                    )
                    return OpenedCase(external_id=existing, existing=True)
                body: dict[str, Any] = {
                    "Queue": queue,
                    "Subject": case_subject(case),
                    "Requestor": requestor_address(
                        case.channel,
                        case.end_user,
                        case.conversation_id,
                        self.settings.requestor_domain,
                    ),
                    "Content": case_content(case),
                    "ContentType": "text/plain",
                    "CustomFields": {self.settings.conversation_field: case.conversation_id},
                }
                if case.priority > 0:
                    body["Priority"] = min(case.priority, 100)
                in_doubt = True
                try:
                    answer = await self._call("POST", "/ticket", json_body=body, expect=(201,))
                except FarSideError as exc:
                    in_doubt = farside.may_have_been_processed(exc)
                    raise
                in_doubt = False
                created = self._json(answer, "RT POST /ticket")
                ticket_id = str(created.get("id", "")) if isinstance(created, dict) else ""
                if not ticket_id.isdigit():
                    raise FarSideError(
                        "RT POST /ticket: no ticket id in the answer", retryable=True
                    )
                log.info(
                    "rt: opened ticket %s in queue %s for conversation %s",
                    ticket_id,
                    queue,
                    case.conversation_id,
                )
                return OpenedCase(external_id=ticket_id, existing=False)
        except TimeoutError as exc:
            raise FarSideError("RT open_case: out of time", retryable=True) from exc
        finally:
            # Unknown outcome: keep the lock until it expires, so that the retry's search
            # runs after RT finished the create (see post_customer_message).
            if not in_doubt:
                await self._release(lock_key, token)

    # --- customer messages -------------------------------------------------------------

    async def _find_posted(
        self, external_id: str, marker: str, kind: str = "Correspond"
    ) -> str | None:
        """The ``kind`` transaction of this ticket that carries ``marker``, if any."""
        query = (
            f"ObjectType = 'RT::Ticket' AND ObjectId = {int(external_id)} AND "
            f"Type = {sql_quote(kind)} AND Creator = {sql_quote(self.settings.user)} AND "
            f"Data LIKE {sql_quote(marker)}"
        )
        items = await self._items(
            "/transactions",
            {
                "query": query,
                "orderby": "id",
                "per_page": 100,
                "fields": "Data",
            },
        )
        for item in items:  # LIKE is a substring match (and '_' a wildcard): check exactly
            if marker in str(item.get("Data", "")):
                return str(item["id"])
        return None

    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        if not external_id.isdigit():
            raise FarSideError(f"not an RT ticket id: {external_id!r}", retryable=False)
        if not idempotency_key:
            raise FarSideError("an idempotency key is required", retryable=False)
        done_key = self._store.rt_message(conversation_id, idempotency_key)
        lock_key = self._store.rt_message_lock(conversation_id, idempotency_key)
        state = await self._get(done_key) or await self._get_v1(done_key)
        if state and state != _PENDING:
            return state  # posted before: the RT transaction id
        token = secrets.token_hex(8)
        budget = (3 if media_url(message) else 2) * self.settings.timeout_s + 1
        if not await self._redis.set(lock_key, token, nx=True, px=int((budget + 5) * 1000)):
            wait_ms = await self._redis.pttl(lock_key)
            raise FarSideError(
                "this message is being posted by another attempt",
                retryable=True,
                retry_after=max(wait_ms, 1000) / 1000,
            )
        marker = message_marker(idempotency_key)
        in_doubt = False  # the POST may have reached RT without us learning the outcome
        try:
            async with asyncio.timeout(budget):
                state = await self._get(done_key) or await self._get_v1(done_key)
                if state and state != _PENDING:
                    return state
                if state == _PENDING:
                    # An earlier attempt may have reached RT and died before recording it.
                    found = await self._find_posted(external_id, marker)
                    if found:
                        await self._redis.set(done_key, found, ex=MESSAGE_KEY_TTL_S)
                        log.info(
                            "rt: message already on ticket %s (transaction %s)", external_id, found
                        )
                        return found
                attachments, note = await self._attachments(message)
                body: dict[str, Any] = {
                    "Subject": f"Customer message {marker}",
                    "Content": "\n".join(p for p in (message_text(message), note) if p)
                    or "(empty message)",
                    "ContentType": "text/plain",
                }
                if attachments:
                    body["Attachments"] = attachments
                await self._redis.set(done_key, _PENDING, ex=MESSAGE_KEY_TTL_S)
                in_doubt = True
                try:
                    answer = await self._call(
                        "POST",
                        f"/ticket/{external_id}/correspond",
                        expect=(201,),
                        json_body=body,
                    )
                except FarSideError as exc:
                    in_doubt = farside.may_have_been_processed(exc)
                    raise
                in_doubt = False
                match = re.search(r"/transaction/(\d+)", answer.headers.get("location", ""))
                txn_id = match.group(1) if match else ""
                if not txn_id:
                    # Posted, but RT did not say where: find it by its marker.
                    txn_id = await self._find_posted(external_id, marker) or ""
                if txn_id:
                    await self._redis.set(done_key, txn_id, ex=MESSAGE_KEY_TTL_S)
                log.info(
                    "rt: posted customer message to ticket %s (transaction %s)",
                    external_id,
                    txn_id or "?",
                )
                return txn_id
        except TimeoutError as exc:
            raise FarSideError("RT post_customer_message: out of time", retryable=True) from exc
        finally:
            # After a POST with an unknown outcome, keep the lock until it expires: RT may
            # still be working on the request, and the next attempt's search must see it.
            if not in_doubt:
                await self._release(lock_key, token)

    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        """A comment on the ticket (agents see it, the requestor does not; the poller reads
        only correspondence and status changes, so it never comes back as a reply). Found
        by its marker before it is posted again."""
        if not external_id.isdigit():
            raise FarSideError(f"not an RT ticket id: {external_id!r}", retryable=False)
        marker = message_marker(idempotency_key or f"failed:{message_id}")
        await self._comment(
            external_id,
            marker,
            f"Reply not delivered {marker}",
            "The reply below was NOT delivered to the customer.\n"
            f"Reason: {reason}\nReply: {message_id}",
        )
        log.info("rt: told ticket %s a reply was not delivered", external_id)

    async def _comment(self, external_id: str, marker: str, subject: str, content: str) -> None:
        """A comment on the ticket for the agents (the requestor does not see it, and the
        poller never reads it back), posted once: found by its marker first."""
        if await self._find_posted(external_id, marker, "Comment"):
            return
        await self._call(
            "POST",
            f"/ticket/{external_id}/comment",
            expect=(201,),
            json_body={"Subject": subject, "Content": content, "ContentType": "text/plain"},
        )

    async def _attachments(self, message: common_pb2.Message) -> tuple[list[dict[str, str]], str]:
        """The RT ``Attachments`` of a media message and a note for its text.

        The file is downloaded from the message's URL (the gateway's signed link when the
        media proxy is on, so through the bridge) up to CCBRIDGE_RT_ATTACH_MAX_BYTES, held
        in memory only for this post. A larger file, or one that cannot be downloaded,
        stays a link in the text, and the note says why it is not attached.
        """
        url = media_url(message)
        limit = self.settings.attach_max_bytes
        if not url or limit == 0:
            return [], ""
        try:
            answer = await self._files.request("GET", url, operation="download attachment")
        except AnswerTooLarge:
            return [], f"(not attached: larger than {limit} bytes; open the link above)"
        except HttpFailure as exc:
            log.warning("rt: inbound media not downloaded (%s); linked instead", exc)
            return [], "(not attached: the file could not be downloaded; open the link above)"
        if not answer.ok:
            log.warning("rt: inbound media download answered %d; linked instead", answer.status)
            return [], f"(not attached: the download answered HTTP {answer.status})"
        kind = answer.headers.get("content-type", "").split(";")[0].strip().lower()
        kind = kind or "application/octet-stream"
        attachment = {
            "FileName": file_name(message, answer.headers.get("content-disposition", ""), kind),
            "FileType": kind,
            "FileContent": base64.b64encode(answer.body).decode(),
        }
        return [attachment], ""

    # --- files of agent replies --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def agent_file(self, ref: str) -> AsyncIterator[AgentFile]:
        """A reply's file, streamed from RT's own download URL
        (``/Ticket/Attachment/<transaction>/<attachment>``, raw bytes, with the RT token)
        after REST2 confirmed it is a file of that transaction; capped by
        CCBRIDGE_MEDIA_MAX_BYTES."""
        match = _FILE_REF.fullmatch(ref)
        if match is None:
            raise NotFound("not an RT file reference")
        txn_id, attachment_id = int(match[1]), int(match[2])
        try:
            items = await self._items(
                f"/transaction/{txn_id}/attachments",
                {"fields": "ContentType,Filename,Headers", "per_page": 100},
            )
        except FarSideError as exc:
            if exc.status == 404:
                raise NotFound("RT has no such transaction") from None
            raise
        found = next((item for item in items if item_id(item) == attachment_id), None)
        if found is None:
            raise NotFound("RT has no such file")
        mime_type = str(found.get("ContentType") or "").lower() or "application/octet-stream"
        name = str(found.get("Filename") or "")
        size = part_size(found)
        if not is_file(mime_type, name, size):
            raise NotFound("not a file of the reply")
        limit = self.settings.media.max_bytes
        if size is not None and size > limit:
            raise OutOfRange("the file is larger than CCBRIDGE_MEDIA_MAX_BYTES")
        path = f"/Ticket/Attachment/{txn_id}/{attachment_id}/{quote(name or 'file', safe='')}"
        try:
            async with self._downloads.stream("GET", path) as upstream:
                self._check_download(upstream, mime_type, limit)
                yield AgentFile(
                    content_type=mime_type,
                    content_length=upstream.content_length,
                    name=name,
                    chunks=self._download_chunks(upstream, limit),
                )
        except HttpFailure as exc:
            raise farside.failure_error("RT file download", exc) from exc

    @staticmethod
    def _check_download(upstream: HttpStream, mime_type: str, limit: int) -> None:
        if upstream.status in (400, 404):
            raise NotFound("RT has no such file")
        if 300 <= upstream.status < 400:
            # RT sends a request it did not authenticate to its login page.
            raise FarSideError(
                "RT file download: redirected to RT's login page (is CCBRIDGE_RT_TOKEN valid?)",
                retryable=False,
                status=upstream.status,
            )
        if upstream.status != 200:
            verdict = farside.judge_status(upstream.status, upstream.headers)
            raise farside.error("RT file download", verdict)
        served = upstream.headers.get("content-type", "").split(";")[0].strip().lower()
        if served == "text/html" and mime_type != "text/html":
            # Never pass a web page of RT's (an error or login page) off as the file.
            raise FarSideError(
                "RT file download: answered with a web page (is CCBRIDGE_RT_TOKEN valid?)",
                retryable=False,
            )
        if upstream.content_length is not None and upstream.content_length > limit:
            raise OutOfRange("the file is larger than CCBRIDGE_MEDIA_MAX_BYTES")

    @staticmethod
    async def _download_chunks(upstream: HttpStream, limit: int) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in upstream.chunks():
                size += len(chunk)
                if size > limit:
                    raise OutOfRange("the file is larger than CCBRIDGE_MEDIA_MAX_BYTES")
                yield chunk
        except HttpFailure as exc:
            raise farside.failure_error("RT file download", exc) from exc

    # --- close -------------------------------------------------------------------------

    async def _status(self, external_id: str) -> str:
        body = await self._call_json("GET", f"/ticket/{external_id}")
        return str(body.get("Status", "")) if isinstance(body, dict) else ""

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        if not external_id.isdigit():
            raise FarSideError(f"not an RT ticket id: {external_id!r}", retryable=False)
        if await self._status(external_id) in INACTIVE_STATUSES:
            return True
        answer = self._json(
            await self._call("PUT", f"/ticket/{external_id}", json_body={"Status": "resolved"}),
            f"RT PUT /ticket/{external_id}",
        )
        # REST2 answers 200 with messages even when a change was refused: check the state.
        status = await self._status(external_id)
        if status not in INACTIVE_STATUSES:
            detail = "; ".join(str(m) for m in answer) if isinstance(answer, list) else ""
            raise FarSideError(
                f"RT did not resolve ticket {external_id} (status {status!r}: {detail})",
                retryable=False,
            )
        log.info(
            "rt: resolved ticket %s for conversation %s (%s)", external_id, conversation_id, reason
        )
        return False

    # --- poll --------------------------------------------------------------------------

    async def _queues(self) -> list[str]:
        queues = [self.settings.queue]
        v1 = self._store.rt_v1(self._store.rt_queues)
        found: set[bytes | str] = set()
        for key in (self._store.rt_queues, *([v1] if v1 else [])):
            found |= await self._redis.smembers(key)  # one slot each (Redis Cluster)
        for raw in sorted(found):
            name = redis_text(raw)
            if name not in queues:
                queues.append(name)
        return queues

    async def _hold_lease(self, queue: str) -> str | None:
        """Takes or renews the queue's poll lease; None when another replica holds it."""
        lease = self._leases.get(queue)
        if lease is None:
            lease = self._leases[queue] = self._store.rt_lease(queue, self._lease_ms)
        token = await lease.hold()
        if token is None:
            self._leases.pop(queue, None)
        return token

    def _poll_query(self, queue: str, cursor: int) -> str:
        return (
            f"TicketQueue = {sql_quote(queue)} AND id > {cursor} AND "
            f"Creator != {sql_quote(self.settings.user)} AND (Type = 'Correspond' OR "
            "(Type = 'Status' AND (NewValue = 'resolved' OR NewValue = 'rejected' OR "
            "NewValue = 'deleted')))"
        )

    async def _new_transactions(self, queue: str, cursor: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = cursor
        for _ in range(MAX_PAGES_PER_POLL):
            # Transaction searches have no total and no next page: page by id.
            page = await self._items(
                "/transactions",
                {
                    "query": self._poll_query(queue, after),
                    "orderby": "id",
                    "order": "ASC",
                    "per_page": self.settings.poll_page,
                    "fields": "Type,Creator,ObjectId,ObjectType,NewValue,Created",
                },
            )
            found.extend(page)
            ids = [txn for item in page if (txn := item_id(item)) is not None]
            if len(page) < self.settings.poll_page or not ids or max(ids) <= after:
                break  # the last page, or one that cannot move the search forward
            after = max(ids)
        return found

    async def _ticket(self, ticket_id: str, cache: dict[str, _Ticket]) -> _Ticket:
        """Requestors and conversation id of a ticket, read once per poll."""
        if ticket_id not in cache:
            try:
                body = await self._call_json("GET", f"/ticket/{ticket_id}")
            except FarSideError as exc:
                if exc.retryable:
                    raise
                # Gone or out of our rights (e.g. moved away): not ours to follow. Skipping
                # it keeps one bad ticket from blocking the queue's cursor forever.
                log.warning(
                    "rt: cannot read ticket %s (%s); its events are skipped", ticket_id, exc.status
                )
                body = {}
            body = body if isinstance(body, dict) else {}
            conversation = ""
            for cf in as_list(body.get("CustomFields")):
                if isinstance(cf, dict) and cf.get("name") == self.settings.conversation_field:
                    values = as_list(cf.get("values"))
                    conversation = values[0] if values and isinstance(values[0], str) else ""
            requestors = frozenset(_user_id(p).lower() for p in as_list(body.get("Requestor")))
            cache[ticket_id] = _Ticket(requestors=requestors, conversation_id=conversation)
        return cache[ticket_id]

    async def _reply(self, txn_id: int) -> tuple[str, list[ReplyFile]]:
        """The text of a reply (its plain body, else its HTML body as text) and the files
        attached to it, in RT's order."""
        # Never ask for Parent here: RT 5.0.3 answers 500.
        items = await self._items(
            f"/transaction/{txn_id}/attachments",
            {
                "fields": "ContentType,Content,Filename,Headers",
                "per_page": 100,
            },
        )
        plain: list[str] = []
        html: list[str] = []
        files: list[ReplyFile] = []
        for item in items:
            kind = str(item.get("ContentType", "")).lower()
            name = str(item.get("Filename") or "")
            content = item.get("Content")
            if is_file(kind, name, part_size(item)):
                attachment_id = item_id(item)
                if attachment_id is not None:
                    files.append(ReplyFile(attachment_id, name, kind))
            elif kind == "text/plain" and isinstance(content, str) and content.strip():
                plain.append(content.strip())
            elif kind == "text/html" and isinstance(content, str) and content.strip():
                html.append(html_to_text(content))
        body = plain or html  # multipart/alternative: the plain part, else the HTML one
        return "\n\n".join(body).strip(), files

    async def _reply_attachments(
        self, ticket_id: str, txn_id: int, files: Sequence[ReplyFile]
    ) -> tuple[common_pb2.Attachment, ...]:
        """The Infobip attachments of a reply's files: signed gateway links, which the
        gateway serves through ``FetchAgentFile``. When no link can be made, none is sent
        and the agents are told on the ticket why (once: the comment carries a marker)."""
        if not files:
            return ()
        reason = self._links.unavailable()
        if not reason:
            return tuple(
                common_pb2.Attachment(
                    url=self._links.link(self.name, f"{txn_id}/{file.attachment_id}"),
                    content_type=infobip_kind(file.mime_type),
                    name=file.name,
                )
                for file in files
            )
        log.warning(
            "rt: %d files of transaction %s on ticket %s not sent to the customer: %s",
            len(files),
            txn_id,
            ticket_id,
            reason,
        )
        marker = message_marker(f"files:rt-txn-{txn_id}")
        names = ", ".join(file.name or f"attachment {file.attachment_id}" for file in files)
        try:
            await self._comment(
                ticket_id,
                marker,
                f"Files not sent {marker}",
                f"The files of the reply below were NOT sent to the customer: {names}.\n"
                f"Reason: {reason}\nReply: rt-txn-{txn_id}\n"
                "Its text (if any) was sent.",
            )
        except FarSideError as exc:
            if exc.retryable:
                raise
            log.warning("rt: could not tell ticket %s (%s)", ticket_id, exc.status)
        return ()

    async def _to_event(
        self, txn_id: int, item: dict[str, Any], tickets: dict[str, _Ticket]
    ) -> CaseEvent | None:
        ticket_id = str(item.get("ObjectId", ""))
        kind = item.get("Type")
        creator = _user_id(item.get("Creator"))
        if item.get("ObjectType", "RT::Ticket") != "RT::Ticket" or not (
            ticket_id.isascii() and ticket_id.isdigit()
        ):
            return None
        if kind not in ("Status", "Correspond"):  # a tuple: RT's answer may hold a list here
            return None
        # The customer's own posts (mail gateway, or a requestor replying by e-mail) are
        # not agent replies; checked before any call.
        if kind == "Correspond" and creator.lower().endswith(
            "@" + self.settings.requestor_domain.lower()
        ):
            return None
        ticket = await self._ticket(ticket_id, tickets)
        if not ticket.conversation_id:
            return None  # a ticket of the queue that no handover opened (e.g. by e-mail)
        event_id = f"rt-txn-{txn_id}"
        if kind == "Status":
            return CaseClosedEvent(
                external_id=ticket_id,
                event_id=event_id,
                reason=str(item.get("NewValue") or "resolved"),
            )
        if creator.lower() in ticket.requestors:
            return None
        try:
            text, files = await self._reply(txn_id)
        except FarSideError as exc:
            if exc.retryable:
                raise
            log.warning(
                "rt: cannot read transaction %s on ticket %s (%s); skipped",
                txn_id,
                ticket_id,
                exc.status,
            )
            return None
        attachments = await self._reply_attachments(ticket_id, txn_id, files)
        if not text and not attachments:
            log.info("rt: transaction %s on ticket %s has no content; skipped", txn_id, ticket_id)
            return None
        return AgentMessage(
            external_id=ticket_id,
            event_id=event_id,
            message_id=event_id,
            text=text,
            agent_name=creator,
            attachments=attachments,
        )

    async def poll(self) -> list[CaseEvent]:
        self._pending.clear()
        events: list[CaseEvent] = []
        for queue in await self._queues():
            token = await self._hold_lease(queue)
            if token is None:
                continue
            cursor = await self._ensure_cursor(queue)
            items = await self._new_transactions(queue, cursor)
            seen = _QueuePoll(lease_token=token, max_seen=cursor)
            tickets: dict[str, _Ticket] = {}
            for item in items:
                txn_id = item_id(item)
                if txn_id is None:
                    log.warning("rt: a transaction of queue %s has no numeric id; skipped", queue)
                    continue
                seen.max_seen = max(seen.max_seen, txn_id)
                event = await self._to_event(txn_id, item, tickets)
                if event is not None:
                    seen.events.append((txn_id, event))
                    events.append(event)
            self._pending[queue] = seen
        return events

    async def commit_poll(self, events: Sequence[CaseEvent]) -> None:
        """Moves each queue's cursor past what the last poll saw (skipped transactions
        too), but never past an event of that poll that is not in ``events``."""
        accepted = {event.event_id for event in events}
        for queue, seen in self._pending.items():
            missing = [txn for txn, event in seen.events if event.event_id not in accepted]
            target = min(missing) - 1 if missing else seen.max_seen
            moved = await self._redis.eval(
                _COMMIT_CURSOR,
                2,
                self._cursor_key(queue),
                self._store.rt_lease(queue, self._lease_ms).key,
                seen.lease_token,
                target,
            )
            if moved == -1:
                log.warning("rt: lost the poll lease of queue %s; cursor not moved", queue)
        self._pending.clear()

    async def aclose(self) -> None:
        for queue, lease in list(self._leases.items()):
            try:
                await lease.release()
            except Exception:  # Redis gone: the lease expires on its own
                log.warning("rt: could not release the poll lease of queue %s", queue)
        self._leases.clear()
        await self._http.aclose()
        await self._files.aclose()
        await self._downloads.aclose()
