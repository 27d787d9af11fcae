"""Delivery primitives shared by both delivery paths: the per-conversation lane step
(services/session/worker.py) and the batched inbox relay (services/session/relay.py).

Each lane of a conversation (:class:`Lane`: the inbox to the CCaaS, the outbox to the
end user) is delivered the same way, whoever delivers it:

1. claim the lane under its lease (a fencing token: ``SessionStore.begin_step`` or, for
   many conversations at once, ``SessionStore.claim``);
2. read the head (``window`` messages at most);
3. post them to the far side;
4. finish: pop exactly what the far side accepted, each only while still the head and
   only while the token still holds the lease (``SessionStore.finish``);
5. on a failure, :meth:`Delivery.failed`: back off (:class:`RetryPolicy`) or move the
   head to the dead letters, with the one :class:`Failure` type every far-side call
   maps to.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc

from ccbridge.services.runtime.errors import RETRYABLE_CODES, FarSideError, retry_after_from
from ccbridge.services.runtime.farside import ALLOW, Admission, FarSideGate, Parking
from ccbridge.services.session.metrics import SessionMetrics
from ccbridge.services.session.store import Lane, SessionStore, message_id, now_ms
from ccbridge.services.session.timeline import EventKind, TimelineEvent

log = logging.getLogger(__name__)


@dataclass
class Failure(Exception):
    """A far-side call failed; ``retryable`` and ``retry_after`` (seconds) steer the
    back-off. Raised by the lane step's calls, recorded per case by the relay."""

    reason: str
    retryable: bool
    retry_after: float | None = None
    held: bool = False
    """No attempt: the far side's health gate held the call (it was not made), or it was
    the open breaker's probe (the outage failed, not the message)."""
    parked: str = ""
    """The far side this failure waits on (held by its open breaker, or failing): the
    conversation is parked on its gate and handed back at its next success."""

    def __str__(self) -> str:
        return self.reason


def held(name: str, admission: Admission) -> Failure:
    """The failure of a call the far side's gate did not let go (services/runtime/
    farside.py): retried after the gate's wait, without counting an attempt."""
    return Failure(
        f"{name}: held ({admission.reason})",
        True,
        admission.wait_s,
        held=True,
        parked=name if admission.reason == "open" else "",
    )


def failure_from_rpc_error(exc: grpc.aio.AioRpcError, what: str) -> Failure:
    """A failed gRPC call (retryable by code, the peer's retry-after from the trailing
    metadata)."""
    return Failure(
        f"{what}: {exc.code().name}: {exc.details()}",
        exc.code() in RETRYABLE_CODES,
        retry_after_from(exc),
    )


def failure_from_far_side(exc: FarSideError, what: str) -> Failure:
    """A failed HTTP call to Infobip (or any far side reporting a FarSideError)."""
    return Failure(f"{what}: {exc}", exc.retryable, exc.retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter, honouring Retry-After, and the attempt budget."""

    base_ms: int
    max_ms: int
    max_attempts: int

    def delay_ms(self, attempts: int, retry_after: float | None) -> int:
        base = min(self.max_ms, self.base_ms * (2 ** max(0, attempts - 1)))
        delay = base / 2 + random.uniform(0, base / 2)  # jitter
        if retry_after is not None:
            delay = max(delay, retry_after * 1000)
        return int(min(delay, max(self.max_ms, (retry_after or 0) * 1000)))

    def gives_up(self, failure: Failure, attempts: int) -> bool:
        """Whether a head that failed ``attempts`` times (this one included) goes to the
        dead letters now."""
        return not failure.retryable or attempts >= self.max_attempts


class Delivery:
    """What happens to a lane's head after an attempt, for both delivery paths, and the
    health gate of each far side they call (services/runtime/farside.py): the Infobip
    gate (outbox) and the connectors' (inbox, one far side per connector)."""

    def __init__(
        self,
        store: SessionStore,
        policy: RetryPolicy,
        gates: Mapping[Lane, FarSideGate] | None = None,
        wake: Callable[[Iterable[str], Iterable[Lane]], None] | None = None,
        metrics: SessionMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.policy = policy
        self.gates = dict(gates or {})
        self._wake = wake

    @staticmethod
    def far_side(lane: Lane, connector: str) -> str:
        """The gate's name of the far side a lane calls."""
        return "infobip" if lane is Lane.OUTBOX else f"connector:{connector}"

    async def admit(self, lane: Lane, name: str, cost: int = 1) -> Admission:
        gate = self.gates.get(lane)
        return ALLOW if gate is None else await gate.admit(name, cost)

    async def abandon(self, lane: Lane, name: str, admission: Admission) -> None:
        """A call that ended without an outcome: a probe's slot is freed at once."""
        gate = self.gates.get(lane)
        if gate is not None and admission.probe:
            await gate.abandon(name)

    async def report(self, lane: Lane, name: str, admission: Admission, *, ok: bool) -> bool:
        """Reports a call's outcome to its gate (a success only when the gate counted
        failures: the common case costs nothing); a success that closed the breaker
        schedules every conversation waiting on the far side at once. Returns whether the
        breaker is open now."""
        gate = self.gates.get(lane)
        if gate is None or (ok and admission.healthy):
            return False
        opened, waiters = await gate.record(name, ok)
        if not waiters:
            return opened
        by_lane: dict[Lane, list[str]] = {}
        for member in waiters:
            lane_name, _, cid = member.partition(":")
            by_lane.setdefault(Lane(lane_name), []).append(cid)
        for each, cids in by_lane.items():
            await self.store.unpark(each, cids)
            if self._wake is not None:
                self._wake(cids, [each])
        return opened

    def _wait_ms(self, parking: Parking | None, own_ms: int, *, held: bool) -> int:
        """When a failed or held head is looked at again: the open breaker's prober when
        the probe may go; one waiting on an open breaker at the latest after a recheck (it
        is handed back at the far side's first success anyway); a held one whose far side
        answered meanwhile at once; otherwise after its own wait."""
        if parking is None:
            return own_ms
        if parking.probe_in_s is not None:
            return int(parking.probe_in_s * 1000)
        if not parking.parked:
            return 0 if held else own_ms
        if parking.open:
            return self.recheck_ms() if held else min(own_ms, self.recheck_ms())
        return own_ms

    def recheck_ms(self) -> int:
        """How long a conversation parked on a sick far side waits before it looks again
        by itself (it is handed back at the far side's first success anyway): ten probe
        intervals, jittered, so a prober that vanished is replaced."""
        interval = max((g.policy.probe_interval_ms for g in self.gates.values()), default=1000)
        return int(interval * 10 * random.uniform(0.5, 1.0))

    async def _park(self, lane: Lane, cid: str, failure: Failure) -> Parking | None:
        """Parks the conversation on the far side its failure waits on (None: none); names
        the next prober in turn when the gate asks."""
        gate = self.gates.get(lane)
        if not failure.parked or gate is None:
            return None
        parking = await gate.park(failure.parked, f"{lane.value}:{cid}")
        if parking.prober:
            lane_name, _, other = parking.prober.partition(":")
            await self.store.unpark(
                Lane(lane_name), [other], now_ms() + int(parking.prober_in_s * 1000)
            )
        return parking

    async def failed(
        self,
        lane: Lane,
        cid: str,
        token: str,
        payload: bytes,
        attempts: int,
        failure: Failure,
    ) -> bool:
        """Handles a failed delivery of the lane's head ``payload`` (``attempts``:
        including this one) under the lease ``token``: dead-letters it when retrying
        cannot help or the budget is spent (returns True when it did), else records the
        lane's back-off (returns False)."""
        field = lane.value
        parking = await self._park(lane, cid, failure)
        if failure.held:
            # Not attempted (the gate held the call, or it was the breaker's probe): the
            # budget is untouched (docs/reliability.md).
            own = int((failure.retry_after or 0) * 1000)
            wait_ms = self._wait_ms(parking, own, held=True)
            if self.metrics is not None:
                self.metrics.retry(lane)
            await self.store.transition(
                cid,
                allowed=("ACTIVE", "CLOSING"),
                lane=lane,
                lease_token=token,
                values={f"{field}_next_at": str(now_ms() + wait_ms)},
            )
            return False
        if self.policy.gives_up(failure, attempts):
            log.error(
                "%s delivery gave up after %d attempts: %s", lane.queue, attempts, failure.reason
            )
            if not await self.store.dead_letter(
                lane, cid, token, payload, failure.reason, attempts
            ):
                return False  # the head changed or the lease is gone
            await self.store.transition(
                cid,
                allowed=("ACTIVE", "CLOSING"),
                lane=lane,
                lease_token=token,
                values={
                    f"{field}_attempts": "0",
                    "failure_reason": failure.reason[:500],
                    "flagged": "dead_letters",
                },
            )
            return True
        log.warning("%s delivery failed (attempt %d): %s", lane.queue, attempts, failure.reason)
        if self.metrics is not None:
            self.metrics.delivered(lane, "retried")
            self.metrics.retry(lane)
        delay = self.policy.delay_ms(attempts, failure.retry_after)
        next_at = now_ms() + self._wait_ms(parking, delay, held=False)
        await self.store.transition(
            cid,
            allowed=("ACTIVE", "CLOSING"),
            lane=lane,
            lease_token=token,
            values={
                f"{field}_attempts": str(attempts),
                f"{field}_next_at": str(next_at),
                "failure_reason": failure.reason[:500],
            },
        )
        await self.store.record(
            cid,
            TimelineEvent(
                now_ms(),
                EventKind.RETRIED,
                lane.queue,
                message_id(payload),
                detail=f"attempt {attempts}: {failure.reason}",
            ),
        )
        return False
