"""Transcript building: turning Infobip Get Messages pages into a normalized transcript.

Owns the paging plan (:func:`page_size`), the lenient normalization of one Infobip
message into ``ccbridge.common.v1.Message`` (:func:`to_message`), and the assembly of a
:class:`Transcript` from what was fetched (:class:`TranscriptBuilder`): dedupe by id,
keep the most recent ``cap``, oldest first, addresses from the latest inbound message.
Pure code: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.history.v1 import history_pb2
from ccbridge.services.infobip.client import MAX_PAGE_SIZE

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIRECTIONS = {
    "INBOUND": common_pb2.DIRECTION_INBOUND,
    "OUTBOUND": common_pb2.DIRECTION_OUTBOUND,
}


def page_size(cap: int) -> int:
    """The Get Messages ``limit`` for a transcript of at most ``cap`` messages.

    The size stays fixed for every page of one transcript: Infobip pages by offset
    (``page * limit``), so shrinking the limit on the last page (``min(999, remaining)``)
    would re-read the newest messages instead of the next ones. The last page may bring
    more than needed; the surplus is dropped.
    """
    return max(1, min(MAX_PAGE_SIZE, cap))


def parse_timestamp(value: object) -> datetime | None:
    """Parses Infobip date-times leniently: ``+00:00``, ``+0000``, ``Z``, with or without
    fractions; naive values are UTC; numbers are epoch milliseconds. None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _set_timestamp(target: Any, moment: datetime) -> None:
    delta = moment - _EPOCH
    target.seconds = delta.days * 86_400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def to_message(item: Mapping[str, Any], conversation_id: str) -> common_pb2.Message:
    """Normalizes one Infobip message (Get Messages item or webhook message object).

    Enums (channel, contentType, authorType) are copied as strings, so new values pass
    through; an unknown direction becomes DIRECTION_UNSPECIFIED. ``content_json`` is the
    JSON of ``content`` (``{}`` when absent).
    """
    content = item.get("content")
    message = common_pb2.Message(
        id=_text(item.get("id")),
        conversation_id=_text(item.get("conversationId")) or conversation_id,
        direction=_DIRECTIONS.get(
            _text(item.get("direction")).upper(), common_pb2.DIRECTION_UNSPECIFIED
        ),
        channel=_text(item.get("channel")),
        author_type=_text(item.get("authorType")),
        content_type=_text(item.get("contentType")),
        content_json=orjson.dumps(content if content is not None else {}).decode(),
        author_name=_text(item.get("authorName")),
    )
    # `from` is a Python keyword: set it through setattr.
    setattr(message, "from", _text(item.get("from")))
    message.to = _text(item.get("to"))
    created = parse_timestamp(item.get("createdAt"))
    if created is not None:
        _set_timestamp(message.created_at, created)
    return message


@dataclass
class _Entry:
    moment: datetime
    message: common_pb2.Message


@dataclass
class TranscriptBuilder:
    """Collects Get Messages pages of one conversation and assembles the transcript."""

    conversation_id: str
    cap: int
    pages_fetched: int = 0
    total_items: int | None = None
    skipped: int = 0
    _entries: dict[str, _Entry] = field(default_factory=dict)

    @property
    def unique(self) -> int:
        return len(self._entries)

    def add_page(self, body: Mapping[str, Any]) -> tuple[int, int]:
        """Adds one page; returns ``(items on the page, ids not seen before)``."""
        self.pages_fetched += 1
        pagination = body.get("pagination")
        if isinstance(pagination, Mapping):
            total = pagination.get("totalItems")
            if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
                self.total_items = total
        items = body.get("messages")
        if not isinstance(items, list):
            return 0, 0
        fresh = 0
        for item in items:
            if not isinstance(item, Mapping) or not _text(item.get("id")):
                self.skipped += 1
                continue
            message = to_message(item, self.conversation_id)
            if message.id in self._entries:
                continue
            moment = parse_timestamp(item.get("createdAt")) or _EPOCH
            self._entries[message.id] = _Entry(moment, message)
            fresh += 1
        return len(items), fresh

    def build(
        self, *, more_available: bool, tags: list[str], metadata: Mapping[str, str]
    ) -> history_pb2.Transcript:
        """The transcript: the most recent ``cap`` messages, oldest first (createdAt, then
        id); ``truncated`` when older messages exist that were left out."""
        if self.skipped:
            log.warning("skipped %d Infobip messages without an id", self.skipped)
        ordered = sorted(self._entries.values(), key=lambda e: (e.moment, e.message.id))
        kept = ordered[-self.cap :] if len(ordered) > self.cap else ordered
        total = max(self.total_items or 0, len(ordered))
        truncated = len(ordered) > len(kept) or more_available or total > len(kept)
        transcript = history_pb2.Transcript(
            conversation_id=self.conversation_id,
            messages=[e.message for e in kept],
            total_messages=total,
            truncated=truncated,
            tags=tags,
            metadata=dict(metadata),
            pages_fetched=self.pages_fetched,
        )
        self._fill_addresses(transcript, ordered)
        return transcript

    @staticmethod
    def _fill_addresses(transcript: history_pb2.Transcript, ordered: list[_Entry]) -> None:
        """Channel, end user and business sender from the latest INBOUND message; with no
        inbound message, from the latest OUTBOUND one (addresses swapped)."""
        latest_in = next(
            (
                e.message
                for e in reversed(ordered)
                if e.message.direction == common_pb2.DIRECTION_INBOUND
            ),
            None,
        )
        if latest_in is not None:
            transcript.channel = latest_in.channel
            transcript.end_user = getattr(latest_in, "from")
            transcript.business_sender = latest_in.to
            return
        latest_out = next(
            (
                e.message
                for e in reversed(ordered)
                if e.message.direction == common_pb2.DIRECTION_OUTBOUND
            ),
            None,
        )
        if latest_out is not None:
            transcript.channel = latest_out.channel
            transcript.end_user = latest_out.to
            transcript.business_sender = getattr(latest_out, "from")
        elif ordered:
            transcript.channel = ordered[-1].message.channel
