"""One handover's timeline: what happened to it and its messages, both ways, with times.

Session appends an event where each thing happens (services/session/store.py): the
handover's state changes (escalated = OPENING, ACTIVE, FAILED, REJECTED, CLOSING,
CLOSED), a message stored (received and stored are one step: Session answers only once
the message is in Redis), delivered, a delivery retried, dead-lettered, a dead letter
replayed or discarded. Events name messages by id only, never by their text.

The events live in ``<prefix>:tl:{cid}``, a list newest first capped at
:data:`TIMELINE_MAX` entries (the oldest fall off), in the conversation's hash slot. Its
TTL follows the handover's data: every write sets the longest retention (a quiet open
handover's timeline outlives it by no more than that), a CLOSED or REJECTED handover's
timeline expires with its record, and erasing a conversation (retention of FAILED ones,
a data-protection request) deletes it. ``GetTimeline`` (operators only) reads it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

# Events kept per handover: the newest ones (an hour of a busy chat; the whole life of a
# usual one).
TIMELINE_MAX = 500
# Longest free-text detail kept per event (errors, reasons).
DETAIL_MAX = 300


class EventKind(enum.Enum):
    """What happened (the proto's ``TimelineEventKind`` without its prefix)."""

    STATE = "state"  # the handover changed state (``state``); the first is OPENING
    STORED = "stored"  # a message was received and stored in its queue
    DELIVERED = "delivered"  # a message reached the far side
    RETRIED = "retried"  # a delivery or the opening failed and is retried later
    DEAD_LETTERED = "dead_lettered"  # a delivery gave up: the message is a dead letter
    REPLAYED = "replayed"  # an operator queued a dead letter again
    DISCARDED = "discarded"  # an operator dropped a dead letter


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
        doc: dict[str, Any] = {"t": self.at_ms, "k": self.kind.value}
        for key, value in (
            ("q", self.queue),
            ("m", self.message_id),
            ("s", self.state),
            ("d", self.detail[:DETAIL_MAX]),
        ):
            if value:
                doc[key] = value
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, raw: bytes | str) -> TimelineEvent | None:
        """The event, or None for an entry this release cannot read (never fails)."""
        try:
            doc = orjson.loads(raw)
            return cls(
                at_ms=int(doc["t"]),
                kind=EventKind(doc["k"]),
                queue=str(doc.get("q", "")),
                message_id=str(doc.get("m", "")),
                state=str(doc.get("s", "")),
                detail=str(doc.get("d", "")),
            )
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return None


def append_commands(key: str, events: list[TimelineEvent], ttl_s: int) -> list[tuple[Any, ...]]:
    """The commands that append ``events`` (oldest first) to the timeline at ``key``:
    pushed newest first, capped, and the TTL set again (none for no events)."""
    if not events:
        return []
    return [
        ("LPUSH", key, *(event.encode() for event in events)),
        ("LTRIM", key, 0, TIMELINE_MAX - 1),
        ("EXPIRE", key, ttl_s),
    ]
