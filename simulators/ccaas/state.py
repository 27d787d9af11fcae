"""In-memory state of the CCaaS simulator: cases with their transcript and ordered
messages, the idempotency table, every delivery attempt, the fault switches, and the
files agents upload to send (``POST /_sim/files``).

Every method takes one lock (threading.RLock): the app runs in uvicorn's loop while a
test or the demo may read the state from another thread.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

JsonObject = dict[str, Any]

# The last second formatted by now_iso: (unix second, "YYYY-MM-DDTHH:MM:SS.").
_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current UTC time with milliseconds ("2025-01-01T10:01:12.004Z"), as
    datetime.now(UTC) would format it (both floor the system clock), but formatting the
    date and time once per second: each delivery takes two of these."""
    global _second
    ns = time.time_ns()
    seconds = ns // 1_000_000_000
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
    return f"{cached[1]}{ns // 1_000_000 % 1000:03d}Z"


MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_STORED_FILE_BYTES = 64 * 1024 * 1024  # all uploaded files together (memory only)

_SCALARS = (str, int, float, bool, type(None))
T = TypeVar("T")


def json_copy(value: T) -> T:
    """A deep copy of a JSON value (dicts, lists, scalars), ~5x cheaper than
    copy.deepcopy; anything else goes to copy.deepcopy. Everything the state holds came
    from JSON or is built of JSON values, with no object shared between two places."""
    kind = type(value)
    if kind is dict:
        items = cast(dict[Any, Any], value).items()
        return cast(T, {k: v if type(v) in _SCALARS else json_copy(v) for k, v in items})
    if kind is list:
        return cast(T, [v if type(v) in _SCALARS else json_copy(v) for v in cast(list[Any], value)])
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


class CaseNotFound(KeyError):
    """No case with that id."""


class CaseClosed(RuntimeError):
    """The case is closed."""


@dataclass
class Answer:
    """An HTTP answer to a bridge call (status, JSON body, extra headers)."""

    status: int
    body: JsonObject
    headers: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Answer:
        """A deep copy (what copy.deepcopy gives, for a fraction of its cost)."""
        return Answer(self.status, json_copy(self.body), dict(self.headers))


@dataclass
class SimCase:
    """A case as the simulated contact center stores it."""

    id: str
    conversation_id: str
    channel: str
    end_user: str
    routing: JsonObject
    tags: list[str]
    metadata: JsonObject
    transcript: list[JsonObject]
    transcript_truncated: bool
    opened_at: str
    status: str = "open"
    closed_at: str | None = None
    close_reason: str | None = None
    closed_by: str | None = None  # "bridge" (case.close) or "agent" (the control API)
    # Customer messages (case.message) and agent replies, in arrival order.
    messages: list[JsonObject] = field(default_factory=list)
    # message.failed events: agent replies the bridge could not deliver.
    failures: list[JsonObject] = field(default_factory=list)
    # case.typing events (the latest 20): the end user typing.
    typing: list[JsonObject] = field(default_factory=list)

    def summary(self) -> JsonObject:
        return {
            "caseId": self.id,
            "conversationId": self.conversation_id,
            "status": self.status,
            "channel": self.channel,
            "endUser": self.end_user,
            "routing": self.routing,
            "messageCount": len(self.messages),
            "openedAt": self.opened_at,
            "closedAt": self.closed_at,
        }

    def full(self) -> JsonObject:
        return {
            **self.summary(),
            "tags": self.tags,
            "metadata": self.metadata,
            "transcript": self.transcript,
            "transcriptTruncated": self.transcript_truncated,
            "messages": self.messages,
            "failures": self.failures,
            "typing": self.typing,
            "closeReason": self.close_reason,
            "closedBy": self.closed_by,
        }


@dataclass(frozen=True)
class Fault:
    """What the fault switches do to one bridge call: wait ``delay_s`` (a hanging CCaaS,
    seen by the bridge as a timeout), then answer ``answer``; or, when it is None, carry
    the call out at once and answer ``delay_s`` late (the call took effect although the
    bridge may have given up on it)."""

    delay_s: float
    answer: Answer | None


class CcaasState:
    """Thread-safe state; JSON-ready copies go out, never live objects."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._cases: dict[str, SimCase] = {}
            self._answers: dict[tuple[str, str], Answer] = {}
            self._deliveries: list[JsonObject] = []
            self._webhooks: list[JsonObject] = []
            self._case_seq = 0
            self._message_seq = 0
            self._event_seq = 0
            self.down = False
            self.hung = False
            # (status, Retry-After, delay s); status 0: only the delay.
            self._failures: list[tuple[int, float | None, float]] = []
            # Files agents send (id → bytes, MIME type), served at GET /_sim/files/{id}.
            self._files: dict[str, tuple[bytes, str]] = {}

    # --- fault switches -------------------------------------------------------------

    def set_down(self, down: bool) -> None:
        with self._lock:
            self.down = down

    def set_hung(self, hung: bool) -> None:
        """While hung, bridge calls are held unanswered (a CCaaS that accepts the
        connection and never answers) until it is no longer."""
        with self._lock:
            self.hung = hung

    def inject_failures(
        self,
        count: int,
        status: int = 503,
        retry_after: float | None = 1.0,
        delay_s: float = 0.0,
    ) -> None:
        """The next ``count`` bridge calls wait ``delay_s``, then fail with ``status``
        (0: are carried out at once and answered after ``delay_s``)."""
        with self._lock:
            self._failures.extend([(status, retry_after, delay_s)] * count)

    def take_fault(self) -> Fault | None:
        """What the fault switches do to the next bridge call, if anything."""
        with self._lock:
            if self.down:
                return Fault(0.0, Answer(503, {"error": "simulator is down"}, {"Retry-After": "1"}))
            if self._failures:
                status, retry_after, delay_s = self._failures.pop(0)
                if not status:
                    return Fault(delay_s, None)
                headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                return Fault(delay_s, Answer(status, {"error": "injected failure"}, headers))
            return None

    def status(self) -> JsonObject:
        with self._lock:
            return {
                "down": self.down,
                "hung": self.hung,
                "pendingFailures": len(self._failures),
                "cases": len(self._cases),
                "deliveries": len(self._deliveries),
            }

    # --- deliveries -----------------------------------------------------------------

    def record_delivery(self, **fields: Any) -> None:
        with self._lock:
            self._deliveries.append(
                {
                    "seq": len(self._deliveries) + 1,
                    "at": now_iso(),
                    "monotonic": time.monotonic(),
                    **fields,
                }
            )

    def deliveries(self) -> list[JsonObject]:
        with self._lock:
            return json_copy(self._deliveries)

    def record_webhook(self, **fields: Any) -> None:
        """One event the simulator pushed to the bridge, with the bridge's answer."""
        with self._lock:
            self._webhooks.append({"seq": len(self._webhooks) + 1, "at": now_iso(), **fields})

    def webhooks(self) -> list[JsonObject]:
        with self._lock:
            return json_copy(self._webhooks)

    # --- bridge events (idempotent) ---------------------------------------------------

    def replay(self, event_type: str, key: str) -> Answer | None:
        """The stored answer of an earlier call with this key, if any."""
        with self._lock:
            answer = self._answers.get((event_type, key))
            return answer.copy() if answer else None

    def _remember(self, event_type: str, key: str, answer: Answer) -> Answer:
        # Only successes are stored: a failed call with the same key runs again.
        if 200 <= answer.status < 300:
            self._answers[(event_type, key)] = answer.copy()
        return answer

    def apply(self, event_type: str, key: str, doc: JsonObject) -> tuple[Answer, bool]:
        """Applies a validated bridge event once per (type, key); returns the answer and
        whether it is the replay of a stored one."""
        with self._lock:
            stored = self.replay(event_type, key)
            if stored is not None:
                return stored, True
            if event_type == "case.open":
                answer = self._open_case_event(doc)
            elif event_type == "case.message":
                answer = self._customer_message(key, doc)
            elif event_type == "message.failed":
                answer = self._message_failed(doc)
            elif event_type == "case.typing":
                answer = self._typing(doc)
            else:
                answer = self._close_by_bridge(doc)
            return self._remember(event_type, key, answer), False

    def _open_case_event(self, doc: JsonObject) -> Answer:
        with self._lock:
            self._case_seq += 1
            case_ = doc["case"]
            case = SimCase(
                id=f"CASE-{self._case_seq:05d}",
                conversation_id=doc["conversationId"],
                channel=case_["channel"],
                end_user=case_["endUser"],
                routing=json_copy(case_["routing"]),
                tags=list(case_["tags"]),
                metadata=json_copy(case_["metadata"]),
                transcript=json_copy(doc["transcript"]),
                transcript_truncated=doc["transcriptTruncated"],
                opened_at=now_iso(),
            )
            self._cases[case.id] = case
            return Answer(201, {"caseId": case.id})

    def _customer_message(self, key: str, doc: JsonObject) -> Answer:
        with self._lock:
            case = self._cases.get(doc["caseId"])
            if case is None:
                return Answer(404, {"error": "unknown case"})
            if case.status != "open":
                return Answer(409, {"error": "case is closed"})
            self._message_seq += 1
            message_id = f"MSG-{self._message_seq:06d}"
            case.messages.append(
                {
                    **json_copy(doc["message"]),
                    "from": "customer",
                    "messageId": message_id,
                    "idempotencyKey": key,
                    "receivedAt": now_iso(),
                }
            )
            return Answer(200, {"messageId": message_id})

    def _message_failed(self, doc: JsonObject) -> Answer:
        """The bridge could not deliver an agent reply: the agent sees it on the reply
        (and in ``failures``, also for a reply this simulator did not send)."""
        with self._lock:
            case = self._cases.get(doc["caseId"])
            if case is None:
                return Answer(404, {"error": "unknown case"})
            reason = str(doc.get("reason") or "")
            case.failures.append(
                {"messageId": doc["messageId"], "reason": reason, "receivedAt": now_iso()}
            )
            for message in case.messages:
                if message.get("from") == "agent" and message["id"] == doc["messageId"]:
                    message["delivery"] = f"not delivered: {reason}"
            return Answer(200, {})

    def _typing(self, doc: JsonObject) -> Answer:
        """The end user is (or stopped) typing: the agent's view shows it for a while."""
        with self._lock:
            case = self._cases.get(doc["caseId"])
            if case is None:
                return Answer(404, {"error": "unknown case"})
            case.typing.append({"typing": doc["typing"], "receivedAt": now_iso()})
            del case.typing[:-20]  # the latest ones are enough
            return Answer(200, {})

    def _close_by_bridge(self, doc: JsonObject) -> Answer:
        with self._lock:
            case = self._cases.get(doc["caseId"])
            if case is None:
                return Answer(404, {"error": "unknown case"})
            if case.status != "open":
                return Answer(200, {"alreadyClosed": True})
            case.status, case.closed_at = "closed", now_iso()
            case.close_reason, case.closed_by = doc.get("reason") or "", "bridge"
            return Answer(200, {"alreadyClosed": False})

    # --- agent side -------------------------------------------------------------------

    def _writable_case(self, case_id: str) -> SimCase:
        case = self._cases.get(case_id)
        if case is None:
            raise CaseNotFound(case_id)
        if case.status != "open":
            raise CaseClosed(case_id)
        return case

    def next_event_id(self) -> str:
        with self._lock:
            self._event_seq += 1
            return f"EVT-{self._event_seq:06d}"

    def add_agent_message(
        self,
        case_id: str,
        text: str,
        agent_name: str,
        message_id: str | None = None,
        extra: JsonObject | None = None,
    ) -> JsonObject:
        """Records an agent reply (once per message id); returns the stored message."""
        with self._lock:
            case = self._writable_case(case_id)
            if message_id:
                for existing in case.messages:
                    if existing.get("from") == "agent" and existing["id"] == message_id:
                        return json_copy(existing)
            else:
                self._message_seq += 1
                message_id = f"AGT-{self._message_seq:06d}"
            message = {
                "id": message_id,
                "from": "agent",
                "text": text,
                "agentName": agent_name,
                **json_copy(extra or {}),  # attachments, location
                "createdAt": now_iso(),
                "delivery": "pending",
            }
            case.messages.append(message)
            return json_copy(message)

    def set_agent_delivery(self, case_id: str, message_id: str, outcome: str) -> None:
        with self._lock:
            case = self._cases.get(case_id)
            for message in case.messages if case else ():
                if message.get("from") == "agent" and message["id"] == message_id:
                    message["delivery"] = outcome

    def close_by_agent(self, case_id: str, reason: str) -> None:
        with self._lock:
            case = self._writable_case(case_id)
            case.status, case.closed_at = "closed", now_iso()
            case.close_reason, case.closed_by = reason, "agent"

    # --- files agents send --------------------------------------------------------------

    def put_file(self, data: bytes, content_type: str) -> str | None:
        """Stores an uploaded file; its id, or None when the store is full."""
        with self._lock:
            if sum(len(d) for d, _ in self._files.values()) + len(data) > MAX_STORED_FILE_BYTES:
                return None
            file_id = secrets.token_urlsafe(12)  # unguessable: the URL is the only access
            self._files[file_id] = (data, content_type)
            return file_id

    def file(self, file_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._files.get(file_id)

    # --- reads ------------------------------------------------------------------------

    def cases(self, conversation_id: str | None = None, *, full: bool = False) -> list[JsonObject]:
        with self._lock:
            return [
                json_copy(c.full() if full else c.summary())
                for c in self._cases.values()
                if conversation_id is None or c.conversation_id == conversation_id
            ]

    def case(self, case_id: str) -> JsonObject:
        with self._lock:
            found = self._cases.get(case_id)
            if found is None:
                raise CaseNotFound(case_id)
            return json_copy(found.full())
