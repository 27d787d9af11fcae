"""The inbox relay: end-user messages to the CCaaS, batched across conversations.

This is the hot path (every inbound message of every ACTIVE handover). One sweep takes the
conversations whose inbox lane is due and needs nothing but delivery (ACTIVE with a case,
not in back-off) and, for all of them together, runs the delivery primitives
(services/session/delivery.py) pipelined across conversations:

1. claims each inbox lease and reads each inbox head (one Redis round trip, a Lua script
   per conversation);
2. leaves out messages already in the case transcript (one round trip);
3. readies the rest (services/session/inbound.py: a missing content type read from
   Infobip, media linked; a typing indicator read back is left out like those);
4. posts everything in one ``PostCustomerMessages`` call per connector;
5. takes them off the schedule, pops exactly what the CCaaS accepted and releases the
   leases (one round trip);
6. schedules again those with work left (one round trip, none when there are none).

A connector that runs out of the call's time answers part of a case "not attempted"
(fewer delivered, no error): the rest simply goes in a later sweep.

The lane step's guarantees hold: one holder of the inbox lease per conversation, a head
message leaves the inbox only after the CCaaS accepted it, in order, only while the
fencing token still holds the lease, and a failure goes through the same back-off /
dead-letter code (:meth:`Delivery.failed`), after which the inbox lane's full step
(services/session/worker.py) takes the conversation over until it is healthy again. The
outbox lane has its own lease, so a batch waiting on a slow CCaaS holds no agent reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.runtime.tracing import bind_conversation, delivery_span
from ccbridge.services.session.delivery import (
    Delivery,
    Failure,
    failure_from_rpc_error,
    held,
)
from ccbridge.services.session.inbound import InboundContent
from ccbridge.services.session.store import Claim, Finishing, Lane, SessionStore

log = logging.getLogger(__name__)

MAX_CALL_BYTES = 1 << 20  # message bytes per PostCustomerMessages call (gRPC allows 4 MiB)
# A connector without PostCustomerMessages (an older version during a rolling upgrade):
# the full step's one-message calls are used, and the batch call is tried again after this.
UNSUPPORTED_RETRY_S = 60.0


@dataclass
class _Plan:
    """One claimed conversation: its head, parsed, and what is sent."""

    claim: Claim
    messages: list[common_pb2.Message]
    in_transcript: list[bool]
    delivered: int = 0
    failure: Failure | None = None

    @property
    def to_send(self) -> list[common_pb2.Message]:
        return [m for m, seen in zip(self.messages, self.in_transcript, strict=True) if not seen]

    def popped(self) -> list[bytes]:
        """Head payloads that may leave the inbox: those in the transcript and those the
        CCaaS accepted, up to the first one it did not."""
        out: list[bytes] = []
        accepted = self.delivered
        for payload, seen in zip(self.claim.head, self.in_transcript, strict=True):
            if not seen:
                if accepted == 0:
                    break
                accepted -= 1
            out.append(payload)
        return out

    def failed_payload(self) -> bytes | None:
        """The head message the failure is about (None when nothing failed)."""
        if self.failure is None:
            return None
        popped = len(self.popped())
        return self.claim.head[popped] if popped < len(self.claim.head) else None


class InboxRelay:
    """Claims, delivers and finishes batches; see the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        connector: connector_pb2_grpc.ConnectorServiceAsyncStub,
        delivery: Delivery,
        inbound: InboundContent,
        *,
        lease_ttl_ms: int,
        call_timeout_s: float,
        window: int,
    ) -> None:
        self.store = store
        self.connector = connector
        self.delivery = delivery
        self.inbound = inbound
        self.lease_ttl_ms = lease_ttl_ms
        # The lease must outlive the call: a late answer must not meet another holder.
        self.call_timeout_s = min(call_timeout_s, lease_ttl_ms / 1000 * 0.8)
        self.window = window
        self._unsupported_until = 0.0

    async def claim(self, cids: list[str]) -> tuple[list[Claim], list[str]]:
        """(claims for the relay, conversations for the inbox lane's full step)."""
        if time.monotonic() < self._unsupported_until:
            return [], cids
        results = await self.store.claim(cids, self.lease_ttl_ms, self.window)
        claims = [r for r in results if isinstance(r, Claim)]
        others = [cid for cid, r in zip(cids, results, strict=True) if not isinstance(r, Claim)]
        return claims, others

    async def deliver(self, claims: list[Claim]) -> list[str]:
        """Delivers claimed inbox heads; returns the conversations scheduled again now."""
        plans = [_Plan(c, [common_pb2.Message.FromString(p) for p in c.head], []) for c in claims]
        # One span for the batch, linked to the trace of every message it carries.
        with delivery_span("session.relay inbox", (m for p in plans for m in p.messages)):
            return await self._deliver(plans)

    async def _deliver(self, plans: list[_Plan]) -> list[str]:
        flags = await self.store.in_transcript_batch(
            [(p.claim.conversation_id, [m.id for m in p.messages]) for p in plans]
        )
        for plan, seen in zip(plans, flags, strict=True):
            plan.in_transcript = seen
        await asyncio.gather(*(self._ready(plan) for plan in plans))
        await asyncio.gather(*(self._post(connector, group) for connector, group in _calls(plans)))
        finishes = await self.store.finish(
            Lane.INBOX,
            [
                Finishing(
                    p.claim.conversation_id,
                    p.claim.token,
                    p.popped(),
                    reset_attempts=p.failure is None and p.claim.in_attempts > 0,
                    release=p.failure is None,
                )
                for p in plans
            ],
            unschedule=True,
        )
        busy: list[str] = []
        for plan, finish in zip(plans, finishes, strict=True):
            cid = plan.claim.conversation_id
            if finish.popped < 0:
                # Whoever holds it now (if anyone) finds it scheduled again.
                log.warning("lease lost during a relay batch; another worker continues")
                busy.append(cid)
                continue
            if self.delivery.metrics is not None:
                self.delivery.metrics.delivered(Lane.INBOX, "delivered", plan.delivered)
            if plan.failure is not None:
                await self._fail(plan)
                busy.append(cid)  # the full step applies the back-off from here
            elif finish.left:
                busy.append(cid)
        await self.store.schedule_now(Lane.INBOX, busy)
        return busy

    async def _fail(self, plan: _Plan) -> None:
        claim, failure, payload = plan.claim, plan.failure, plan.failed_payload()
        assert failure is not None
        bind_conversation(claim.conversation_id)
        try:
            if payload is not None:
                # A message after accepted ones is a new head: its first attempt; a call
                # the far side's gate held was no attempt.
                attempts = claim.in_attempts if plan.delivered == 0 else 0
                attempts += 0 if failure.held else 1
                await self.delivery.failed(
                    Lane.INBOX, claim.conversation_id, claim.token, payload, attempts, failure
                )
        finally:
            await self.store.release_lease(Lane.INBOX, claim.conversation_id, claim.token)

    async def _ready(self, plan: _Plan) -> None:
        """Types read and media linked (services/session/inbound.py) for what is sent; a
        failure is the plan's, and nothing of it is posted."""
        sending = [i for i, seen in enumerate(plan.in_transcript) if not seen]
        if not sending:
            return
        try:
            ready = await self.inbound.ready(
                plan.claim.conversation_id, [plan.messages[i] for i in sending]
            )
        except Failure as failure:
            plan.failure = failure
            return
        for index, message in zip(sending, ready, strict=True):
            plan.messages[index] = message
            if self.inbound.dropped(message):
                plan.in_transcript[index] = True  # leaves the inbox unposted, like those

    async def _post(self, connector: str, plans: list[_Plan]) -> None:
        """One batch call through the far side's health gate (a message costs one of its
        rate budget); a held call leaves every plan of it held, attempting nothing."""
        name = self.delivery.far_side(Lane.INBOX, connector)
        cost = sum(len(p.to_send) for p in plans)
        admission = await self.delivery.admit(Lane.INBOX, name, cost)
        if not admission.allowed:
            failure = held(name, admission)
            for plan in plans:
                plan.failure = failure
            return
        try:
            await self._call(connector, plans)
        except BaseException:  # no outcome to report
            with contextlib.suppress(Exception):
                await self.delivery.abandon(Lane.INBOX, name, admission)
            raise
        failures = [p.failure for p in plans if p.failure is not None]
        # Sick only when nothing got through and a retry could help.
        sick = bool(failures) and len(failures) == len(plans) and any(f.retryable for f in failures)
        await self.delivery.report(Lane.INBOX, name, admission, ok=not sick)
        for failure in failures:
            if failure.retryable:
                failure.parked = name  # handed back at the far side's next success
                # A failed probe is no attempt: the outage, not the message, failed.
                failure.held = admission.probe

    async def _call(self, connector: str, plans: list[_Plan]) -> None:
        request = connector_pb2.PostCustomerMessagesRequest(
            connector=connector,
            cases=[
                connector_pb2.CaseMessages(
                    external_id=p.claim.external_id,
                    conversation_id=p.claim.conversation_id,
                    messages=p.to_send,
                )
                for p in plans
            ],
        )
        try:
            response = await self.connector.PostCustomerMessages(
                request, timeout=self.call_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # Nothing was posted: the plans stay undelivered without a failure, and the
                # full step delivers them one call per message meanwhile.
                log.warning("the connector has no PostCustomerMessages; relaying one by one")
                self._unsupported_until = time.monotonic() + UNSUPPORTED_RETRY_S
                return
            failure = failure_from_rpc_error(exc, "connector.PostCustomerMessages")
            for plan in plans:
                plan.failure = failure
            return
        if len(response.results) != len(plans):
            failure = Failure("connector.PostCustomerMessages: wrong number of results", True)
            for plan in plans:
                plan.failure = failure
            return
        for plan, result in zip(plans, response.results, strict=True):
            wanted = len(plan.to_send)
            plan.delivered = max(0, min(result.delivered, wanted))
            # Short without an error: the connector ran out of time to start more posts
            # (a slow CCaaS); the rest simply goes in the next batch.
            if plan.delivered < wanted and result.error:
                # Worded like the one-message call's gRPC error (status name first).
                status = "UNAVAILABLE" if result.retryable else "FAILED_PRECONDITION"
                plan.failure = Failure(
                    f"connector.PostCustomerMessages: {status}: {result.error}",
                    result.retryable,
                    result.retry_after_s or None,
                )


def _calls(plans: list[_Plan]) -> list[tuple[str, list[_Plan]]]:
    """Groups plans with something to send by connector, at most MAX_CALL_BYTES each."""
    calls: list[tuple[str, list[_Plan]]] = []
    open_calls: dict[str, tuple[list[_Plan], int]] = {}
    for plan in plans:
        sending = plan.to_send
        if not sending or plan.failure is not None:
            continue
        size = sum(m.ByteSize() for m in sending)
        connector = plan.claim.connector
        group, total = open_calls.get(connector, ([], 0))
        if group and total + size > MAX_CALL_BYTES:
            calls.append((connector, group))
            group, total = [], 0
        group.append(plan)
        open_calls[connector] = (group, total + size)
    calls.extend((connector, group) for connector, (group, _) in open_calls.items())
    return calls
