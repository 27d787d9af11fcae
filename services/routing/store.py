"""The rules in force: loads the rules file, and reloads it when it changes.

Changes are detected by the file's (mtime, size, inode), checked at most every
``reload_s`` seconds, both on calls and from a background task (so a change is picked up
even while no call arrives). A file that fails to load keeps the last good rules and logs
one error per broken version; the initial load fails fast instead. Inode is part of the
signature because Kubernetes swaps ConfigMap files by renaming a symlinked directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from ccbridge.services.routing.rules import RulesError, RuleSet, default_only, parse_rules

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int]


class RulesStore:
    """Holds the current :class:`RuleSet` and keeps it in line with the file."""

    def __init__(
        self,
        path: str | None,
        *,
        default_connector: str,
        reload_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.default_connector = default_connector
        self.reload_s = reload_s
        self._clock = clock
        self._rules: RuleSet | None = None
        self._signature: _Signature | None = None
        self._failed_signature: _Signature | None = None
        self._missing_logged = False
        self._last_check = float("-inf")
        self._task: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """True once rules are in force (readiness)."""
        return self._rules is not None

    def load_initial(self) -> RuleSet:
        """Loads the file (or the default-only set); raises RulesError (fail fast)."""
        if self.path is None:
            self._rules = default_only(self.default_connector)
            return self._rules
        try:
            signature = self._stat()
            rules = self._read()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise RulesError(self.path, [f"{self.path}: cannot read ({reason})"]) from None
        self._rules = rules
        self._signature = signature
        self._last_check = self._clock()
        log.info("routing rules loaded from %s: %d rules", self.path, len(self._rules.rules))
        return self._rules

    @property
    def current(self) -> RuleSet | None:
        """The rules in force without a reload check (None before ``load_initial``)."""
        return self._rules

    @property
    def rules(self) -> RuleSet:
        """The rules in force, after a reload check if one is due."""
        self.maybe_reload()
        if self._rules is None:
            raise RuntimeError("RulesStore.load_initial() was not called")
        return self._rules

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Reloads when the file changed; returns True when new rules came into force."""
        if self.path is None or self._rules is None:
            return False
        now = self._clock()
        if not force and now - self._last_check < self.reload_s:
            return False
        self._last_check = now
        try:
            signature = self._stat()
        except OSError as exc:
            if not self._missing_logged:
                log.error(
                    "routing rules file %s unreadable (%s); keeping the last good rules",
                    self.path,
                    exc.strerror or type(exc).__name__,
                )
                self._missing_logged = True
            return False
        self._missing_logged = False
        if signature == self._signature or signature == self._failed_signature:
            return False
        try:
            rules = self._read()
        except RulesError as exc:
            self._failed_signature = signature
            log.error(
                "routing rules file %s is invalid; keeping the last good rules: %s",
                self.path,
                "; ".join(exc.errors),
            )
            return False
        except OSError as exc:
            log.error(
                "routing rules file %s unreadable (%s); keeping the last good rules",
                self.path,
                exc.strerror or type(exc).__name__,
            )
            return False
        self._rules = rules
        self._signature = signature
        self._failed_signature = None
        log.info("routing rules reloaded from %s: %d rules", self.path, len(rules.rules))
        return True

    def _stat(self) -> _Signature:
        assert self.path is not None
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> RuleSet:
        assert self.path is not None
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError as exc:
            raise RulesError(self.path, [f"{self.path}: not UTF-8 text ({exc.reason})"]) from None
        return parse_rules(text, source=self.path, default_connector=self.default_connector)

    async def _watch(self) -> None:
        interval = max(self.reload_s, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                self.maybe_reload()
            except Exception:  # the watcher must survive anything a file can do
                log.exception("routing rules reload check failed")

    def start(self) -> None:
        """Starts the background reload check (call inside the running loop)."""
        if self.path is not None and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="routing-rules-watch")

    async def stop(self) -> None:
        """Stops the background reload check."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
