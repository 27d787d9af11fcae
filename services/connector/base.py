"""The connector contract: what every CCaaS adapter implements (DESIGN.md §7).

An adapter opens a case, posts customer messages, closes a case, and turns what the CCaaS
pushes (``parse_webhook``) or what polling finds (``poll``) into :class:`CaseEvent`s that
the connector service hands to Session. Adapters raise
:class:`services._runtime.errors.FarSideError` for far-side failures (``retryable`` says
whether a retry can help, ``retry_after`` honours 429/Retry-After) and
:class:`services._runtime.errors.Unauthenticated` / ``InvalidArgument`` for bad webhooks.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ccbridge.common.v1 import common_pb2


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


@dataclass(frozen=True)
class CaseClosedEvent:
    """The case was closed/resolved at the CCaaS."""

    external_id: str
    event_id: str
    reason: str


CaseEvent = AgentMessage | CaseClosedEvent


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

    @abc.abstractmethod
    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        """Closes the case; returns True when it was already closed."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[CaseEvent]:
        """Verifies (raise Unauthenticated) and parses (raise InvalidArgument) a push."""
        from services._runtime.errors import InvalidArgument

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
