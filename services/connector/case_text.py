"""The plain text of a handover, one way for every connector: an Infobip message as
readable text (``message_text``: media, locations, e-mails, contacts summarised; nothing
dropped), the transcript as ``[time] role: text`` lines (``transcript_lines``) and the
case's context lines (``case_fields``: conversation, channel, customer, routing, tags,
metadata). Also HTML → text (``html_to_text``) for e-mails and rich-text agent replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Literal

import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.base import CaseToOpen


def content_of(message: common_pb2.Message) -> dict[str, Any]:
    """The message's ``content_json`` as an object (``{}`` when absent or not an object)."""
    try:
        loaded = orjson.loads(message.content_json) if message.content_json else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


MEDIA_KINDS = frozenset(
    {"IMAGE", "VIDEO", "DOCUMENT", "AUDIO", "FILE", "VOICE", "VIBER_BOT_VIDEO", "VIBER_BOT_FILE"}
)
"""Content types whose ``content.url`` is the file itself (attached to the ticket)."""

_MAX_RAW_CHARS = 4000


def as_list(value: Any) -> list[Any]:
    """A JSON list field; anything else is empty."""
    return value if isinstance(value, list) else []


def media_url(message: common_pb2.Message) -> str:
    """The URL of the file a media message carries ('' for other messages)."""
    content = content_of(message)
    url = content.get("url")
    if message.content_type.upper() == "RCS_FILE" and isinstance(content.get("file"), dict):
        url = content["file"].get("url")
    if message.content_type.upper() not in MEDIA_KINDS | {"RCS_FILE"}:
        return ""
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else ""


def _contact_text(content: dict[str, Any]) -> str:
    people = []
    for contact in as_list(content.get("contacts")):
        if not isinstance(contact, dict):
            continue
        found = contact.get("name")
        name: dict[str, Any] = found if isinstance(found, dict) else {}
        label = name.get("formatted_name") or " ".join(
            str(name[k]) for k in ("first_name", "last_name") if name.get(k)
        )
        phones = [
            str(p.get("phone")) for p in as_list(contact.get("phones")) if isinstance(p, dict)
        ]
        emails = [
            str(e.get("email")) for e in as_list(contact.get("emails")) if isinstance(e, dict)
        ]
        people.append(", ".join(str(p) for p in (label, *phones, *emails) if p))
    return "; ".join(people)


def message_text(message: common_pb2.Message) -> str:
    """Readable text of an Infobip message. Nothing is dropped: a content type without a
    rendering of its own shows its content as JSON after ``[<type>]``."""
    content = content_of(message)
    kind = (message.content_type or "TEXT").upper()
    text = content.get("text")
    if kind == "TEXT" and isinstance(text, str):
        return text
    if media_url(message) or kind in MEDIA_KINDS:
        parts = [f"[{kind.lower()}]", media_url(message) or str(content.get("url", ""))]
        parts += [str(content[k]) for k in ("caption", "text") if content.get(k)]
        return " ".join(p for p in parts if p)
    if kind == "LOCATION":
        where = f"{content.get('latitude', '?')},{content.get('longitude', '?')}"
        extra = [str(content[k]) for k in ("locationName", "name", "address") if content.get(k)]
        return " ".join(["[location]", where, *extra])
    if kind == "EMAIL":
        body = content.get("contentText")
        if not isinstance(body, str) and isinstance(content.get("contentHtml"), str):
            body = html_to_text(str(content["contentHtml"]))
        subject = content.get("subject")
        # Marked like every other non-TEXT type: the agent sees it was an e-mail.
        return "\n".join(str(p) for p in (f"[email] {subject or ''}".rstrip(), body) if p)
    if kind == "CONTACT" and _contact_text(content):
        return f"[contact] {_contact_text(content)}"
    if isinstance(text, str) and text:
        return f"[{kind.lower()}] {text}" if kind != "TEXT" else text
    raw = orjson.dumps(content).decode() if content else ""
    if len(raw) > _MAX_RAW_CHARS:
        raw = raw[: _MAX_RAW_CHARS - 1] + "…"
    return f"[{kind.lower()}] {raw}".rstrip()


def author_role(message: common_pb2.Message) -> Literal["customer", "agent", "bot"]:
    if message.direction == common_pb2.DIRECTION_INBOUND:
        return "customer"
    return "agent" if message.author_type.upper() == "AGENT" else "bot"


def _timestamp(message: common_pb2.Message) -> str:
    if not message.HasField("created_at") or message.created_at.seconds <= 0:
        return "?"
    moment = datetime.fromtimestamp(message.created_at.seconds, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def transcript_lines(transcript: Iterable[common_pb2.Message]) -> list[str]:
    """``[time] customer|bot|agent: text``, one line per message (continuations indented)."""
    lines = []
    for message in transcript:
        text = message_text(message).replace("\r\n", "\n").strip("\n")
        first, *rest = text.split("\n") or [""]
        lines.append(f"[{_timestamp(message)}] {author_role(message)}: {first}")
        lines.extend(f"    {line}" for line in rest)
    return lines


def case_fields(case: CaseToOpen, *, queue: bool = True) -> list[str]:
    """The case's context, one ``Name: value`` line each (empty fields left out):
    Conversation, Channel, Customer, Queue (unless ``queue`` is False: a CCaaS whose case
    shows its queue itself), Routing rule, Skills, Priority, Tags, Metadata."""
    lines = [
        f"Conversation: {case.conversation_id}",
        f"Channel: {case.channel}",
        f"Customer: {case.end_user}",
    ]
    if queue and case.queue:
        lines.append(f"Queue: {case.queue}")
    if case.rule:
        lines.append(f"Routing rule: {case.rule}")
    if case.skills:
        lines.append(f"Skills: {', '.join(case.skills)}")
    if case.priority:
        lines.append(f"Priority: {case.priority}")
    if case.tags:
        lines.append(f"Tags: {', '.join(case.tags)}")
    if case.metadata:
        lines.append("Metadata: " + "; ".join(f"{k}={v}" for k, v in sorted(case.metadata.items())))
    return lines


class _HtmlText(HTMLParser):
    """HTML (RT's rich-text editor) → readable plain text."""

    _BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "tr",
            "table",
            "ul",
            "ol",
            "blockquote",
            "pre",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "hr",
            "section",
            "article",
        }
    )
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in {"td", "th"}:
            self.out.append(" ")
        elif tag in self._BLOCK:
            self.out.append("\n")
            if tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "hr"}:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK and tag != "br":
            self.out.append("\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.out.append(data if self._pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self.out).replace("\xa0", " ").split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return parser.text()
