"""The one rule for conversation ids, checked wherever an id comes in (gateway routes and
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
