"""Typing indicators, both ways, relayed at once or not at all.

A typing indicator is only worth something while it is current, so it is never stored or
queued (it would wait behind the conversation's messages and arrive late): Session sends
it to Infobip (Create Conversation Event, TYPING_STARTED / TYPING_STOPPED) right away, in
the background, with a short deadline. It is dropped — not delivered later — when it is
older than ``MAX_AGE_MS`` when it arrives or when it would be sent, when the
conversation's channel has no typing events (the document's ``ConversationEventChannel``:
LIVE_CHAT, APPLE_BUSINESS_CHAT, WHATSAPP), when the handover is not ACTIVE, when the same
indicator was relayed for the conversation less than ``MIN_INTERVAL_S`` ago (the rate
limit, per process), or when Infobip does not take it in time.

The end user's typing (an inbound TYPING_INDICATOR message, which the gateway hands here
instead of to Ingest) goes the other way, to the case's connector (``PostTyping``: the
webhook contract's ``case.typing``), with the same rules: ACTIVE only, late dropped, rate
limited, one attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.session.store import SessionStore, now_ms

log = logging.getLogger(__name__)

EVENT_CHANNELS = frozenset({"LIVE_CHAT", "APPLE_BUSINESS_CHAT", "WHATSAPP"})
MAX_AGE_MS = 5000
MIN_INTERVAL_S = 2.0
SEND_TIMEOUT_S = 3.0
_REMEMBERED = 4096  # conversations whose last indicator is kept before old ones are dropped


class TypingRelay:
    """See the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        infobip: InfobipClient,
        connector: connector_pb2_grpc.ConnectorServiceAsyncStub,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.infobip = infobip
        self.connector = connector
        self._clock = clock
        # (direction, cid) → (typing, monotonic time relayed): the rate limit.
        self._last: dict[tuple[str, str], tuple[bool, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _limited(self, key: tuple[str, str], typing: bool) -> bool:
        """Whether the same indicator went this way less than MIN_INTERVAL_S ago (else
        it is recorded as relayed now)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and last[0] == typing and now - last[1] < MIN_INTERVAL_S:
            return True
        if len(self._last) >= _REMEMBERED:
            self._last = {k: v for k, v in self._last.items() if now - v[1] < MIN_INTERVAL_S}
        self._last[key] = (typing, now)
        return False

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def relay(self, cid: str, typing: bool, at_ms: int | None) -> bool:
        """The agent's indicator to the end user; False when it is dropped (see the
        module)."""
        received = now_ms()
        if at_ms is not None and received - at_ms > MAX_AGE_MS:
            return False
        rec = await self.store.get(cid)
        if rec is None or rec.state != "ACTIVE":
            return False
        channel, sender, end_user = (
            rec.get("channel"),
            rec.get("business_sender"),
            rec.get("end_user"),
        )
        if channel not in EVENT_CHANNELS or not (sender and end_user):
            return False
        if self._limited(("agent", cid), typing):
            return False
        body = {
            "from": sender,
            "to": end_user,
            "channel": channel,
            "type": "TYPING_STARTED" if typing else "TYPING_STOPPED",
        }
        self._spawn(self._send(cid, body, at_ms or received))
        return True

    async def to_agent(self, cid: str, typing: bool, at_ms: int | None) -> bool:
        """The end user's indicator to the case's CCaaS; False when it is dropped."""
        received = now_ms()
        if at_ms is not None and received - at_ms > MAX_AGE_MS:
            return False
        rec = await self.store.get(cid)
        if rec is None or rec.state != "ACTIVE":
            return False
        connector, external_id = rec.get("connector"), rec.get("external_id")
        if not (connector and external_id):
            return False
        if self._limited(("end_user", cid), typing):
            return False
        request = connector_pb2.PostTypingRequest(
            connector=connector, external_id=external_id, conversation_id=cid, typing=typing
        )
        self._spawn(self._post(request, at_ms or received))
        return True

    async def _post(self, request: connector_pb2.PostTypingRequest, at_ms: int) -> None:
        remaining_s = (MAX_AGE_MS - (now_ms() - at_ms)) / 1000
        if remaining_s <= 0:
            return  # late already: dropped
        try:
            await self.connector.PostTyping(request, timeout=min(SEND_TIMEOUT_S, remaining_s))
        except grpc.aio.AioRpcError as exc:
            log.info("end-user typing indicator dropped: %s", exc.code().name)

    async def _send(self, cid: str, body: dict[str, str], at_ms: int) -> None:
        if now_ms() - at_ms > MAX_AGE_MS:
            return  # late already: dropped
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.infobip.create_event(cid, body)
        except (FarSideError, TimeoutError) as exc:
            log.info("typing indicator dropped: %s", exc or "Infobip did not answer in time")

    async def aclose(self) -> None:
        """Cancels indicators still being sent (they would be late anyway)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
