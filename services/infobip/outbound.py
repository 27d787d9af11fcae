"""What an agent reply becomes at Infobip: the Create Message parts, in order, shaped for
the end user's channel.

ONE table (``CHANNEL_SHAPES``) says which attachment and location shapes each channel
takes, derived from the Create Message request examples of Infobip's published document
(``../shared/reference/infobip-openapi/``; the simulator validates every ``content``
against the schema derived from the same examples, and tests/services/infobip/
test_outbound.py checks every row against it). A channel/type pair the document shows no
example of is not guessed: the reply fails with :class:`Unsupported` (a dead letter and a
``message.failed`` to the agent).

Order: the text (split at ``MAX_TEXT``), then each attachment in the agent's order, then
the location. Agent words a channel's shape has no field for (a caption, a place's name
and address) follow their file or pin as a TEXT part, unchanged: nothing the agent wrote
is dropped, nothing is added. A file's ``name`` is not sent: no documented shape has a
file-name field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ccbridge.common.v1 import common_pb2

MAX_TEXT = 4096  # Infobip's documented content size limit (the 400 example of Create Message)
FILE_TYPES = ("IMAGE", "DOCUMENT", "VIDEO", "AUDIO")
EMAIL_CHANNEL = "EMAIL"


@dataclass(frozen=True)
class FileShape:
    """How a channel takes one kind of file. ``layout``: ``url`` ({"url"}), ``rcs_file``
    ({"file": {"url"}, "thumbnail": {"url"}}: the document's only RCS_FILE example has
    a thumbnail, which an image is of itself), ``viber_bot_video`` ({"url", "size"}).
    ``caption``: the channel's examples carry a string ``caption``."""

    content_type: str
    layout: Literal["url", "rcs_file", "viber_bot_video"] = "url"
    caption: bool = False


@dataclass(frozen=True)
class LocationShape:
    """``named``: the channel's examples carry ``locationName`` and ``address``."""

    named: bool


@dataclass(frozen=True)
class ChannelShapes:
    files: Mapping[str, FileShape]
    location: LocationShape | None = None


# Rows: the channels whose Create Message examples show a file or a location; every other
# channel takes text only. Source: the example named in each comment.
CHANNEL_SHAPES: Mapping[str, ChannelShapes] = {
    # "Sending WHATSAPP message with IMAGE/DOCUMENT/VIDEO/AUDIO/LOCATION content."
    "WHATSAPP": ChannelShapes(
        files={t: FileShape(t) for t in FILE_TYPES}, location=LocationShape(named=True)
    ),
    # "Sending VIBER message with LOCATION content."
    "VIBER": ChannelShapes(files={}, location=LocationShape(named=True)),
    # "Sending FACEBOOK message with IMAGE content." (with a caption)
    "FACEBOOK_MESSENGER": ChannelShapes(files={"IMAGE": FileShape("IMAGE", caption=True)}),
    # "Sending LIVE CHAT message with VIDEO/IMAGE/DOCUMENT content." (caption null there;
    # IMAGE takes a string caption per the FACEBOOK and TELEGRAM examples)
    "LIVE_CHAT": ChannelShapes(
        files={
            "IMAGE": FileShape("IMAGE", caption=True),
            "DOCUMENT": FileShape("DOCUMENT"),
            "VIDEO": FileShape("VIDEO"),
        }
    ),
    # "Sending TELEGRAM message with IMAGE content." (with a caption)
    "TELEGRAM": ChannelShapes(files={"IMAGE": FileShape("IMAGE", caption=True)}),
    # "Sending VIBER BOT message with IMAGE/VIDEO/LOCATION content."
    "VIBER_BOT": ChannelShapes(
        files={
            "IMAGE": FileShape("IMAGE"),
            "VIDEO": FileShape("VIBER_BOT_VIDEO", layout="viber_bot_video"),
        },
        location=LocationShape(named=False),
    ),
    # "Sending INSTAGRAM MESSAGING message with IMAGE content."
    "INSTAGRAM_MESSAGING": ChannelShapes(files={"IMAGE": FileShape("IMAGE")}),
    # "Sending APPLE BUSINESS CHAT message with IMAGE/VIDEO/DOCUMENT/LOCATION content."
    "APPLE_BUSINESS_CHAT": ChannelShapes(
        files={t: FileShape(t) for t in ("IMAGE", "VIDEO", "DOCUMENT")},
        location=LocationShape(named=True),
    ),
    # "Sending RCS message with FILE content."
    "RCS": ChannelShapes(files={"IMAGE": FileShape("RCS_FILE", layout="rcs_file")}),
}


class Unsupported(Exception):
    """The end user's channel cannot take part of the reply (the reason says which)."""


@dataclass(frozen=True)
class Part:
    """One Create Message: its ``contentType`` and ``content``."""

    content_type: str
    content: dict[str, Any]


def _text_parts(text: str, base: Mapping[str, Any] | None = None) -> list[Part]:
    """TEXT parts of at most MAX_TEXT characters (``base``: further content fields)."""
    return [
        Part("TEXT", {**(base or {}), "text": text[i : i + MAX_TEXT]})
        for i in range(0, len(text), MAX_TEXT)
    ]


def _file_part(channel: str, attachment: common_pb2.Attachment, index: int) -> list[Part]:
    shape = CHANNEL_SHAPES.get(channel, ChannelShapes(files={})).files.get(attachment.content_type)
    if shape is None:
        raise Unsupported(
            f"attachment #{index + 1}: channel {channel} cannot take {attachment.content_type} "
            "(no Create Message example of Infobip's document shows it)"
        )
    content: dict[str, Any]
    if shape.layout == "rcs_file":
        content = {"file": {"url": attachment.url}, "thumbnail": {"url": attachment.url}}
    elif shape.layout == "viber_bot_video":
        if attachment.size <= 0:
            raise Unsupported(
                f"attachment #{index + 1}: {channel} videos need the file size "
                "(the attachment's size, in bytes)"
            )
        content = {"url": attachment.url, "size": str(attachment.size)}
    else:
        content = {"url": attachment.url}
    parts = [Part(shape.content_type, content)]
    if attachment.caption:
        if shape.caption:
            content["caption"] = attachment.caption
        else:
            parts.extend(_text_parts(attachment.caption))
    return parts


def _location_parts(channel: str, location: common_pb2.Location) -> list[Part]:
    shape = CHANNEL_SHAPES.get(channel, ChannelShapes(files={})).location
    if shape is None:
        raise Unsupported(
            f"location: channel {channel} cannot take LOCATION "
            "(no Create Message example of Infobip's document shows it)"
        )
    content: dict[str, Any] = {"latitude": location.latitude, "longitude": location.longitude}
    words = [w for w in (location.name, location.address) if w]
    if shape.named:
        if location.name:
            content["locationName"] = location.name
        if location.address:
            content["address"] = location.address
        words = []
    parts = [Part("LOCATION", content)]
    if words:
        parts.extend(_text_parts("\n".join(words)))
    return parts


def email_content(text: str, *, to: str, subject: str) -> dict[str, Any]:
    """An EMAIL reply's content ("Sending EMAIL message with EMAIL text content."; the
    document's EMAIL examples all carry cc and bcc lists, here empty)."""
    return {
        "toAddresses": [to],
        "ccAddresses": [],
        "bccAddresses": [],
        "subject": subject,
        "contentText": text,
    }


def reply_subject(subject: str) -> str:
    """The subject of a reply in the thread of ``subject`` ("Re: " once)."""
    subject = subject.strip()
    if subject.lower().startswith("re:"):
        return subject
    return f"Re: {subject}" if subject else "Re:"


def build_parts(
    channel: str,
    message: common_pb2.Message,
    *,
    end_user: str = "",
    email_subject: str = "",
    name_prefix: str = "",
) -> list[Part]:
    """The Create Message parts of an agent reply, in sending order. Raises Unsupported
    when the channel cannot take one of them (checked for every part before any is sent,
    so a reply goes whole or not at all). ``name_prefix`` (already formatted) goes before
    the text; ``email_subject`` is the conversation's subject on the EMAIL channel."""
    content: object = {}
    if message.content_json:
        try:
            content = orjson.loads(message.content_json)
        except orjson.JSONDecodeError:
            raise Unsupported("agent message content is not JSON") from None
    if not isinstance(content, dict):
        raise Unsupported("agent message content is not a JSON object")
    content_type = message.content_type or "TEXT"
    parts: list[Part] = []
    text = content.get("text")
    if content_type != "TEXT":
        parts.append(Part(content_type, content))  # an operator's own Infobip content
    elif isinstance(text, str) and text:
        text = name_prefix + text
        if channel == EMAIL_CHANNEL:
            parts.append(
                Part(
                    "EMAIL",
                    email_content(text, to=end_user, subject=reply_subject(email_subject)),
                )
            )
        else:
            parts.extend(_text_parts(text, content))
    for index, attachment in enumerate(message.attachments):
        parts.extend(_file_part(channel, attachment, index))
    if message.HasField("location"):
        parts.extend(_location_parts(channel, message.location))
    if not parts:
        raise Unsupported("the agent message has nothing to send (no text, file or location)")
    return parts
