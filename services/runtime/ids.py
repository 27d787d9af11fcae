"""The rules for conversation ids and message ids. The conversation-id rule is checked
wherever an id comes in (gateway routes and
webhooks, Session, History) and again by the Infobip client before it builds a URL.

An id becomes a Redis key part and a path segment of Infobip URLs
(``/ccaas/1/conversations/<id>/...``), so it is 1-128 characters of ``A-Z a-z 0-9 . _ : -``
and not made of dots only (``.`` and ``..`` are dot segments: they would leave the
conversation's path). Infobip's own ids are UUIDs.
"""

from __future__ import annotations

import re
from typing import TypeGuard

CONVERSATION_ID_MAX_CHARS = 128
# fullmatch, not match with "$": "$" also matches before a trailing newline.
_CONVERSATION_ID = re.compile(rf"(?!\.+\Z)[A-Za-z0-9._:\-]{{1,{CONVERSATION_ID_MAX_CHARS}}}")
# The same rule as an OpenAPI (ECMA-262) pattern.
CONVERSATION_ID_PATTERN = rf"^(?!\.+$)[A-Za-z0-9._:-]{{1,{CONVERSATION_ID_MAX_CHARS}}}$"
CONVERSATION_ID_RULE = (
    f"1-{CONVERSATION_ID_MAX_CHARS} characters of A-Z a-z 0-9 . _ : - (not only dots)"
)


def is_conversation_id(value: object) -> TypeGuard[str]:
    """True when ``value`` is a string that follows the conversation-id rule."""
    return isinstance(value, str) and _CONVERSATION_ID.fullmatch(value) is not None


MESSAGE_ID_MAX_CHARS = 256
# Message and event ids (Infobip's, a CCaaS's, an internal caller's) travel as Redis set
# members, JSON fields and HTTP header values (Idempotency-Key): no control characters
# (C0, DEL, C1), so a CR/LF can never split a header, and not blank.
_MESSAGE_ID = re.compile(rf"(?!\s*\Z)[^\x00-\x1f\x7f-\x9f]{{1,{MESSAGE_ID_MAX_CHARS}}}")
MESSAGE_ID_RULE = f"1-{MESSAGE_ID_MAX_CHARS} characters, not blank, without control characters"


def is_message_id(value: object) -> TypeGuard[str]:
    """True when ``value`` is a string that follows the message/event-id rule."""
    return isinstance(value, str) and _MESSAGE_ID.fullmatch(value) is not None
