"""Limits on what an escalation carries, shared by the gateway (400 at the edge) and
Session (INVALID_ARGUMENT for any other caller) so that both refuse the same requests.

Tag names follow Infobip's Create Tag / Add Tag (at most 100 characters); Infobip states
no cap on tags per conversation, so ccbridge keeps 100.
"""

from __future__ import annotations

MAX_TAGS = 100
MAX_TAG_CHARS = 100
MAX_METADATA_KEYS = 100
