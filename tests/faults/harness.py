"""The fault matrix's traffic: both directions over many conversations, every message
numbered, and the tally of what each far side received.

End-user messages go to the gateway's Infobip webhook (round robin over every gateway),
agent replies to the CCaaS simulator's reply route (which signs them and POSTs them to
the gateway). Each conversation's messages are sent one after the other, so their order
of acceptance is their number; conversations run side by side. A message not answered
2xx is sent again, as Infobip and a CCaaS do, with the same id. At the end, what the
simulators hold (the CCaaS: each case's customer messages; Infobip: each conversation's
Create Message calls) is read back and every direction reports sent / acknowledged /
delivered / lost / duplicated / out of order, and how long acknowledged messages took to
arrive (which a fault stretches: the recovery time).
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.mesh import Mesh, inbound_text, wait_for

INBOUND, OUTBOUND = "end user → CCaaS", "agent → end user"
_TEXT = re.compile(r"^(?P<dir>[ua]) (?P<conv>\d+)-(?P<seq>\d+)$")
RETRY_S = 0.1  # the driver's pause between two attempts of one message
SEND_DEADLINE_S = 600.0  # a message never acknowledged by then is reported, not waited on


@dataclass
class Traffic:
    """How much a case sends: ``conversations`` side by side, each ``messages`` end-user
    messages and an agent reply after every ``reply_every``-th of them."""

    conversations: int
    messages: int
    reply_every: int = 2
    workers: int = 8
    # Every message also sent twice more, as Infobip and a CCaaS redeliver: once at the
    # same time as the first attempt (concurrently, through another gateway) and once
    # after it was acknowledged.
    redeliver: bool = False


@dataclass
class Sent:
    """One numbered message and what became of it at the driver."""

    key: str
    conv: int
    seq: int
    attempts: int = 0
    acked_at: float | None = None  # time.time() of its 2xx
    refused: str = ""  # a 4xx (never retried), or why the driver gave up


@dataclass
class Tally:
    """One direction's figures."""

    direction: str
    sent: int
    acknowledged: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    refused: int
    lost_in_last_second: int  # lost ones acknowledged within 1 s before a Redis crash
    # Answers that are neither 2xx, a 4xx refusal, 429, nor 503 with Retry-After: a fault
    # must come out as "try again later", never as a 500 (issue 13, point 4).
    server_errors: int
    latency_p50_s: float | None
    latency_max_s: float | None
    # From the end of the last fault (the component ready again, Redis restarted, the
    # CCaaS up) to the arrival of the last message acknowledged before it: how long the
    # backlog took to drain.
    drain_s: float | None
    lost_keys: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.sent == self.acknowledged == self.delivered
            and not self.lost
            and not self.duplicated
            and not self.out_of_order
            and not self.refused
            and not self.server_errors
        )


@dataclass
class Driver:
    """Runs a case's traffic against ``mesh`` and tallies it (see the module docstring).

    ``gateways``: base URLs of every gateway (the driver spreads webhooks over them, as a
    load balancer would). ``events`` is the case's timeline (``mark``)."""

    mesh: Mesh
    traffic: Traffic
    gateways: list[str]
    inbound: dict[str, Sent] = field(default_factory=dict)
    outbound: dict[str, Sent] = field(default_factory=dict)
    conversations: list[str] = field(default_factory=list)
    cases: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    fault_ended: float | None = None  # time.time() of the last fault's end
    done: bool = False  # every message sent (acknowledged or given up on)
    started: float = field(default_factory=time.time)
    # Per direction, each unexpected server answer ("500", "503 without Retry-After").
    server_errors: dict[str, Counter[str]] = field(
        default_factory=lambda: {INBOUND: Counter(), OUTBOUND: Counter()}
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _acked: int = 0
    _turn: int = 0

    # -- progress, for the faults --------------------------------------------------------
    @property
    def total(self) -> int:
        t = self.traffic
        return t.conversations * (t.messages + t.messages // t.reply_every)

    def progress(self) -> float:
        with self._lock:
            return self._acked / self.total

    def wait_progress(self, fraction: float, timeout_s: float = 600.0) -> None:
        wait_for(f"{fraction:.0%} of the traffic", lambda: self.progress() >= fraction, timeout_s)

    def mark(self, what: str, *, fault_ended: bool = False) -> None:
        """Adds ``what`` to the timeline; ``fault_ended``: the fault is over (the
        backlog's drain is measured from the last such mark)."""
        with self._lock:
            now = time.time()
            self.events.append((now, what))
            if fault_ended:
                self.fault_ended = now

    def acked_between(self, start: float, end: float) -> set[str]:
        """Keys of the messages acknowledged in [start, end] (time.time())."""
        with self._lock:
            return {
                s.key
                for s in (*self.inbound.values(), *self.outbound.values())
                if s.acked_at is not None and start <= s.acked_at <= end
            }

    # -- traffic ---------------------------------------------------------------------------
    def create_conversations(self) -> None:
        """Creates the conversations at Infobip (each is escalated when its turn comes:
        with more conversations than workers, openings go on while faults strike)."""
        for _ in range(self.traffic.conversations):
            self.conversations.append(self.mesh.conversation(history=2)["id"])

    def _escalate(self, client: httpx.Client, cid: str) -> None:
        """Escalates until answered 202 (the handover exists: its messages are kept)."""

        def accepted() -> bool:
            try:
                response = client.post(
                    self._next_gateway() + "/v1/escalations",
                    headers=self.mesh.auth,
                    json={"conversationId": cid},
                )
            except httpx.TransportError:
                return False
            return response.status_code == 202

        wait_for("the escalation to be accepted", accepted, timeout_s=SEND_DEADLINE_S)

    def run(self) -> None:
        """Sends every conversation's traffic (returns when each message is acknowledged
        or given up on)."""
        with ThreadPoolExecutor(self.traffic.workers) as pool:
            for result in pool.map(self._conversation, range(len(self.conversations))):
                del result
        self.done = True

    def _conversation(self, conv: int) -> None:
        cid = self.conversations[conv]
        with (
            httpx.Client(timeout=30) as gateway,
            httpx.Client(base_url=str(self.mesh.ccaas.base_url), timeout=60) as ccaas,
        ):
            self._escalate(gateway, cid)
            replies = 0
            for seq in range(self.traffic.messages):
                self._user_message(gateway, conv, cid, seq)
                if (seq + 1) % self.traffic.reply_every == 0:
                    self._agent_reply(ccaas, conv, cid, replies)
                    replies += 1

    def _next_gateway(self) -> str:
        with self._lock:
            self._turn += 1
            return self.gateways[self._turn % len(self.gateways)]

    def _acknowledge(self, sent: Sent) -> None:
        with self._lock:
            sent.acked_at = time.time()
            self._acked += 1

    def _user_message(self, client: httpx.Client, conv: int, cid: str, seq: int) -> None:
        key = f"u {conv:03d}-{seq:05d}"
        sent = Sent(key, conv, seq)
        with self._lock:
            self.inbound[key] = sent
        doc = inbound_text(cid, f"{cid}-u{seq:05d}", key)
        path = f"/webhooks/infobip/{self.mesh.env['CCBRIDGE_WEBHOOK_TOKEN']}"

        def again() -> None:
            with contextlib.suppress(httpx.TransportError):
                client.post(self._next_gateway() + path, json=doc)

        with self._redelivered(again):
            self._send_user_message(client, sent, path, doc)

    @contextlib.contextmanager
    def _redelivered(self, again: Callable[[], None]) -> Iterator[None]:
        """With ``redeliver``: ``again`` runs concurrently with the block and once more
        after it (its answers do not count: the original's attempts do)."""
        if not self.traffic.redeliver:
            yield
            return
        twin = threading.Thread(target=again)
        twin.start()
        yield
        twin.join()
        again()

    def _send_user_message(
        self, client: httpx.Client, sent: Sent, path: str, doc: dict[str, Any]
    ) -> None:
        deadline = time.monotonic() + SEND_DEADLINE_S
        while time.monotonic() < deadline:
            sent.attempts += 1
            try:
                response = client.post(self._next_gateway() + path, json=doc)
            except httpx.TransportError:
                time.sleep(RETRY_S)
                continue
            if response.status_code == 200:
                if response.json().get("ignored"):
                    sent.refused = "ignored (no open handover)"
                    return
                self._acknowledge(sent)
                return
            if response.status_code < 500 and response.status_code != 429:
                sent.refused = f"{response.status_code} {response.text[:200]}"
                return
            self._server_error(INBOUND, response.status_code, response.headers)
            time.sleep(RETRY_S)
        sent.refused = "never acknowledged"

    def _case(self, client: httpx.Client, cid: str) -> str:
        if cid not in self.cases:

            def found() -> str | None:
                cases = client.get("/_sim/cases", params={"conversationId": cid}).json()["cases"]
                return str(cases[0]["caseId"]) if cases else None

            self.cases[cid] = wait_for("the case", found, timeout_s=300)
        return self.cases[cid]

    def _agent_reply(self, client: httpx.Client, conv: int, cid: str, seq: int) -> None:
        key = f"a {conv:03d}-{seq:05d}"
        sent = Sent(key, conv, seq)
        with self._lock:
            self.outbound[key] = sent
        case_id = self._case(client, cid)
        body = {"text": key, "messageId": f"m-{conv:03d}-{seq:05d}"}

        def again() -> None:
            with contextlib.suppress(httpx.TransportError):
                client.post(f"/_sim/cases/{case_id}/reply", json=body)

        with self._redelivered(again):
            self._send_agent_reply(client, sent, case_id, body)

    def _send_agent_reply(
        self, client: httpx.Client, sent: Sent, case_id: str, body: dict[str, str]
    ) -> None:
        deadline = time.monotonic() + SEND_DEADLINE_S
        while time.monotonic() < deadline:
            sent.attempts += 1
            try:
                response = client.post(f"/_sim/cases/{case_id}/reply", json=body)
            except httpx.TransportError:
                time.sleep(RETRY_S)
                continue
            response.raise_for_status()  # the simulator itself never fails
            status = response.json()["bridgeStatus"]
            if 200 <= status < 300:
                self._acknowledge(sent)
                return
            if 400 <= status < 500 and status != 429:
                sent.refused = f"{status} {response.json()['bridgeAnswer']!r:.200}"
                return
            if status:  # 0: the simulator got no answer from the bridge (it was down)
                self._server_error(OUTBOUND, status, None)  # its headers are not shown
            time.sleep(RETRY_S)
        sent.refused = "never acknowledged"

    def _server_error(self, direction: str, status: int, headers: Mapping[str, str] | None) -> None:
        """Counts a 5xx that is not "503, retry after" (``headers``: None when the
        answer's headers are not known, as for the CCaaS simulator's replies)."""
        if status == 503 and (headers is None or "retry-after" in {h.lower() for h in headers}):
            return
        what = f"{status}" if status != 503 else "503 without Retry-After"
        with self._lock:
            self.server_errors[direction][what] += 1

    # -- what arrived ----------------------------------------------------------------------
    def _received(self) -> dict[str, list[tuple[str, float]]]:
        """Per direction, the texts the far sides hold (in their order, per
        conversation) with the time each arrived."""
        out: dict[str, list[tuple[str, float]]] = {INBOUND: [], OUTBOUND: []}
        cases = self.mesh.ccaas.get("/_sim/cases", params={"full": "1"}).json()["cases"]
        for case in cases:
            for m in case["messages"]:
                if m.get("from") == "customer":
                    text = m["content"].get("text", "")
                    out[INBOUND].append((text, _epoch(m["receivedAt"])))
        for cid in self.conversations:
            for m in self.mesh.agent_messages(cid):
                out[OUTBOUND].append((m["content"].get("text", ""), _epoch(m["createdAt"])))
        return out

    def all_delivered(self) -> bool:
        received = self._received()
        got = {text for texts in received.values() for text, _ in texts}
        with self._lock:
            acked = {
                s.key
                for s in (*self.inbound.values(), *self.outbound.values())
                if s.acked_at is not None
            }
        return acked <= got

    def settle(self, timeout_s: float, quiet_s: float = 3.0) -> None:
        """Waits until every acknowledged message arrived (or ``timeout_s``), then until
        nothing more arrives for ``quiet_s`` (late duplicates count)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.all_delivered():
            time.sleep(0.5)
        last = -1
        while time.monotonic() < deadline:
            count = sum(len(v) for v in self._received().values())
            if count == last:
                return
            last = count
            time.sleep(quiet_s)

    def tally(self, redis_crashes: list[float] | None = None) -> list[Tally]:
        received = self._received()
        crash_windows = [(t - 1.0, t) for t in redis_crashes or []]
        out = []
        for direction, sent in ((INBOUND, self.inbound), (OUTBOUND, self.outbound)):
            counts: dict[str, int] = {}
            latencies: list[float] = []
            drained: list[float] = []
            out_of_order = 0
            highest: dict[int, int] = {}
            for text, at in received[direction]:
                match = _TEXT.match(text)
                if match is None or text not in sent:
                    continue  # not this driver's (e.g. the transcript)
                counts[text] = counts.get(text, 0) + 1
                if counts[text] > 1:
                    continue
                conv, seq = int(match["conv"]), int(match["seq"])
                if seq < highest.get(conv, -1):
                    out_of_order += 1
                highest[conv] = max(seq, highest.get(conv, -1))
                acked_at = sent[text].acked_at
                if acked_at is not None:
                    latencies.append(max(0.0, at - acked_at))
                    if self.fault_ended is not None and acked_at <= self.fault_ended:
                        drained.append(max(0.0, at - self.fault_ended))
            acked = [s for s in sent.values() if s.acked_at is not None]
            lost = sorted(s.key for s in acked if s.key not in counts)
            in_last_second = [
                k
                for k in lost
                if any(start <= (sent[k].acked_at or 0) <= end for start, end in crash_windows)
            ]
            out.append(
                Tally(
                    direction=direction,
                    sent=len(sent),
                    acknowledged=len(acked),
                    delivered=len(counts),
                    lost=len(lost),
                    duplicated=sum(n - 1 for n in counts.values()),
                    out_of_order=out_of_order,
                    refused=sum(1 for s in sent.values() if s.refused),
                    lost_in_last_second=len(in_last_second),
                    server_errors=sum(self.server_errors[direction].values()),
                    latency_p50_s=statistics.median(latencies) if latencies else None,
                    latency_max_s=max(latencies) if latencies else None,
                    drain_s=max(drained) if drained else None,
                    lost_keys=lost[:20],
                )
            )
        return out

    def timeline(self) -> list[str]:
        with self._lock:
            return [f"{at - self.started:7.1f}s {what}" for at, what in self.events]


def _epoch(iso: str) -> float:
    """A simulator's timestamp (ISO 8601 with Z or an offset) as time.time()."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class CaseResult:
    """A case's figures, as printed and as written to the JSON summary."""

    case: str
    seconds: float
    tallies: list[Tally]
    timeline: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        head = (
            f"{'direction':<17} {'sent':>6} {'acked':>6} {'deliv':>6} {'lost':>5} "
            f"{'dup':>4} {'order':>5} {'refus':>5} {'5xx':>4} "
            f"{'p50 s':>6} {'max s':>6} {'drain s':>7}"
        )
        rows = [f"== fault case {self.case} ({self.seconds:.0f} s) ==", head]
        for t in self.tallies:
            rows.append(
                f"{t.direction:<17} {t.sent:>6} {t.acknowledged:>6} {t.delivered:>6} "
                f"{t.lost:>5} {t.duplicated:>4} {t.out_of_order:>5} {t.refused:>5} "
                f"{t.server_errors:>4} "
                f"{_fmt(t.latency_p50_s):>6} {_fmt(t.latency_max_s):>6} {_fmt(t.drain_s):>7}"
            )
        rows += [f"  {line}" for line in self.timeline]
        rows += [f"  {k}: {v}" for k, v in self.notes.items()]
        return "\n".join(rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "seconds": round(self.seconds, 1),
            "directions": [
                {k: v for k, v in t.__dict__.items() if not k.startswith("_")} for t in self.tallies
            ],
            "timeline": self.timeline,
            "notes": self.notes,
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_summary(path: Path, result: CaseResult) -> None:
    """Adds (or replaces) the case in the JSON summary at ``path`` and appends its table
    to the text next to it (``.txt``)."""
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    doc[result.case] = result.as_json()
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    with path.with_suffix(".txt").open("a", encoding="utf-8") as text:
        text.write(result.table() + "\n\n")


@contextlib.contextmanager
def background(fn: Callable[[], None]) -> Iterator[threading.Thread]:
    """Runs ``fn`` in a thread for the duration of the with-block; re-raises its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    yield thread
    thread.join(900)
    if errors:
        raise errors[0]
