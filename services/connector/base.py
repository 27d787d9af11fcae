"""The connector contract: what every CCaaS adapter implements.

An adapter opens a case, posts customer messages, closes a case, and turns what the CCaaS
pushes (``parse_webhook``) or what polling finds (``poll``) into :class:`CaseEvent`s that
the connector service hands to Session. Adapters raise
:class:`ccbridge.services.runtime.errors.FarSideError` for far-side failures (``retryable`` says
whether a retry can help, ``retry_after`` honours 429/Retry-After) and
:class:`ccbridge.services.runtime.errors.Unauthenticated` / ``InvalidArgument`` for bad webhooks.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.errors import FarSideError, InvalidArgument, NotFound
from ccbridge.services.runtime.json_depth import MAX_JSON_DEPTH, too_deep

# Cases the default post_customer_messages delivers at the same time.
CASE_CONCURRENCY = 16
# Monotonic time after which a PostCustomerMessages call starts no new post: the rest of
# the call's messages are answered "not attempted" (delivered short, no error) and come
# back in Session's next batch. Set by the servicer from the call's deadline, so a slow
# CCaaS (RT takes ~0.3 s per message) never makes the whole call time out half done.
START_POSTS_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "start_posts_until", default=None
)


def may_start_post() -> bool:
    """False once the current call's time to start posts is over."""
    until = START_POSTS_UNTIL.get()
    return until is None or time.monotonic() < until


T = TypeVar("T")


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but when one raises the others are cancelled (and awaited)
    before the error propagates, so nothing keeps running behind the caller's back."""
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def webhook_json(body: bytes) -> object:
    """A pushed webhook's (verified) body parsed; InvalidArgument when it is not JSON or
    nests deeper than ``MAX_JSON_DEPTH`` levels. The adapter checks its shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"body is not JSON ({exc})") from None
    if too_deep(body, doc):
        raise InvalidArgument(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return doc


@dataclass(frozen=True)
class CaseToOpen:
    """Everything a case is created from."""

    conversation_id: str
    channel: str
    end_user: str
    queue: str
    priority: int
    skills: tuple[str, ...]
    rule: str
    tags: tuple[str, ...]
    metadata: Mapping[str, str]
    transcript: Sequence[common_pb2.Message]
    transcript_truncated: bool
    idempotency_key: str


@dataclass(frozen=True)
class OpenedCase:
    """The case at the CCaaS."""

    external_id: str
    existing: bool = False


@dataclass(frozen=True)
class AgentMessage:
    """An agent wrote to the end user."""

    external_id: str  # case id
    event_id: str  # dedupe key at the CCaaS (message or transaction id)
    message_id: str
    text: str
    agent_name: str = ""
    content_type: str = "TEXT"
    content: Mapping[str, object] = field(default_factory=dict)  # Infobip content when not TEXT
    attachments: tuple[common_pb2.Attachment, ...] = ()  # sent after the text, in order
    location: common_pb2.Location | None = None  # sent last


@dataclass(frozen=True)
class CaseClosedEvent:
    """The case was closed/resolved at the CCaaS."""

    external_id: str
    event_id: str
    reason: str


@dataclass(frozen=True)
class AgentTyping:
    """The agent started (``typing``) or stopped typing; ``at``: unix seconds when the
    CCaaS says it happened (None: unknown). Relayed at once, never stored."""

    external_id: str
    event_id: str
    typing: bool
    at: float | None = None


CaseEvent = AgentMessage | CaseClosedEvent | AgentTyping


@dataclass(frozen=True)
class CaseMessages:
    """End-user messages for one case, oldest first; each message id is its
    idempotency key."""

    external_id: str
    conversation_id: str
    messages: Sequence[common_pb2.Message]


@dataclass(frozen=True)
class CaseDelivery:
    """What happened to one case's messages: ``messages[:delivered]`` were accepted (with
    the CCaaS ids in ``message_ids``, '' where it gives none); ``error`` says why
    ``messages[delivered]`` failed, None when every message was accepted."""

    delivered: int
    message_ids: list[str]
    error: FarSideError | None = None


@dataclass(frozen=True)
class AgentFile:
    """A file an agent attached at the CCaaS, open for reading (``FetchAgentFile``):
    ``chunks`` yields its bytes as they come, never the whole file at once."""

    content_type: str
    content_length: int | None  # None: not announced
    name: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class WebhookBatch:
    """What one pushed webhook carried: the events for Session, and how many items the
    adapter skipped on purpose (event types it does not handle)."""

    events: list[CaseEvent]
    ignored: int = 0


class Adapter(abc.ABC):
    """One CCaaS. Instances live for the process; they own their HTTP clients."""

    name: str
    mode: Literal["push", "poll"] = "push"

    @abc.abstractmethod
    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        """Creates the case, or finds the one a previous attempt created (idempotent)."""

    @abc.abstractmethod
    async def post_customer_message(
        self,
        external_id: str,
        conversation_id: str,
        message: common_pb2.Message,
        idempotency_key: str,
    ) -> str:
        """Appends one end-user message; returns the CCaaS message id ('' if none).
        Posting the same idempotency key twice must have one effect at the CCaaS."""

    async def post_customer_messages(self, cases: Sequence[CaseMessages]) -> list[CaseDelivery]:
        """Appends the messages of several cases; one result per case, in order.

        The default posts each case's messages one by one with ``post_customer_message``
        and stops the case at its first failure; cases run concurrently (at most
        ``CASE_CONCURRENCY`` at a time). FarSideError and InvalidArgument become the
        case's error; any other exception propagates (and cancels the other cases).
        Adapters with a batch API of their own override it.
        """
        gate = asyncio.Semaphore(CASE_CONCURRENCY)

        async def one(case: CaseMessages) -> CaseDelivery:
            async with gate:
                return await self._post_case_messages(case)

        return await gather_all(one(case) for case in cases)

    async def _post_case_messages(self, case: CaseMessages) -> CaseDelivery:
        ids: list[str] = []
        for message in case.messages:
            if ids and not may_start_post():
                return CaseDelivery(len(ids), ids)  # the rest: next call
            try:
                ids.append(
                    await self.post_customer_message(
                        case.external_id, case.conversation_id, message, message.id
                    )
                )
            except FarSideError as exc:
                return CaseDelivery(len(ids), ids, exc)
            except InvalidArgument as exc:
                # A message the CCaaS can never take (e.g. bad content_json): a retry
                # cannot help, the case stops here.
                return CaseDelivery(len(ids), ids, FarSideError(str(exc), retryable=False))
        return CaseDelivery(len(ids), ids)

    @abc.abstractmethod
    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        """Closes the case; returns True when it was already closed."""

    @abc.abstractmethod
    async def report_message_failed(
        self,
        external_id: str,
        conversation_id: str,
        message_id: str,
        reason: str,
        idempotency_key: str,
    ) -> None:
        """Tells the agent that reply ``message_id`` of the case was not delivered to the
        end user (it was dead-lettered) and why. Idempotent per idempotency key."""

    async def post_typing(self, external_id: str, conversation_id: str, typing: bool) -> bool:
        """Tells the agent the end user is (or stopped) typing; one attempt. Returns False
        when the CCaaS has no typing indicator, which is the default: adapters whose
        CCaaS has one override it."""
        return False

    def agent_file(self, ref: str) -> contextlib.AbstractAsyncContextManager[AgentFile]:
        """Opens a file an agent attached, by the reference the adapter put in its signed
        media link (services/runtime/media.py), reading it with the CCaaS's credentials.
        Raises NotFound (no such file), OutOfRange (above CCBRIDGE_MEDIA_MAX_BYTES) or
        FarSideError. The default: this CCaaS's agent files are not served by the bridge
        (its attachments carry URLs anyone can open)."""
        raise NotFound(f"connector {self.name!r} serves no agent files")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        """Verifies (raise Unauthenticated) and parses (raise InvalidArgument) a push."""
        raise InvalidArgument(f"connector {self.name!r} does not accept webhooks")

    def parse_webhook_batch(self, headers: Mapping[str, str], body: bytes) -> WebhookBatch:
        """Like ``parse_webhook``, also counting skipped items. The connector service calls
        this; adapters that skip items override it, the others only ``parse_webhook``."""
        return WebhookBatch(self.parse_webhook(headers, body))

    async def poll(self) -> list[CaseEvent]:
        """Poll-mode adapters: returns new events since the stored cursor. The connector
        service commits the cursor (``commit_poll``) only after Session stored them."""
        return []

    async def commit_poll(self, events: Sequence[CaseEvent]) -> None:  # noqa: B027
        """Advances the stored cursor past ``events`` (called after Session accepted them).
        Optional: push-mode adapters have no cursor."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Releases clients (adapters without clients need not override it)."""
