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
from dataclasses import dataclass

import grpc

from ccbridge.services.runtime.errors import RETRYABLE_CODES, FarSideError, retry_after_from
from ccbridge.services.session.store import Lane, SessionStore, now_ms

log = logging.getLogger(__name__)


@dataclass
class Failure(Exception):
    """A far-side call failed; ``retryable`` and ``retry_after`` (seconds) steer the
    back-off. Raised by the lane step's calls, recorded per case by the relay."""

    reason: str
    retryable: bool
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.reason


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
    """What happens to a lane's head after an attempt, for both delivery paths."""

    def __init__(self, store: SessionStore, policy: RetryPolicy) -> None:
        self.store = store
        self.policy = policy

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
        next_at = now_ms() + self.policy.delay_ms(attempts, failure.retry_after)
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
        return False
