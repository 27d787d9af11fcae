"""The Genesys simulator's in-memory organization: one Open Messaging integration, its
OAuth client, the message conversations inbound open messages created, and a record of
every API request (with the model errors found in it)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_RECORDS = 20_000
MAX_FILES = 200
MAX_FILE_BYTES = 20 * 1024 * 1024
ENDED = ("disconnected", "terminated")


def now_iso() -> str:
    moment = datetime.now(tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Conversation:
    """A Genesys message conversation: the customer (the open messaging identity), the
    agent it was routed to, and every message in order."""

    id: str
    from_id: str
    id_type: str
    nickname: str
    created_at: str
    participants: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    message_ids: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel.messageId
    typing_at: str = ""

    def participant(self, purpose: str) -> dict[str, Any]:
        return next(p for p in self.participants if p["purpose"] == purpose)

    @property
    def ended(self) -> bool:
        customer = self.participant("customer")
        agent = self.participant("agent")
        return customer["state"] in ENDED or agent["state"] in ENDED

    def public(self) -> dict[str, Any]:
        """The MessageConversation of GET /api/v2/conversations/messages/{id}."""
        return {
            "id": self.id,
            "participants": [dict(p) for p in self.participants],
            "selfUri": f"/api/v2/conversations/messages/{self.id}",
        }

    def view(self) -> dict[str, Any]:
        """What the control API and the agent's page show."""
        first = self.messages[0] if self.messages else {}
        return {
            "id": self.id,
            "fromId": self.from_id,
            "idType": self.id_type,
            "nickname": self.nickname,
            "createdAt": self.created_at,
            "state": "ended" if self.ended else "connected",
            "participants": [dict(p) for p in self.participants],
            "metadata": dict(first.get("metadata") or {}),
            "messages": [dict(m) for m in self.messages],
            "typingAt": self.typing_at,
        }


class GenesysState:
    """Everything the simulator holds; one lock (the app also runs handlers in threads)."""

    def __init__(
        self, *, integration_id: str, client_id: str, client_secret: str, token_ttl_s: int
    ) -> None:
        self.integration_id = integration_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.conversations: dict[str, Conversation] = {}
        self.open_by_from: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        self.rejected = 0
        self.down = False
        self.failures: list[tuple[int, float | None]] = []
        self.files: dict[str, tuple[bytes, str]] = {}

    # -- OAuth ------------------------------------------------------------------------------
    def issue_token(self) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.token_ttl_s
            self.tokens_issued += 1
        return {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl_s}

    def token_ok(self, token: str) -> bool:
        with self.lock:
            expires = self.tokens.get(token)
            return expires is not None and expires > time.time()

    def expire_tokens(self) -> int:
        with self.lock:
            count = len(self.tokens)
            self.tokens.clear()
            return count

    # -- conversations ----------------------------------------------------------------------
    def conversation_for(self, from_id: str, id_type: str, nickname: str) -> Conversation:
        """The open conversation of an identity, or a new one routed to an agent."""
        with self.lock:
            found = self.conversations.get(self.open_by_from.get(from_id, ""))
            if found is not None and not found.ended:
                return found
            now = now_iso()
            conversation = Conversation(
                id=str(uuid.uuid4()),
                from_id=from_id,
                id_type=id_type,
                nickname=nickname,
                created_at=now,
                participants=[
                    {
                        "id": str(uuid.uuid4()),
                        "purpose": "customer",
                        "state": "connected",
                        "direction": "inbound",
                        "startTime": now,
                        "connectedTime": now,
                        "provider": "open",
                    },
                    {
                        "id": str(uuid.uuid4()),
                        "name": "Alice",
                        "purpose": "agent",
                        "state": "connected",
                        "direction": "inbound",
                        "startTime": now,
                        "connectedTime": now,
                        "provider": "open",
                    },
                ],
            )
            self.conversations[conversation.id] = conversation
            self.open_by_from[from_id] = conversation.id
            return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        with self.lock:
            return self.conversations.get(conversation_id)

    def find(self, *, from_id: str = "", infobip_conversation: str = "") -> list[Conversation]:
        with self.lock:
            found = list(self.conversations.values())
        if from_id:
            found = [c for c in found if c.from_id == from_id]
        if infobip_conversation:
            found = [
                c
                for c in found
                if c.messages
                and (c.messages[0].get("metadata") or {}).get("ccbridge.conversationId")
                == infobip_conversation
            ]
        return found

    def end_participant(self, conversation: Conversation, purpose: str) -> None:
        with self.lock:
            participant = conversation.participant(purpose)
            if participant["state"] not in ENDED:
                participant["state"] = "disconnected"
                participant["endTime"] = now_iso()
                participant["disconnectType"] = "client" if purpose == "agent" else "peer"

    def add_agent_message(self, conversation: Conversation, text: str) -> str:
        """Records an agent's message (the control API's reply also POSTs it)."""
        message_id = uuid.uuid4().hex
        with self.lock:
            conversation.messages.append(
                {
                    "id": message_id,
                    "direction": "Outbound",
                    "time": now_iso(),
                    "text": text,
                    "content": [],
                }
            )
        return message_id

    # -- failures and records ---------------------------------------------------------------
    def take_failure(self) -> tuple[int, float | None] | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            if entry.get("errors"):
                self.rejected += 1
            self.records.append(entry)
            del self.records[:-MAX_RECORDS]

    def put_file(self, data: bytes, kind: str) -> str | None:
        with self.lock:
            if len(self.files) >= MAX_FILES:
                return None
            file_id = uuid.uuid4().hex
            self.files[file_id] = (data, kind)
            return file_id

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "integrationId": self.integration_id,
                "down": self.down,
                "conversations": len(self.conversations),
                "requests": len(self.records),
                "rejected": self.rejected,
                "tokensIssued": self.tokens_issued,
                "pendingFailures": len(self.failures),
            }
