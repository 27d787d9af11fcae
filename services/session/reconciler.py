"""The reconciler: one replica at a time repairs the schedule and catches what a missed
Infobip webhook left out, with a bounded number of Infobip calls per pass.

A pass runs under one lease (services/runtime/lease.py, key ``ccb:lease:reconcile``)
held from one pass to the next, so whichever replica runs it, it runs once per
interval; its progress marks are written only while its fencing token still holds the
lease. A pass:

1. Index repair (Redis only): every OPENING, ACTIVE and CLOSING handover whose lane has
   work but is not scheduled gets scheduled; index entries of handovers in another state
   (or gone) are dropped.
2. Missed closes: Get Conversations with ``status=CLOSED`` and ``updatedAfter`` = the
   last pass's start minus ``CCBRIDGE_RECONCILE_MARGIN_S``, ordered ``updatedAt:asc``,
   999 a page; the ids are looked up locally and OPENING/ACTIVE handovers among them
   move to CLOSING (closed by INFOBIP). Infobip calls: 1 + closed/999 (closed: the
   account's conversations closed since then), whatever the number of ACTIVE handovers.
3. Backfill: up to ``CCBRIDGE_RECONCILE_BACKFILL_PER_PASS`` ACTIVE handovers, taken in
   turn, each read with Get Messages (``direction=INBOUND``, ``createdAfter`` = its
   newest inbound message seen by the backfill minus the margin, ``createdAt:asc``);
   the messages go through Session's ingest and its dedupe, so a message the webhook
   brought as well is delivered once. Get Conversations cannot tell which conversations
   got messages (whether ``updatedAt`` moves with a message is not documented), hence
   the per-pass budget: one call per conversation (more only past 999 new messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ccbridge.common.v1 import common_pb2
from ccbridge.services.history.transcript import to_message
from ccbridge.services.infobip.client import MAX_PAGE_SIZE, InfobipClient
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.ids import is_conversation_id
from ccbridge.services.runtime.lease import Lease
from ccbridge.services.session.settings import SessionSettings
from ccbridge.services.session.store import (
    INGEST_ACCEPTED,
    LANES,
    Lane,
    SessionStore,
    lane_has_work,
    now_ms,
)

log = logging.getLogger(__name__)

INDEX_PAGE = 500  # handovers read per index-repair round trip
MAX_BACKFILL_PAGES = 10  # Get Messages pages per conversation and pass, at most
OPEN_STATES = ("OPENING", "ACTIVE")

Wake = Callable[[Iterable[str], Iterable[Lane]], None]


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(max(ms, 0) / 1000, UTC)


def _created_ms(message: common_pb2.Message) -> int:
    return message.created_at.seconds * 1000 + message.created_at.nanos // 1_000_000


def _items(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = body.get(key)
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


class Reconciler:
    """See the module docstring. ``wake`` tells this process's worker which
    conversations got work."""

    def __init__(
        self,
        store: SessionStore,
        infobip: InfobipClient,
        settings: SessionSettings,
        wake: Wake,
    ) -> None:
        self.store = store
        self.infobip = infobip
        self.s = settings
        self.wake = wake
        # Held from one pass to the next (renewed at each), so other replicas skip
        # passes while the holder lives, and take over within two intervals if it dies.
        ttl_ms = max(settings.lease_ttl_ms, int(settings.reconcile_interval_s * 2000))
        self.lease = Lease(store.r, store.k_reconcile_lease, ttl_ms, kind="reconcile")
        self.margin_ms = int(settings.reconcile_margin_s * 1000)

    async def run_once(self) -> dict[str, int] | None:
        """One pass; None when another replica holds the lease."""
        token = await self.lease.hold()
        if token is None:
            return None
        lost = asyncio.Event()

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease.ttl_ms / 3000)
                if not await self.lease.renew():
                    lost.set()
                    return

        renewer = asyncio.create_task(renew())
        stats = {
            "rescheduled": 0,
            "closed": 0,
            "backfilled": 0,
            "infobip_calls": 0,
            "infobip_failures": 0,
        }
        try:
            await self._repair_index(stats, lost)
            if self.s.reconcile_infobip and not lost.is_set():
                await self._missed_closes(token, stats, lost)
                await self._backfill(token, stats, lost)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if lost.is_set():
            log.warning("reconciler lease lost during the pass; another replica continues")
        if stats["rescheduled"] or stats["closed"] or stats["backfilled"]:
            log.info("reconciled", extra=stats)
        return stats

    # -- 1. index repair -------------------------------------------------------------------
    async def _repair_index(self, stats: dict[str, int], lost: asyncio.Event) -> None:
        for state in ("OPENING", "ACTIVE", "CLOSING"):
            offset = 0
            while not lost.is_set():
                ids, more = await self.store.list_state(state, offset, INDEX_PAGE)
                rows = await self.store.index_rows(ids)
                stale = 0
                for cid, (actual, inbox, outbox, due_in, due_out) in zip(ids, rows, strict=True):
                    if actual != state:
                        await self.store.r.zrem(self.store.k_state(state), cid)
                        stale += 1
                        continue
                    for lane, scheduled in ((Lane.INBOX, due_in), (Lane.OUTBOX, due_out)):
                        if not scheduled and lane_has_work(lane, state, inbox, outbox):
                            await self.store.schedule(lane, cid, now_ms())
                            self.wake([cid], [lane])
                            stats["rescheduled"] += 1
                if not more:
                    break
                offset += INDEX_PAGE - stale  # dropped entries shift the rest up

    # -- 2. missed closes ------------------------------------------------------------------
    async def _missed_closes(self, token: str, stats: dict[str, int], lost: asyncio.Event) -> None:
        started = now_ms()
        mark, _cursor = await self.store.reconcile_progress()
        if mark is None:
            # First pass: nothing open now changed state before its index entry.
            mark = await self.store.oldest_open_ms() or started
        after = _moment(mark - self.margin_ms)
        page = 0
        while not lost.is_set():
            try:
                body = await self.infobip.list_conversations(
                    status="CLOSED", updated_after=after, page=page, limit=MAX_PAGE_SIZE
                )
            except FarSideError as exc:
                # The mark stays: the next pass lists the same window again.
                stats["infobip_failures"] += 1
                log.warning("reconciler: listing closed conversations failed: %s", exc)
                return
            stats["infobip_calls"] += 1
            items = _items(body, "conversations")
            ids = [
                cid
                for cid in (str(item.get("id") or "") for item in items)
                if is_conversation_id(cid)
            ]
            for cid, state in zip(ids, await self.store.states(ids), strict=True):
                if state not in OPEN_STATES:
                    continue
                ok, _ = await self.store.transition(
                    cid,
                    allowed=OPEN_STATES,
                    new_state="CLOSING",
                    due=LANES,
                    values={
                        "closed_by": "INFOBIP",
                        "close_reason": "reconciler: closed at Infobip",
                    },
                )
                if ok:
                    stats["closed"] += 1
                    self.wake([cid], LANES)
            if len(items) < MAX_PAGE_SIZE:
                await self.store.save_reconcile_progress(token, "closed_mark", started)
                return
            page += 1

    # -- 3. backfill -----------------------------------------------------------------------
    async def _backfill(self, token: str, stats: dict[str, int], lost: asyncio.Event) -> None:
        budget = self.s.reconcile_backfill_per_pass
        if budget <= 0 or lost.is_set():
            return
        _mark, cursor = await self.store.reconcile_progress()
        ids, more = await self.store.list_state("ACTIVE", cursor, budget)
        for cid in ids:
            if lost.is_set():
                return
            await self._backfill_one(cid, stats)
        # In turn: the next pass starts where this one stopped (from the top at the end).
        await self.store.save_reconcile_progress(
            token, "backfill_cursor", cursor + len(ids) if more else 0
        )

    async def _backfill_one(self, cid: str, stats: dict[str, int]) -> None:
        rec = await self.store.get(cid)
        if rec is None or rec.state != "ACTIVE":
            return
        newest = rec.get_int("backfill_at") or rec.get_int("created_at")
        after = _moment(newest - self.margin_ms)
        accepted = 0
        for page in range(MAX_BACKFILL_PAGES):
            try:
                body = await self.infobip.get_messages(
                    cid,
                    page=page,
                    limit=MAX_PAGE_SIZE,
                    order_by="createdAt:asc",
                    direction="INBOUND",
                    created_after=after,
                )
            except FarSideError as exc:
                stats["infobip_failures"] += 1
                log.warning("reconciler: backfill read failed: %s", exc)
                break
            stats["infobip_calls"] += 1
            items = _items(body, "messages")
            messages = [
                message
                for message in (to_message(item, cid) for item in items)
                if message.id and message.direction == common_pb2.DIRECTION_INBOUND
            ]
            for message in messages:
                message.conversation_id = cid
                newest = max(newest, _created_ms(message))
            # The transcript the case was opened with already holds the older ones.
            known = await self.store.in_transcript_many(cid, [m.id for m in messages])
            messages = [m for m, k in zip(messages, known, strict=True) if not k]
            if messages:
                outcomes = await self.store.ingest(messages)
                accepted += outcomes.count(INGEST_ACCEPTED)
            if len(items) < MAX_PAGE_SIZE:
                break
        await self.store.set_backfill_mark(cid, newest)
        if accepted:
            stats["backfilled"] += accepted
            log.info("backfilled inbound messages a webhook missed", extra={"count": accepted})
            self.wake([cid], [Lane.INBOX])
