"""End-user messages made ready for the CCaaS, just before each delivery.

Two things happen here, and only here (the relay, the lane step and the opening's
transcript all go through it):

* **The true content type.** A Subscriptions event carries no ``contentType``; the gateway
  leaves it empty rather than guessing. Before such a message is delivered it is read
  once from Infobip (Get Messages with ``messageIds``, one call for all such messages of
  a conversation) and delivered with Infobip's ``contentType`` and ``content``. A failed
  read is a delivery failure like any other (back-off, then a dead letter naming it);
  a message Infobip does not list (yet) is retried the same way: a type is never made up.
* **Media links a CCaaS can open.** With the media proxy on, Infobip media URLs become
  signed, expiring gateway links (:mod:`ccbridge.services.runtime.media`).
* **Not a message.** A TYPING_INDICATOR read back for a Subscriptions event is dropped
  (debug log), never delivered as a ``case.message``: the Subscriptions webhook's document
  has no typing event (CUSTOMER_ENGAGEMENT's events are conversation and message ones),
  so by the time its type is known it is no longer current. The legacy webhook's typing
  indicators are relayed as ``case.typing`` by the gateway and never reach the inbox.

What is stored in the inbox is not changed: a retry reads again and signs afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.services.infobip.client import (
    MAX_PAGE_SIZE,
    TYPING_INDICATOR,
    InfobipClient,
    InfobipError,
)
from ccbridge.services.runtime.media import MediaLinks
from ccbridge.services.session.delivery import Failure, failure_from_far_side

log = logging.getLogger(__name__)


class InboundContent:
    """See the module docstring."""

    def __init__(self, infobip: InfobipClient, links: MediaLinks) -> None:
        self.infobip = infobip
        self.links = links

    async def ready(
        self, conversation_id: str, messages: Sequence[common_pb2.Message]
    ) -> list[common_pb2.Message]:
        """Copies of ``messages`` with their content type read where missing and their
        media linked; raises :class:`Failure` when a type cannot be read now."""
        missing = [m.id for m in messages if not m.content_type]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(missing), MAX_PAGE_SIZE):
            wanted = missing[start : start + MAX_PAGE_SIZE]
            try:
                page = await self.infobip.get_messages(
                    conversation_id, message_ids=wanted, limit=len(wanted)
                )
            except InfobipError as exc:
                raise failure_from_far_side(exc, "infobip.GetMessages (content type)") from exc
            items = page.get("messages")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("id") in wanted:
                    found[str(item["id"])] = item
        out: list[common_pb2.Message] = []
        for message in messages:
            ready = common_pb2.Message()
            ready.CopyFrom(message)
            if not ready.content_type:
                item = found.get(ready.id, {})
                kind = item.get("contentType")
                if not isinstance(kind, str) or not kind:
                    raise Failure(
                        f"infobip.GetMessages (content type): message {ready.id} is not "
                        "listed with a contentType (yet)",
                        True,
                    )
                ready.content_type = kind
                if isinstance(item.get("content"), dict):
                    ready.content_json = orjson.dumps(item["content"]).decode()
            out.append(self.linked(ready))
        return out

    @staticmethod
    def dropped(message: common_pb2.Message) -> bool:
        """Whether a readied ``message`` is not to be delivered (see the module docstring);
        it leaves the inbox like a delivered one."""
        if message.content_type != TYPING_INDICATOR:
            return False
        log.debug("end-user typing indicator %s read back: dropped, not a message", message.id)
        return True

    def linked(self, message: common_pb2.Message) -> common_pb2.Message:
        """``message`` (changed in place) with its Infobip media URLs as gateway links."""
        if not self.links.enabled or not message.content_json:
            return message
        try:
            content = orjson.loads(message.content_json)
        except ValueError:
            return message  # not JSON: the connector reports it
        rewritten = self.links.rewrite(content)
        if rewritten != content:
            message.content_json = orjson.dumps(rewritten).decode()
        return message
