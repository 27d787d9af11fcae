"""Background pollers for poll-mode adapters (CCaaS without webhooks, e.g. RT).

Every ``interval_s`` a poller takes/renews its Redis lease, asks the adapter for new
events, hands them to Session and only then lets the adapter commit its cursor. Any
failure is logged and the cycle is retried at the next interval with nothing committed,
so events are delivered at least once (Session dedupes by event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ccbridge.services.connector.base import Adapter
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.lease import Lease

log = logging.getLogger(__name__)


class Poller:
    """Polls one adapter until stopped."""

    def __init__(
        self,
        name: str,
        adapter: Adapter,
        reporter: SessionReporter,
        lease: Lease | None,
        *,
        interval_s: float,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.reporter = reporter
        self.lease = lease
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def poll_once(self) -> int | None:
        """One cycle; returns the number of events reported, None when another replica
        holds the lease. Raises whatever failed (nothing is committed then)."""
        if self.lease is not None and await self.lease.hold() is None:
            return None
        events = await self.adapter.poll()
        if events:
            response = await self.reporter.report(self.name, events)
            log.info(
                "poller %s: %d events (accepted %d, duplicates %d, ignored %d)",
                self.name,
                len(events),
                response.accepted,
                response.duplicates,
                response.ignored,
            )
        # Commit even an empty batch: the adapter may have skipped irrelevant items.
        await self.adapter.commit_poll(events)
        return len(events)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except FarSideError as exc:
                log.warning(
                    "poller %s: far side failed (%s); retrying next interval", self.name, exc
                )
            except Exception:  # any failure: nothing committed, try again next interval
                log.exception("poller %s: cycle failed; retrying next interval", self.name)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"poller-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            # Python 3.11's asyncio.wait_for (used inside redis-py) can swallow a cancel
            # that races with a completed operation; the flag ends the loop anyway, and
            # cancelling again until done covers the rest.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease is not None:
            try:
                await self.lease.release()
            except Exception:  # Redis gone: the lease expires on its own
                log.warning("poller %s: could not release the poll lease", self.name, exc_info=True)
