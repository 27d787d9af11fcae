"""The conversation worker: opens cases, delivers inbox and outbox in order, closes.

Each conversation has two lanes (store.Lane), scheduled and leased separately, each
with its own scheduler loop and its own pool of steps, so neither direction ever waits
on the other (not on its back-off, not on a slow far side, not on a free slot). A
scheduler loop reads its lane's due conversations from Redis; for each one a task takes
the lane's lease (so exactly one replica works on it), runs one step, and schedules the
lane's next step. Everything it needs to resume lives in Redis, so any process may be
killed at any instant.

The inbox lane's step, by state (its due conversations that need nothing but delivery
go to the batched relay, services/session/relay.py, instead):

- OPENING: history.GetTranscript → routing.Route → connector.OpenCase → ACTIVE.
- ACTIVE: deliver the inbox to the CCaaS, head first.
- CLOSING: drain the inbox (or dead-letter it after a CCaaS close); once both queues
  are empty (the outbox lane wakes it), close the other side, then CLOSED.

The outbox lane's step delivers agent messages to Infobip in ACTIVE and CLOSING (or
dead-letters them after an Infobip close). In both lanes a failing head is retried with
the lane's own back-off, dead-lettered after the budget or at once when the far side
says retrying cannot help (services/session/delivery.py, shared with the relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.history.v1 import history_pb2, history_pb2_grpc
from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.infobip.client import (
    MAX_PAGE_SIZE,
    InfobipClient,
    InfobipError,
    InfobipNotFound,
)
from ccbridge.services.infobip.outbound import EMAIL_CHANNEL, Part, Unsupported, build_parts
from ccbridge.services.runtime.errors import FarSideError
from ccbridge.services.runtime.farside import FarSideGate, GatePolicy
from ccbridge.services.runtime.lease import holder_of
from ccbridge.services.runtime.media import MediaLinks
from ccbridge.services.runtime.tracing import bind_conversation, delivery_span
from ccbridge.services.session.delivery import (
    Delivery,
    Failure,
    RetryPolicy,
    failure_from_far_side,
    failure_from_rpc_error,
    held,
)
from ccbridge.services.session.inbound import InboundContent
from ccbridge.services.session.metrics import SessionMetrics
from ccbridge.services.session.reconciler import Reconciler
from ccbridge.services.session.relay import InboxRelay
from ccbridge.services.session.settings import SessionSettings
from ccbridge.services.session.store import (
    LANES,
    Claim,
    Finishing,
    HandoverRecord,
    Lane,
    SendingMark,
    SessionStore,
    lane_has_work,
    now_ms,
    outbox_item,
)
from ccbridge.services.session.timeline import EventKind, TimelineEvent

log = logging.getLogger(__name__)

# Metadata keys the bridge writes on the Infobip conversation once the case is open.
ANNOTATION_CONNECTOR = "ccbridgeConnector"
ANNOTATION_CASE_ID = "ccbridgeCaseId"
# Relay batches under way at once. What arrives while one is out waits for the next, so
# batches grow with the load and the connector's and CCaaS's cost per message falls
# (measured: bench/README.md, "Measured choices in the code").
RELAY_IN_FLIGHT = 1
MAX_DUE_READ = 1000  # due conversations read per scheduler pass, at most
READBACK_MAX_PAGES = 5  # Get Messages pages read back after an unanswered send, at most
# A Create Message starts only with this much of its lease left, and its timeout ends
# SEND_MARGIN_S before the lease could pass on (services/runtime/lease.py, Liveness).
MIN_SEND_S = 0.5
SEND_MARGIN_S = 0.1


# A handover record (None when missing) with its inbox and outbox lengths.
Snapshot = tuple[HandoverRecord | None, int, int]


def _ambiguous(exc: FarSideError) -> bool:
    """Whether a failed Create Message may have been stored all the same: no answer
    (timeout, broken connection) or a 5xx. A 4xx (429 included) means it was not."""
    if exc.status is None:
        return exc.retryable  # an invalid request never left
    return exc.status >= 500


def _is_sent(sent: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether Infobip's ``sent`` message is the Create Message ``body``: same recipient
    and content type, and every content field sent has the same value."""
    content, expected = sent.get("content"), body["content"]
    if sent.get("to") not in (None, body["to"]) or sent.get("contentType") != body["contentType"]:
        return False
    if not isinstance(expected, dict) or not isinstance(content, dict):
        return bool(content == expected)
    return all(content.get(key) == value for key, value in expected.items())


class LeaseLost(Exception):
    """Another worker took the conversation over; stop touching it."""


class Rejected(Exception):
    """Routing refused the handover (e.g. outside the rule's opening hours): no case."""

    def __init__(self, reason: str, decision: common_pb2.RoutingDecision) -> None:
        super().__init__(reason)
        self.reason = reason
        self.decision = decision


class Peers:
    """gRPC stubs of the services Session calls, plus the Infobip client."""

    def __init__(
        self,
        history: history_pb2_grpc.HistoryServiceAsyncStub,
        routing: routing_pb2_grpc.RoutingServiceAsyncStub,
        connector: connector_pb2_grpc.ConnectorServiceAsyncStub,
        infobip: InfobipClient,
    ) -> None:
        self.history = history
        self.routing = routing
        self.connector = connector
        self.infobip = infobip


class ConversationWorker:
    """Schedules and runs lane steps; see the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        peers: Peers,
        settings: SessionSettings,
        metrics: SessionMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.peers = peers
        self.s = settings
        self.policy = RetryPolicy(
            settings.retry_base_ms, settings.retry_max_ms, settings.delivery_max_attempts
        )
        self.delivery = Delivery(
            store,
            self.policy,
            {
                Lane.OUTBOX: FarSideGate(
                    store.r,
                    store.p,
                    GatePolicy(
                        failures_to_open=settings.farside_failures_to_open,
                        probe_interval_ms=settings.farside_probe_interval_ms,
                        probe_timeout_ms=int(settings.infobip_timeout_s * 2000),
                        rate_per_s=settings.infobip_rate_per_s,
                        burst=max(1, int(settings.infobip_rate_per_s)),
                    ),
                ),
                Lane.INBOX: FarSideGate(
                    store.r,
                    store.p,
                    GatePolicy(
                        failures_to_open=settings.farside_failures_to_open,
                        probe_interval_ms=settings.farside_probe_interval_ms,
                        probe_timeout_ms=int(settings.grpc_timeout_s * 6000),
                        rate_per_s=settings.connector_rate_per_s,
                        burst=max(1, int(settings.connector_rate_per_s)),
                    ),
                ),
            },
            self.wake,
            metrics,
        )
        self._wake = {lane: asyncio.Event() for lane in LANES}
        self._hot: dict[Lane, set[str]] = {lane: set() for lane in LANES}  # given work
        self._running: dict[tuple[Lane, str], asyncio.Task[None]] = {}
        # One pool per lane: steps stuck on one far side never take the other's slots.
        self._sem = {lane: asyncio.Semaphore(settings.worker_concurrency) for lane in LANES}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.inbound = InboundContent(
            peers.infobip, MediaLinks(settings.media, settings.infobip_base_url)
        )
        # Lease tokens this process holds: (acquired, held until), monotonic seconds.
        self._held: dict[str, tuple[float, float]] = {}
        self.liveness = store.liveness
        self._live = asyncio.Event()  # this replica's liveness key is written
        self._beat: asyncio.Task[None] | None = None
        self.relay = InboxRelay(
            store,
            peers.connector,
            self.delivery,
            self.inbound,
            lease_ttl_ms=settings.lease_ttl_ms,
            call_timeout_s=settings.grpc_timeout_s * 3,
            window=settings.delivery_window,
        )
        self._relay_slots = asyncio.Semaphore(RELAY_IN_FLIGHT)
        self.reconciler = Reconciler(store, peers.infobip, settings, self.wake)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.liveness is None:
            self._live.set()
        else:
            self._beat = asyncio.create_task(self._liveness_loop(), name="liveness")
        self._tasks = [
            *(
                asyncio.create_task(self._schedule_loop(lane), name=f"scheduler-{lane.value}")
                for lane in LANES
            ),
            asyncio.create_task(self._reconcile_loop(), name="reconciler"),
            asyncio.create_task(self._retention_loop(), name="retention"),
        ]

    def wake(self, cids: Iterable[str] = (), lanes: Iterable[Lane] = LANES) -> None:
        """Called after this process accepted work, so delivery starts at once; with the
        conversations concerned, the lanes' next passes take them without reading the
        schedule."""
        cids = list(cids)
        for lane in lanes:
            self._hot[lane].update(cids)
            self._wake[lane].set()

    async def stop(self, timeout_s: float) -> None:
        """Stops taking new work and waits for in-flight steps (no half delivery)."""
        self._stopping = True
        for event in self._wake.values():
            event.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Another replica can run the next reconciler pass at once, not two intervals on.
        with contextlib.suppress(Exception):
            await self.reconciler.lease.release()
        if self._running:
            _done, pending = await asyncio.wait(set(self._running.values()), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._beat is not None:  # after the steps: their sends are fenced by it
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self.liveness is not None:
            with contextlib.suppress(Exception):
                await self.liveness.stop()

    async def _liveness_loop(self) -> None:
        """Renews this replica's liveness key (leases name it: services/runtime/lease.py);
        scheduling starts once it is written, so no lease names a replica without one."""
        assert self.liveness is not None
        interval = self.liveness.interval_ms / 1000
        while True:
            if await self.liveness.beat() and not self._live.is_set():
                log.info("liveness key written", extra={"replica": self.liveness.replica})
                self._live.set()
            await asyncio.sleep(interval)

    # -- scheduling ------------------------------------------------------------------------
    async def _schedule_loop(self, lane: Lane) -> None:
        await self._live.wait()
        poll = self.s.scheduler_poll_ms / 1000
        last_read = 0.0
        wake = self._wake[lane]
        while not self._stopping:
            # Cleared before reading: a wake-up during this pass makes the next one start
            # at once instead of after the poll interval.
            wake.clear()
            hot, self._hot[lane] = self._hot[lane], set()
            try:
                # Conversations this process just gave work go straight to dispatch; the
                # schedule (everything else: back-offs, other replicas' work, restarts)
                # is read when there are none, and at least every poll interval.
                due = list(hot)
                if not hot or time.monotonic() - last_read >= poll:
                    last_read = time.monotonic()
                    limit = min(MAX_DUE_READ, self.s.worker_concurrency * 2 + len(self._running))
                    read, adopted = await self.store.due(lane, limit)
                    if adopted:  # from an older release's schedule: both lanes
                        self.wake(adopted, [lane.other])
                    due = list(dict.fromkeys([*due, *read]))
                due = [cid for cid in due if (lane, cid) not in self._running]
                if due:
                    await self._dispatch(lane, due)
            except Exception:
                log.warning("cannot read the %s schedule; retrying", lane.queue, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll)

    async def _dispatch(self, lane: Lane, due: list[str]) -> None:
        """Inbox lane: hands the conversations that need nothing but delivery to the
        relay as one batch, every other one to its own step. Outbox lane: a step each."""
        if lane is Lane.OUTBOX:
            self._start_steps(lane, due)
            return
        await self._relay_slots.acquire()
        try:
            claims, others = await self.relay.claim(due)
        except BaseException:
            self._relay_slots.release()
            raise
        self._start_steps(lane, others)
        if not claims:
            self._relay_slots.release()
            return
        task = asyncio.create_task(self._relay_batch(claims), name="relay")
        for claim in claims:
            self._running[(lane, claim.conversation_id)] = task

    def _start_steps(self, lane: Lane, cids: list[str]) -> None:
        for cid in cids:
            self._running[(lane, cid)] = asyncio.create_task(
                self._run(lane, cid), name=f"{lane.value}-{cid}"
            )

    async def _relay_batch(self, claims: list[Claim]) -> None:
        busy: list[str] = []
        try:
            busy = await self.relay.deliver(claims)
        except Exception:
            log.exception("relay batch failed; the conversations are retried")
            with contextlib.suppress(Exception):
                for claim in claims:
                    cid = claim.conversation_id
                    await self.store.release_lease(Lane.INBOX, cid, claim.token)
                    await self.store.schedule(Lane.INBOX, cid, now_ms() + 1000)
        finally:
            for claim in claims:
                self._running.pop((Lane.INBOX, claim.conversation_id), None)
            self._relay_slots.release()
            # Only conversations with work left need another pass: a batch that left
            # nothing behind must not cost a schedule read.
            if busy:
                self.wake(busy, [Lane.INBOX])

    async def _run(self, lane: Lane, cid: str) -> None:
        try:
            async with self._sem[lane]:
                if not self._stopping:
                    await self.run_step(lane, cid)
        except Exception:
            log.exception("%s step failed", lane.queue)
            with contextlib.suppress(Exception):
                await self.store.schedule(lane, cid, now_ms() + 1000)
        finally:
            self._running.pop((lane, cid), None)
            self._wake[lane].set()

    @contextlib.asynccontextmanager
    async def _lease(self, lane: Lane, cid: str) -> AsyncIterator[tuple[str | None, Snapshot]]:
        """Holds the lane's lease (renewed in the background) and yields its fencing
        token (None: another worker holds it) with the record and queue lengths read in
        the same round trip."""
        ttl = self.s.lease_ttl_ms
        started = time.monotonic()  # before the request: the lease lasts at least this long
        token, rec, inbox, outbox = await self.store.begin_step(lane, cid, ttl)
        if token is None:
            yield None, (rec, inbox, outbox)
            return
        self._held[token] = (started, started + ttl / 1000)

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl / 3000)
                asked = time.monotonic()
                if not await self.store.renew_lease(lane, cid, token, ttl):
                    self._held[token] = (started, 0.0)
                    return
                self._held[token] = (started, asked + ttl / 1000)

        renewer = asyncio.create_task(renew())
        try:
            yield token, (rec, inbox, outbox)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._held.pop(token, None)
            with contextlib.suppress(Exception):
                await self.store.release_lease(lane, cid, token)

    def time_left_s(self, token: str) -> float:
        """How long ``token``'s lease is certainly still ours (the monotonic clock since
        the acquire or renewal was asked, so a pause of this process counts), and this
        replica's liveness key with it: a successor may take over when either is gone."""
        _, until = self._held.get(token, (0.0, 0.0))
        left = until - time.monotonic()
        if self.liveness is not None:
            left = min(left, self.liveness.remaining_s())
        return left

    async def run_step(self, lane: Lane, cid: str) -> None:
        """Runs one step of a conversation's lane if the lane's lease can be taken."""
        bind_conversation(cid)
        async with self._lease(lane, cid) as (token, snapshot):
            if token is None:
                # Another replica works on it; look again when its lease could expire, or
                # its liveness key (then the lease is taken over at once).
                wait = self.s.lease_ttl_ms // 2
                if self.liveness is not None:
                    wait = min(wait, self.liveness.ttl_ms)
                await self.store.postpone_if_earlier(lane, cid, now_ms() + wait)
                return
            try:
                if lane is Lane.INBOX:
                    await self._inbox_step(cid, token, snapshot)
                else:
                    await self._outbox_step(cid, token, snapshot)
            except LeaseLost:
                log.warning("%s lease lost; another worker continues", lane.queue)

    async def _inbox_step(self, cid: str, token: str, snapshot: Snapshot) -> None:
        # Each re-read also brings the queue lengths (one round trip), so empty queues
        # cost no read and the reschedule needs none.
        rec, inbox, outbox = snapshot
        if rec is None:
            await self.store.unschedule(Lane.INBOX, cid)
            return
        if rec.state == "OPENING":
            await self._open(rec, token)
            rec, inbox, outbox = await self._reread(rec)
            if rec.state == "ACTIVE" and outbox:  # agent messages sent while opening
                await self.store.schedule(Lane.OUTBOX, cid, now_ms())
                self.wake([cid], [Lane.OUTBOX])
        if rec.state in ("ACTIVE", "CLOSING") and inbox:
            closed_by = rec.get("closed_by")
            # After a CCaaS close, end-user messages have no case to go to: dead-lettered.
            await self._drain(
                rec,
                token,
                Lane.INBOX,
                deliverable=not (rec.state == "CLOSING" and closed_by == "CCAAS"),
            )
            rec, inbox, outbox = await self._reread(rec)
        if rec.state == "CLOSING" and not inbox and not outbox:
            await self._close(rec, token)
            rec, inbox, outbox = await self._reread(rec)
        await self._reschedule(Lane.INBOX, rec, inbox, outbox)

    async def _outbox_step(self, cid: str, token: str, snapshot: Snapshot) -> None:
        rec, inbox, outbox = snapshot
        if rec is None:
            await self.store.unschedule(Lane.OUTBOX, cid)
            return
        if rec.state in ("ACTIVE", "CLOSING") and outbox:
            # After an Infobip close, agent messages have no conversation: dead-lettered.
            closed_by = rec.get("closed_by")
            await self._drain(
                rec,
                token,
                Lane.OUTBOX,
                deliverable=not (rec.state == "CLOSING" and closed_by == "INFOBIP"),
            )
            rec, inbox, outbox = await self._reread(rec)
        if rec.state == "CLOSING" and not outbox:
            # The close (inbox lane) waits for the outbox to drain: wake it now.
            await self.store.schedule(Lane.INBOX, cid, now_ms())
            self.wake([cid], [Lane.INBOX])
        await self._reschedule(Lane.OUTBOX, rec, inbox, outbox)

    async def _reread(self, rec: HandoverRecord) -> tuple[HandoverRecord, int, int]:
        fresh, inbox, outbox = await self.store.snapshot(rec.conversation_id)
        return fresh or rec, inbox, outbox

    async def _reschedule(self, lane: Lane, rec: HandoverRecord, inbox: int, outbox: int) -> None:
        cid = rec.conversation_id
        if rec.state in ("CLOSED", "FAILED", "REJECTED"):
            await self.store.unschedule(lane, cid)
            if rec.state == "CLOSED" and lane is Lane.INBOX:
                await self.store.finish_closed(cid)
            return
        times: list[int] = []
        if lane_has_work(lane, rec.state, inbox, outbox):
            if lane is Lane.OUTBOX:
                times.append(rec.get_int("out_next_at"))
            elif rec.state == "OPENING":
                times.append(rec.get_int("open_next_at"))
            elif inbox:
                times.append(rec.get_int("in_next_at"))
            else:  # CLOSING with both queues empty
                times.append(rec.get_int("close_next_at"))
        if times:
            await self.store.schedule(lane, cid, max(min(times), now_ms()))
            return
        # Work accepted between our last look and the unschedule must not be stranded.
        await self.store.unschedule_if_idle(lane, cid)

    # -- opening ---------------------------------------------------------------------------
    async def _open(self, rec: HandoverRecord, token: str) -> None:
        cid = rec.conversation_id
        if rec.get_int("open_next_at") > now_ms():
            return
        try:
            external_id, connector, decision, transcript = await self._open_case(rec)
        except Rejected as rejected:
            log.info("handover rejected by routing", extra={"reason": rejected.reason})
            ok, _ = await self.store.transition(
                cid,
                allowed=("OPENING",),
                new_state="REJECTED",
                lease_token=token,
                values={
                    "failure_reason": rejected.reason,
                    "open_attempts": "0",
                    "routing": _routing_json(rejected.decision, with_connector=True),
                },
            )
            if ok:
                await self.store.finish_rejected(cid)
                if self.metrics is not None:
                    self.metrics.opened("rejected")
            return
        except Failure as failure:
            attempts = rec.get_int("open_attempts") + 1
            if not failure.retryable or attempts >= self.s.open_max_attempts:
                log.error("opening failed for good: %s", failure.reason)
                ok, _ = await self.store.transition(
                    cid,
                    allowed=("OPENING",),
                    new_state="FAILED",
                    lease_token=token,
                    values={"failure_reason": failure.reason[:500], "open_attempts": str(attempts)},
                )
                if ok and self.metrics is not None:
                    self.metrics.opened("failed")
                if ok and self.s.route_back_on_failed:
                    await self._route_back(cid)
                return
            log.warning("opening failed (attempt %d), retrying: %s", attempts, failure.reason)
            await self.store.transition(
                cid,
                allowed=("OPENING",),
                lease_token=token,
                values={
                    "failure_reason": failure.reason[:500],
                    "open_attempts": str(attempts),
                    "open_next_at": str(
                        now_ms() + self.policy.delay_ms(attempts, failure.retry_after)
                    ),
                },
            )
            await self.store.record(
                cid,
                TimelineEvent(
                    now_ms(),
                    EventKind.RETRIED,
                    detail=f"opening attempt {attempts}: {failure.reason}",
                ),
            )
            return
        # Link first: agent events that arrive right after activation must resolve.
        # Until the activation, they (and those parked before) are held back: moved in
        # order by release_case below.
        await self.store.hold_case(cid, connector, external_id)
        # Only inbound messages can come back through Ingest (webhooks carry the end
        # user's messages), so only their ids are remembered.
        await self.store.remember_transcript(
            cid,
            [m.id for m in transcript.messages if m.direction != common_pb2.DIRECTION_OUTBOUND],
        )
        values = {
            "connector": connector,
            "external_id": external_id,
            "routing": _routing_json(decision),
            "failure_reason": "",
            "open_attempts": "0",
            "opened_at": str(now_ms()),
        }
        if self.s.infobip_agent_id:
            # The bridge's agent takes the conversation at escalation (Infobip then tells
            # Answers the bot is no longer in control); if this fails, the outbox lane
            # does it before the first reply.
            try:
                values.update(await self._assignment(cid))
            except Failure as failure:
                log.warning("could not read or assign the Infobip assignee: %s", failure.reason)
        if transcript.channel:
            values["channel"] = transcript.channel
        if transcript.end_user:
            values["end_user"] = transcript.end_user
            values["business_sender"] = transcript.business_sender
        ok, prev = await self.store.transition(
            cid, allowed=("OPENING",), new_state="ACTIVE", lease_token=token, values=values
        )
        if not ok and prev == "CLOSING":
            # Closed at Infobip while opening: keep the case id so the close reaches it.
            await self.store.transition(
                cid,
                allowed=("CLOSING",),
                lease_token=token,
                values={"connector": connector, "external_id": external_id},
            )
        elif not ok:
            raise LeaseLost()
        if ok and self.metrics is not None:
            self.metrics.opened("ok", rec.get_int("created_at"))
        await self.store.release_case(cid, connector, external_id)
        await self._annotate(rec, connector, external_id)
        log.info(
            "handover active",
            extra={
                "connector": connector,
                "rule": decision.rule,
                "transcript_messages": len(transcript.messages),
            },
        )

    async def _annotate(self, rec: HandoverRecord, connector: str, external_id: str) -> None:
        """Copies the escalation's tags and metadata onto the Infobip conversation, with
        the connector and case id (``ccbridgeConnector``, ``ccbridgeCaseId``) so an
        Infobip agent or report can find the case. Best effort: the handover is already
        ACTIVE and routing and the case have their own copy."""
        metadata = {**rec.metadata, ANNOTATION_CONNECTOR: connector}
        if external_id:
            metadata[ANNOTATION_CASE_ID] = external_id
        try:
            await self.peers.history.AnnotateConversation(
                history_pb2.AnnotateConversationRequest(
                    conversation_id=rec.conversation_id, tags=rec.tags, metadata=metadata
                ),
                timeout=self.s.grpc_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("could not annotate the Infobip conversation: %s", exc.code().name)

    async def _route_back(self, cid: str) -> None:
        """Hands a conversation whose opening failed for good back to Infobip's routing
        (Route Conversation), so the end user is not left waiting on nobody. The outcome
        is recorded on the handover (``route_back``: ``done`` or ``failed``)."""
        try:
            await self.peers.infobip.route_conversation(cid)
        except FarSideError as exc:
            log.error("could not hand the conversation back to Infobip routing: %s", exc)
            outcome = "failed"
        else:
            log.info("conversation handed back to Infobip routing")
            outcome = "done"
        await self.store.transition(cid, allowed=("FAILED",), values={"route_back": outcome})

    async def _open_case(
        self, rec: HandoverRecord
    ) -> tuple[str, str, common_pb2.RoutingDecision, history_pb2.Transcript]:
        cid = rec.conversation_id
        timeout = self.s.grpc_timeout_s
        try:
            transcript = (
                await self.peers.history.GetTranscript(
                    history_pb2.GetTranscriptRequest(conversation_id=cid), timeout=timeout * 6
                )
            ).transcript
        except grpc.aio.AioRpcError as exc:
            raise failure_from_rpc_error(exc, "history.GetTranscript") from exc
        tags, metadata = rec.tags, rec.metadata
        all_tags = list(dict.fromkeys([*transcript.tags, *tags]))
        all_meta = {**dict(transcript.metadata), **metadata}
        context = common_pb2.ConversationContext(
            conversation_id=cid,
            channel=transcript.channel or rec.get("channel"),
            tags=all_tags,
            metadata=all_meta,
            end_user=transcript.end_user or rec.get("end_user"),
            business_sender=transcript.business_sender or rec.get("business_sender"),
            language=all_meta.get("language", all_meta.get("lang", "")),
        )
        try:
            decision = (
                await self.peers.routing.Route(
                    routing_pb2.RouteRequest(context=context), timeout=timeout
                )
            ).decision
        except grpc.aio.AioRpcError as exc:
            raise failure_from_rpc_error(exc, "routing.Route") from exc
        if decision.rejection:
            raise Rejected(decision.rejection, decision)
        case = connector_pb2.CaseInfo(
            conversation_id=cid,
            channel=context.channel,
            end_user=context.end_user,
            routing=decision,
            tags=all_tags,
            metadata=all_meta,
            # Media linked like every later message (their types came from Get Messages).
            transcript=[self.inbound.linked(m) for m in transcript.messages],
            transcript_truncated=transcript.truncated,
        )
        try:
            opened = await self.peers.connector.OpenCase(
                connector_pb2.OpenCaseRequest(
                    connector=decision.connector, case=case, idempotency_key=cid
                ),
                timeout=timeout * 6,
            )
        except grpc.aio.AioRpcError as exc:
            raise failure_from_rpc_error(exc, "connector.OpenCase") from exc
        return opened.external_id, decision.connector, decision, transcript

    # -- delivery --------------------------------------------------------------------------
    async def _drain(
        self, rec: HandoverRecord, token: str, lane: Lane, *, deliverable: bool
    ) -> None:
        """Delivers the lane's queue head first, up to ``batch_per_step`` messages (later
        arrivals get the next step); undeliverable messages go to the dead letters."""
        cid = rec.conversation_id
        if rec.get_int(f"{lane.value}_next_at") > now_ms():
            return
        attempts = rec.get_int(f"{lane.value}_attempts")
        delivered = 0
        # Head messages read ahead in one round trip (with their transcript check), then
        # delivered and popped one by one: the head still leaves only once accepted.
        window: list[tuple[bytes, common_pb2.Message, bool]] = []
        drained = False  # the last read returned the whole queue
        while not self._stopping and delivered < self.s.batch_per_step:
            if not window:
                if drained:
                    break  # later arrivals are seen by the reschedule
                wanted = min(self.s.batch_per_step - delivered, self.s.delivery_window)
                window = await self._peek(cid, lane, wanted)
                if not window:
                    break
                drained = len(window) < wanted
            payload, message, in_transcript = window.pop(0)
            if not deliverable:
                reason = (
                    "case closed before delivery"
                    if lane is Lane.INBOX
                    else "conversation closed at Infobip before delivery"
                )
                if not await self.store.dead_letter(lane, cid, token, payload, reason, 0):
                    return  # the head changed or the lease is gone: the next step re-reads
                if lane is Lane.OUTBOX:
                    await self._report_failed(rec, message, reason)
                continue
            if in_transcript:
                if not await self._pop(lane, cid, token, payload):  # already in the transcript
                    window.clear()
                continue
            try:
                await self._deliver(lane, rec, token, payload, message)
            except Failure as failure:
                if not failure.held:  # a call the gate held was no attempt
                    attempts += 1
                if await self.delivery.failed(lane, cid, token, payload, attempts, failure):
                    attempts = 0
                    if lane is Lane.OUTBOX:
                        await self._report_failed(rec, message, failure.reason)
                    continue  # dead-lettered: on with the next message
                return
            popped = await self._pop(lane, cid, token, payload, reset=attempts > 0)
            if self.metrics is not None:
                self.metrics.delivered(lane, "delivered")
            if lane is Lane.OUTBOX:
                await self.store.clear_sending(cid)
            if not popped:
                window.clear()
            delivered += 1
            attempts = 0

    async def _deliver(
        self,
        lane: Lane,
        rec: HandoverRecord,
        token: str,
        payload: bytes,
        message: common_pb2.Message,
    ) -> None:
        """One head message to its far side, through the far side's health gate."""
        # The message's trace continues here (it waited in Redis since it was queued).
        with delivery_span(f"session.deliver {lane.queue}", (message,)):
            await self._deliver_one(lane, rec, token, payload, message)

    async def _deliver_one(
        self,
        lane: Lane,
        rec: HandoverRecord,
        token: str,
        payload: bytes,
        message: common_pb2.Message,
    ) -> None:
        name = self.delivery.far_side(lane, rec.get("connector"))
        admission = await self.delivery.admit(lane, name)
        if not admission.allowed:
            raise held(name, admission)
        try:
            if lane is Lane.INBOX:
                await self._post_customer_message(rec, message)
            else:
                await self._send_to_end_user(rec, token, payload, message)
        except Failure as failure:
            # A refusal is an answer: only a retryable failure says the far side is sick.
            await self.delivery.report(lane, name, admission, ok=not failure.retryable)
            if failure.retryable:
                failure.parked = name  # handed back at the far side's next success
                # A failed probe is no attempt: the outage, not the message, failed.
                failure.held = admission.probe
            raise
        except BaseException:  # e.g. LeaseLost: no outcome to report
            with contextlib.suppress(Exception):
                await self.delivery.abandon(lane, name, admission)
            raise
        await self.delivery.report(lane, name, admission, ok=True)

    async def _peek(
        self, cid: str, lane: Lane, count: int
    ) -> list[tuple[bytes, common_pb2.Message, bool]]:
        """Up to ``count`` head messages, parsed, each with "already in the case
        transcript" (inbox only)."""
        payloads = await self.store.peek(self.store.k_queue(lane, cid), count)
        messages = [common_pb2.Message.FromString(p) for p in payloads]
        if lane is Lane.INBOX and messages:
            flags = await self.store.in_transcript_many(cid, [m.id for m in messages])
        else:
            flags = [False] * len(messages)
        return list(zip(payloads, messages, flags, strict=True))

    async def _pop(
        self, lane: Lane, cid: str, token: str, payload: bytes, *, reset: bool = False
    ) -> bool:
        """Pops the delivered head (and, after retries, resets the lane's counter in the
        same script); False when the head changed (read it again)."""
        (finish,) = await self.store.finish(
            lane, [Finishing(cid, token, [payload], reset_attempts=reset)]
        )
        if finish.popped == -1:
            raise LeaseLost()
        return finish.popped == 1

    async def _post_customer_message(
        self, rec: HandoverRecord, message: common_pb2.Message
    ) -> None:
        [message] = await self.inbound.ready(rec.conversation_id, [message])
        if self.inbound.dropped(message):
            return  # popped as delivered: not a message (services/session/inbound.py)
        try:
            await self.peers.connector.PostCustomerMessage(
                connector_pb2.PostCustomerMessageRequest(
                    connector=rec.get("connector"),
                    external_id=rec.get("external_id"),
                    conversation_id=rec.conversation_id,
                    message=message,
                    idempotency_key=message.id,
                ),
                timeout=self.s.grpc_timeout_s * 3,
            )
        except grpc.aio.AioRpcError as exc:
            raise failure_from_rpc_error(exc, "connector.PostCustomerMessage") from exc

    async def _report_failed(
        self, rec: HandoverRecord, message: common_pb2.Message, reason: str
    ) -> None:
        """Tells the agent (connector ReportMessageFailed: ``message.failed``, an RT
        comment) that a reply was dead-lettered. The dead letter is the durable record
        (an operator lists and replays it); this report is tried once (gRPC retries an
        unavailable connector) and logged when it fails."""
        if not rec.get("external_id") or not rec.get("connector"):
            return
        try:
            await self.peers.connector.ReportMessageFailed(
                connector_pb2.ReportMessageFailedRequest(
                    connector=rec.get("connector"),
                    external_id=rec.get("external_id"),
                    conversation_id=rec.conversation_id,
                    message_id=message.id,
                    reason=reason[:500],
                    idempotency_key=f"failed:{message.id}",
                ),
                # Short: the step holds the outbox lease meanwhile.
                timeout=self.s.grpc_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            log.error(
                "could not tell the agent a reply was not delivered (%s): it stays a dead letter",
                exc.code().name,
            )

    async def _send_to_end_user(
        self, rec: HandoverRecord, token: str, payload: bytes, message: common_pb2.Message
    ) -> None:
        """Sends the outbox head to the end user, each part (a long text is split) at most
        once.

        Create Message has no idempotency key, so before each part a "sending" mark is
        written (store.SendingMark: the item, the part, when, the lease token). A part
        whose send ended without a definite answer (timeout, broken connection, 5xx, or a
        crash) is looked for among the conversation's OUTBOUND messages created since
        then (minus the clock-skew margin) before it is sent again; parts Infobip accepted
        are never sent again. Infobip's id of every part sent is kept."""
        cid = rec.conversation_id
        channel, sender, end_user = (
            rec.get("channel"),
            rec.get("business_sender"),
            rec.get("end_user"),
        )
        if not (channel and sender and end_user):
            raise Failure("end-user address unknown (no inbound message seen yet)", retryable=False)
        parts = await self._parts(rec, token, message)
        # Read (once per handover) before any mark: a failure here sent nothing.
        await self._assignee(rec, token)
        item = outbox_item(payload)
        mark, known = await self.store.sending(cid)
        if mark is not None and mark.item != item:
            mark = None  # left by an item that is gone
        for index in range(mark.done if mark else 0, len(parts)):
            body = {
                "channel": channel,
                "from": sender,
                "to": end_user,
                "contentType": parts[index].content_type,
                "content": parts[index].content,
            }
            if mark is not None and mark.part == index and mark.sent_at_ms:
                await self._outwait(token, mark)
                found = await self._read_back(cid, body, mark.sent_at_ms, known)
                if found is not None:
                    log.info("an agent message part sent before was found at Infobip")
                    await self._mark(cid, token, item, index, index + 1, 0, found)
                    known.append(found)
                    continue
            mark = None
            self._send_timeout(token)  # no mark for a send that cannot start
            await self._mark(cid, token, item, index, index, now_ms())
            try:
                created = await self._create_message(rec, token, body)
            except FarSideError as exc:
                failure = failure_from_far_side(exc, "infobip.CreateMessage")
                if _ambiguous(exc):
                    # Give a slow Infobip time to store it before the read-back looks.
                    settle = self.s.infobip_readback_delay_ms / 1000
                    failure.retry_after = max(failure.retry_after or 0.0, settle)
                else:  # Infobip answered: nothing was stored
                    await self._mark(cid, token, item, index, index, 0)
                raise failure from exc
            infobip_id = str(created.get("id") or "")
            await self._mark(cid, token, item, index, index + 1, 0, infobip_id)
            known.append(infobip_id)

    async def _parts(
        self, rec: HandoverRecord, token: str, message: common_pb2.Message
    ) -> list[Part]:
        """The reply's Create Message parts for the conversation's channel (text, files,
        location: services/infobip/outbound.py); a part the channel cannot take fails the
        whole reply before anything is sent."""
        channel = rec.get("channel")
        prefix = ""
        if self.s.agent_name_prefix and message.author_name:
            prefix = self.s.agent_name_prefix.replace("{name}", message.author_name)
        subject = ""
        if channel == EMAIL_CHANNEL:
            subject = await self._email_subject(rec, token)
        try:
            return build_parts(
                channel,
                message,
                end_user=rec.get("end_user"),
                email_subject=subject,
                name_prefix=prefix,
            )
        except Unsupported as exc:
            raise Failure(f"not sendable on {channel}: {exc}", retryable=False) from None

    async def _email_subject(self, rec: HandoverRecord, token: str) -> str:
        """The subject of the end user's latest e-mail (a reply keeps the thread), read
        once per handover and kept on it; '' when there is none."""
        if rec.get("email_checked"):
            return rec.get("email_subject")
        try:
            found = await self.peers.infobip.get_messages(
                rec.conversation_id, order_by="createdAt:desc", direction="INBOUND"
            )
        except FarSideError as exc:
            raise failure_from_far_side(exc, "infobip.GetMessages (e-mail subject)") from exc
        subject = ""
        for sent in found.get("messages") or ():
            content = sent.get("content") if isinstance(sent, dict) else None
            if isinstance(content, dict) and isinstance(content.get("subject"), str):
                subject = content["subject"]
                break
        values = {"email_checked": "1", "email_subject": subject[:500]}
        await self.store.transition(
            rec.conversation_id,
            allowed=("ACTIVE", "CLOSING"),
            lane=Lane.OUTBOX,
            lease_token=token,
            values=values,
        )
        rec.fields.update(values)
        return values["email_subject"]

    async def _mark(
        self,
        cid: str,
        token: str,
        item: str,
        part: int,
        done: int,
        sent_at_ms: int,
        infobip_id: str = "",
    ) -> None:
        if not await self.store.mark_sending(
            cid, token, item, part=part, done=done, sent_at_ms=sent_at_ms, infobip_id=infobip_id
        ):
            raise LeaseLost()

    async def _read_back(
        self, cid: str, body: dict[str, Any], sent_at_ms: int, known: list[str]
    ) -> str | None:
        """Infobip's id of an OUTBOUND message that is ``body`` (same recipient, content
        type and content), created since ``sent_at_ms`` minus the clock-skew margin and
        not one of the ``known`` ids already sent; None when there is none."""
        after = sent_at_ms - self.s.infobip_readback_skew_ms
        taken = set(known)
        for page in range(READBACK_MAX_PAGES):
            try:
                found = await self.peers.infobip.get_messages(
                    cid,
                    page=page,
                    order_by="createdAt:asc",
                    direction="OUTBOUND",
                    created_after=datetime.fromtimestamp(after / 1000, UTC),
                )
            except FarSideError as exc:
                raise failure_from_far_side(exc, "infobip.GetMessages (read-back)") from exc
            messages = found.get("messages")
            if not isinstance(messages, list):
                return None
            for sent in messages:
                if not isinstance(sent, dict):
                    continue
                sent_id = str(sent.get("id") or "")
                if sent_id and sent_id not in taken and _is_sent(sent, body):
                    return sent_id
            if len(messages) < MAX_PAGE_SIZE:
                return None
        return None

    async def _create_message(
        self, rec: HandoverRecord, token: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create Message with ``x-agent-id`` exactly when the conversation is assigned
        (Infobip refuses it on an unassigned one and requires it on an assigned one). A
        400 may mean the assignment changed since it was read: read it again, and if it
        did, send once more with the new one."""
        cid = rec.conversation_id
        agent = await self._assignee(rec, token)
        try:
            return await self.peers.infobip.create_message(
                cid, body, agent_id=agent or None, timeout_s=self._send_timeout(token)
            )
        except InfobipError as exc:
            if exc.status != 400 or isinstance(exc, InfobipNotFound):
                raise
            refused = exc
        fresh = await self._assignee(rec, token, refresh=True)
        if fresh == agent:
            raise refused
        log.info("the conversation's assignee changed; sending again with it")
        return await self.peers.infobip.create_message(
            cid, body, agent_id=fresh or None, timeout_s=self._send_timeout(token)
        )

    def _send_timeout(self, token: str) -> float:
        """The timeout of a Create Message sent now under ``token``: the client's, cut to
        end before the lease (or this replica's liveness key) could pass to a successor.
        Raises LeaseLost when too little is left to start one: a process that resumes
        after a pause longer than its lease never sends what its successor now owns."""
        left = self.time_left_s(token) - SEND_MARGIN_S
        if left < MIN_SEND_S:
            raise LeaseLost()
        return min(self.s.infobip_timeout_s, left)

    def max_send_window_s(self) -> float:
        """The longest a holder's Create Message may last after its sending mark: no send
        outlives the lease or the liveness key it started under."""
        window = self.s.lease_ttl_ms / 1000
        if self.liveness is not None:
            window = min(window, self.liveness.ttl_ms / 1000)
        return min(window, self.s.infobip_timeout_s)

    async def _outwait(self, token: str, mark: SendingMark) -> None:
        """Before reading back a part another lease holder sent without a known outcome:
        waits until that holder's send window is over (it ended before this lease could
        be taken, but a Create Message in flight may still be stored) and Infobip had the
        read-back delay to store it. A part this replica sent needs no wait here: its
        outcome was awaited and the retry came after the read-back delay."""
        mine = self.liveness.replica if self.liveness is not None else None
        if holder_of(mark.token) == mine and mark.token not in self._held:
            return
        settle = self.s.infobip_readback_delay_ms / 1000
        window = self.max_send_window_s()
        since, _ = self._held.get(token, (time.monotonic(), 0.0))
        after_takeover = since + settle - time.monotonic()
        after_mark = (mark.sent_at_ms - now_ms()) / 1000 + window + settle
        wait = min(max(after_takeover, after_mark), window + settle)
        if wait > 0:
            log.info("waiting %.1fs for a predecessor's send before reading it back", wait)
            await asyncio.sleep(wait)

    async def _assignee(self, rec: HandoverRecord, token: str, *, refresh: bool = False) -> str:
        """The agent the conversation is assigned to at Infobip ('' when unassigned), as
        recorded on the handover; read (and, with a bridge agent set, assigned to it) the
        first time and when ``refresh``."""
        if rec.get("agent_checked") and not refresh:
            return rec.get("agent")
        values = await self._assignment(rec.conversation_id)
        await self.store.transition(
            rec.conversation_id,
            allowed=("ACTIVE", "CLOSING"),
            lane=Lane.OUTBOX,
            lease_token=token,
            values=values,
        )
        rec.fields.update(values)
        return values["agent"]

    async def _assignment(self, cid: str) -> dict[str, str]:
        """Reads the conversation's assignee; an unassigned conversation is assigned to
        the bridge's agent (``CCBRIDGE_INFOBIP_AGENT_ID``) when one is set. Returns the
        handover fields that record it."""
        try:
            conversation = await self.peers.infobip.get_conversation(cid)
        except FarSideError as exc:
            raise failure_from_far_side(exc, "infobip.GetConversation") from exc
        agent = str(conversation.get("agentId") or "")
        bridge = self.s.infobip_agent_id
        if not agent and bridge:
            try:
                await self.peers.infobip.assign_conversation(cid, bridge)
            except FarSideError as exc:
                raise failure_from_far_side(exc, "infobip.ChangeConversationAssignment") from exc
            agent = bridge
        return {"agent_checked": "1", "agent": agent}

    # -- closing ---------------------------------------------------------------------------
    async def _close(self, rec: HandoverRecord, token: str) -> None:
        cid = rec.conversation_id
        if rec.get_int("close_next_at") > now_ms():
            return
        inbox, outbox = await self.store.queue_lengths(cid)
        if inbox or outbox:
            return  # drain first; the next step comes back here
        closed_by = rec.get("closed_by") or "OPERATOR"
        try:
            if closed_by in ("INFOBIP", "OPERATOR") and rec.get("external_id"):
                try:
                    await self.peers.connector.CloseCase(
                        connector_pb2.CloseCaseRequest(
                            connector=rec.get("connector"),
                            external_id=rec.get("external_id"),
                            conversation_id=cid,
                            reason=rec.get("close_reason") or closed_by,
                            idempotency_key=f"close:{cid}",
                        ),
                        timeout=self.s.grpc_timeout_s * 3,
                    )
                except grpc.aio.AioRpcError as exc:
                    raise failure_from_rpc_error(exc, "connector.CloseCase") from exc
            if closed_by in ("CCAAS", "OPERATOR"):
                try:
                    await self.peers.infobip.close_conversation(cid)
                except InfobipNotFound:
                    log.warning("conversation unknown at Infobip; closing the handover anyway")
                except FarSideError as exc:
                    raise failure_from_far_side(exc, "infobip.UpdateConversation") from exc
        except Failure as failure:
            attempts = rec.get_int("close_attempts") + 1
            if not self.policy.gives_up(failure, attempts):
                await self.store.transition(
                    cid,
                    allowed=("CLOSING",),
                    lease_token=token,
                    values={
                        "close_attempts": str(attempts),
                        "failure_reason": failure.reason,
                        "close_next_at": str(
                            now_ms() + self.policy.delay_ms(attempts, failure.retry_after)
                        ),
                    },
                )
                await self.store.record(
                    cid,
                    TimelineEvent(
                        now_ms(),
                        EventKind.RETRIED,
                        detail=f"closing attempt {attempts}: {failure.reason}",
                    ),
                )
                return
            log.error("close failed for good, marking closed and flagged: %s", failure.reason)
            await self.store.transition(
                cid,
                allowed=("CLOSING",),
                new_state="CLOSED",
                lease_token=token,
                values={"failure_reason": failure.reason[:500], "flagged": "close_failed"},
            )
            return
        await self.store.transition(
            cid,
            allowed=("CLOSING",),
            new_state="CLOSED",
            lease_token=token,
            values={"closed_at": str(now_ms())},
        )
        log.info("handover closed", extra={"closed_by": closed_by})

    # -- reconciler ------------------------------------------------------------------------
    async def _retention_loop(self) -> None:
        """Expires what the operator could still act on once its retention is over
        (FAILED handovers, dead letters; see SessionStore.sweep_retention). Idempotent and
        exact on every replica: each removal is counted by the one that made it."""
        while not self._stopping:
            await asyncio.sleep(self.s.reconcile_interval_s)
            try:
                swept = await self.store.sweep_retention()
            except Exception:
                log.warning("retention pass failed", exc_info=True)
                continue
            if swept.dead_letters_over_cap:
                log.warning(
                    "dead letters over the cap (CCBRIDGE_DEAD_LETTER_MAX): the oldest %d removed",
                    swept.dead_letters_over_cap,
                )
            if swept.parked_expired:
                log.warning(
                    "%d agent events dropped: no opening linked their cases within "
                    "CCBRIDGE_PARKED_TTL_S (connector:case): %s",
                    swept.parked_expired,
                    ", ".join(swept.parked_cases[:20]),
                )
            if swept.failed_handovers or swept.dead_letters_expired:
                log.info(
                    "retention: %d FAILED handovers and %d dead letters expired",
                    swept.failed_handovers,
                    swept.dead_letters_expired,
                )

    async def _reconcile_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.s.reconcile_interval_s)
            try:
                await self.reconcile_once()
            except Exception:
                log.warning("reconcile round failed", exc_info=True)

    async def reconcile_once(self) -> dict[str, int] | None:
        """One reconciler pass (services/session/reconciler.py): repairs the schedule,
        closes handovers whose Infobip conversation was closed without us hearing of it
        and backfills inbound messages a missed webhook left out. None when another
        replica runs the pass."""
        return await self.reconciler.run_once()


def _routing_json(decision: common_pb2.RoutingDecision, *, with_connector: bool = False) -> str:
    """The decision as the handover keeps it: compact, without empty values and (unless
    asked: a rejected handover has no case, so no connector field) without the connector;
    short values keep the hash a listpack (see store.py)."""
    return orjson.dumps(
        {
            key: value
            for key, value in (
                ("connector", decision.connector if with_connector else ""),
                ("queue", decision.queue),
                ("priority", decision.priority),
                ("skills", list(decision.skills)),
                ("rule", decision.rule),
            )
            if value
        },
    ).decode()
