"""One handover's timeline: what happened to it and its messages, both ways, with times.

Session records an event where each thing happens (services/session/store.py): the
handover's state changes (escalated = OPENING, ACTIVE, FAILED, REJECTED, CLOSING,
CLOSED), a message stored (received and stored are one step: Session answers only once
the message is in Redis), delivered, a delivery retried, dead-lettered, a dead letter
replayed or discarded. Events name messages by id only, never by their text.

Storage keeps an idle handover at no extra key (Redis memory per handover is a project
goal):

- State changes are read from the handover hash (``<prefix>:h:{cid}``) itself: its
  ``history`` field already records each one as ``STATE@<ms after created_at>`` in the
  same script that changes the state. A change with a detail (a failure or close reason)
  adds the field ``tl:<at ms, base 36>:<STATE>`` → the detail cut to
  :data:`HASH_DETAIL_MAX` bytes (within ``hash-max-listpack-value``, so the hash stays a
  compact listpack), in the same script. These go with the hash (its expiry, erasure).
- Message events live in ``<prefix>:tl:{cid}``, a list newest first capped at
  :data:`TIMELINE_MAX` entries (the oldest fall off), in the conversation's hash slot,
  created by the first such event. Entries are compact text, ``<at ms, base 36>|<kind
  code><queue code>|<id length, base 36>|<message id><detail>`` (no JSON keys), and an
  entry this release cannot read is skipped, never fatal. The list's TTL follows the
  handover's data: every write sets the longest retention (a quiet open handover's
  timeline outlives it by no more than that), a CLOSED or REJECTED handover's expires
  with its record, and erasing a conversation (retention of FAILED ones, a
  data-protection request) deletes it.

``GetTimeline`` (operators only) merges both, newest first.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Events kept per handover's message list: the newest ones (an hour of a busy chat; the
# whole life of a usual one). GetTimeline answers at most this many events.
TIMELINE_MAX = 500
# Longest free-text detail kept per message event (errors, reasons).
DETAIL_MAX = 300
# Longest detail (UTF-8 bytes) of a state change, kept in the handover hash: Redis keeps
# a hash a listpack only while every value is at most ``hash-max-listpack-value`` (64).
HASH_DETAIL_MAX = 64
# The handover hash's field prefix of a state change's detail.
STATE_FIELD_PREFIX = "tl:"


class EventKind(enum.Enum):
    """What happened (the proto's ``TimelineEventKind`` without its prefix)."""

    STATE = "state"  # the handover changed state (``state``); the first is OPENING
    STORED = "stored"  # a message was received and stored in its queue
    DELIVERED = "delivered"  # a message reached the far side
    RETRIED = "retried"  # a delivery or the opening failed and is retried later
    DEAD_LETTERED = "dead_lettered"  # a delivery gave up: the message is a dead letter
    REPLAYED = "replayed"  # an operator queued a dead letter again
    DISCARDED = "discarded"  # an operator dropped a dead letter


# One character per kind and per queue in a list entry.
_KIND_CODE = {
    EventKind.STATE: "S",
    EventKind.STORED: "s",
    EventKind.DELIVERED: "d",
    EventKind.RETRIED: "r",
    EventKind.DEAD_LETTERED: "x",
    EventKind.REPLAYED: "p",
    EventKind.DISCARDED: "c",
}
_CODE_KIND = {code: kind for kind, code in _KIND_CODE.items()}
_QUEUE_CODE = {"": "", "inbox": "i", "outbox": "o"}
_CODE_QUEUE = {code: queue for queue, code in _QUEUE_CODE.items()}
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(value: int) -> str:
    """``value`` (not negative) in base 36, lower case."""
    out = ""
    while True:
        value, digit = divmod(value, 36)
        out = _DIGITS[digit] + out
        if not value:
            return out


def cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode(errors="ignore")


def state_field(at_ms: int, state: str) -> str:
    """The handover hash field that keeps a state change's detail."""
    return f"{STATE_FIELD_PREFIX}{b36(at_ms)}:{state}"


@dataclass(frozen=True)
class TimelineEvent:
    """One event: when (ms), what, the queue (``inbox`` towards the CCaaS, ``outbox``
    towards the end user, empty for the handover itself), the message id, the new state
    (for ``STATE``) and a short detail (an error, a reason; never message text)."""

    at_ms: int
    kind: EventKind
    queue: str = ""
    message_id: str = ""
    state: str = ""
    detail: str = ""

    def encode(self) -> bytes:
        """The list entry of a message event."""
        code = _KIND_CODE[self.kind] + (
            self.state if self.kind is EventKind.STATE else _QUEUE_CODE.get(self.queue, "")
        )
        ident = self.message_id
        size = b36(len(ident)) if ident else ""
        return f"{b36(self.at_ms)}|{code}|{size}|{ident}{self.detail[:DETAIL_MAX]}".encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> TimelineEvent | None:
        """The event, or None for an entry this release cannot read (never fails)."""
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
            at, code, size, rest = text.split("|", 3)
            kind = _CODE_KIND[code[:1]]
            length = int(size, 36) if size else 0
            if length > len(rest):
                return None
            state = code[1:] if kind is EventKind.STATE else ""
            queue = "" if kind is EventKind.STATE else _CODE_QUEUE[code[1:]]
            return cls(
                at_ms=int(at, 36),
                kind=kind,
                queue=queue,
                message_id=rest[:length],
                state=state,
                detail=rest[length:],
            )
        except (UnicodeDecodeError, ValueError, KeyError):
            return None


def state_events(fields: Mapping[str, str]) -> list[TimelineEvent]:
    """The state changes of a handover hash (its fields as text), oldest first: from its
    ``history`` (``STATE@<ms after created_at>``, comma separated), each with its detail
    field if any. Unreadable parts are skipped, never fatal."""
    try:
        created = int(fields.get("created_at") or 0)
    except ValueError:
        return []
    events = []
    for item in (fields.get("history") or "").split(","):
        state, _, since = item.partition("@")
        try:
            at_ms = created + int(since)
        except ValueError:
            continue
        detail = fields.get(state_field(at_ms, state), "")
        events.append(TimelineEvent(at_ms, EventKind.STATE, state=state, detail=detail))
    return events


def merged(
    states: list[TimelineEvent], messages: list[TimelineEvent], limit: int
) -> list[TimelineEvent]:
    """State changes (oldest first) and message events (newest first) as one timeline,
    newest first, at most ``limit`` events (and :data:`TIMELINE_MAX`)."""
    # Stable: at the same ms a state change reads after the message events (newest first).
    events = sorted([*messages, *reversed(states)], key=lambda e: -e.at_ms)
    return events[: min(limit, TIMELINE_MAX)]


def append_commands(key: str, events: list[TimelineEvent], ttl_s: int) -> list[tuple[Any, ...]]:
    """The commands that append message ``events`` (oldest first) to the timeline list
    at ``key``: pushed newest first, capped, and the TTL set again (none for no events)."""
    if not events:
        return []
    return [
        ("LPUSH", key, *(event.encode() for event in events)),
        ("LTRIM", key, 0, TIMELINE_MAX - 1),
        ("EXPIRE", key, ttl_s),
    ]
