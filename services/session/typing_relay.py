"""The agent's typing indicator, relayed to the end user at once or not at all.

A typing indicator is only worth something while it is current, so it is never stored or
queued (it would wait behind the conversation's messages and arrive late): Session sends
it to Infobip (Create Conversation Event, TYPING_STARTED / TYPING_STOPPED) right away, in
the background, with a short deadline. It is dropped — not delivered later — when it is
older than ``MAX_AGE_MS`` when it arrives or when it would be sent, when the
conversation's channel has no typing events (the document's ``ConversationEventChannel``:
LIVE_CHAT, APPLE_BUSINESS_CHAT, WHATSAPP), when the handover is not ACTIVE, when the same
indicator was relayed for the conversation less than ``MIN_INTERVAL_S`` ago (the rate
limit, per process), or when Infobip does not take it in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

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
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.infobip = infobip
        self._clock = clock
        self._last: dict[str, tuple[bool, float]] = {}  # cid → (typing, monotonic sent)
        self._tasks: set[asyncio.Task[None]] = set()

    async def relay(self, cid: str, typing: bool, at_ms: int | None) -> bool:
        """Starts sending the indicator; False when it is dropped (see the module)."""
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
        now = self._clock()
        last = self._last.get(cid)
        if last is not None and last[0] == typing and now - last[1] < MIN_INTERVAL_S:
            return False
        if len(self._last) >= _REMEMBERED:
            self._last = {c: v for c, v in self._last.items() if now - v[1] < MIN_INTERVAL_S}
        self._last[cid] = (typing, now)
        body = {
            "from": sender,
            "to": end_user,
            "channel": channel,
            "type": "TYPING_STARTED" if typing else "TYPING_STOPPED",
        }
        task = asyncio.create_task(self._send(cid, body, at_ms or received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

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
