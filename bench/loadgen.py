"""The load generator: a separate process that drives HTTP/1.1 keep-alive load at the
gateway (or the floor) and reports latency and throughput as JSON.

``python -m bench.loadgen < spec.json > result.json``; progress lines go to stderr.

Two modes:

- ``closed``: ``concurrency`` connections each send a request, wait for the answer and
  send the next, until the window ends. The completion rate is the throughput the
  server sustains at that concurrency.
- ``open``: requests are issued at a fixed ``rate`` whatever the server does (open
  loop). Latency runs from the moment the generator issued the request, so time spent
  waiting for a free connection counts (no coordinated omission); the lag between the
  ideal schedule and the issue moment is reported separately as a generator health
  figure.

Raw asyncio protocol on uvloop (when installed), pre-built request bytes and no HTTP
library on the hot path, so that one generator process is not the bottleneck on a
small box. Every run is bounded by ``max_requests`` and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 0.5

mono = time.monotonic  # CLOCK_MONOTONIC: comparable with the simulators' records


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they behave like one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            self._fail(ConnectionError("answer without content-length"))
            return
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        keep = b"connection: close" not in head
        del self.buf[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection lost"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self.waiter = waiter
        # A plain timer (cheaper than asyncio.wait_for on this hot path).
        timer = loop.call_later(REQUEST_TIMEOUT_S, self._fail, TimeoutError())
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()


async def connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(HttpConnection, host, port)
    return protocol


# --------------------------------------------------------------------------- workloads

RequestFactory = Callable[[int], tuple[bytes, str]]


def _iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+00:00"


def _frame(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


def message_id(prefix: str, index: int) -> str:
    """A unique 36-character id (the length of Infobip's UUID ids)."""
    return f"{prefix}-{index:0>{35 - len(prefix)}d}"


def infobip_factory(host: str, port: int, workload: dict[str, Any]) -> RequestFactory:
    """Legacy Infobip webhook bodies (one INBOUND message, shaped like Get Messages)."""
    convs: list[dict[str, str]] = workload["conversations"]
    path: str = workload["path"]
    prefix: str = workload["id_prefix"]
    stamp = _iso_now()

    def make(index: int) -> tuple[bytes, str]:
        conv = convs[index % len(convs)]
        mid = message_id(prefix, index)
        body = orjson.dumps(
            {
                "id": mid,
                "channel": conv["channel"],
                "from": conv["from"],
                "to": conv["to"],
                "direction": "INBOUND",
                "conversationId": conv["id"],
                "authorId": conv["from"],
                "authorType": "CUSTOMER",
                "createdAt": stamp,
                "updatedAt": stamp,
                "contentType": "TEXT",
                "content": {"text": "Hello, I still need help with my order, please."},
            }
        )
        return _frame(host, port, path, body), mid

    return make


def agent_factory(host: str, port: int, workload: dict[str, Any]) -> RequestFactory:
    """Signed ``agent.message`` events of the generic webhook connector, as the CCaaS
    sends them (docs/connectors/webhook.md)."""
    cases: list[dict[str, str]] = workload["cases"]
    path: str = workload["path"]
    prefix: str = workload["id_prefix"]
    secret = workload["secret"].encode()

    def make(index: int) -> tuple[bytes, str]:
        case = cases[index % len(cases)]
        mid = message_id(prefix, index)
        body = orjson.dumps(
            {
                "type": "agent.message",
                "id": f"evt-{mid}",
                "caseId": case["caseId"],
                "message": {"id": mid, "text": f"bench {mid}", "agentName": "Bench Agent"},
            }
        )
        ts = int(time.time())
        sig = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {"X-Ccbridge-Timestamp": str(ts), "X-Ccbridge-Signature": f"v1={sig}"}
        return _frame(host, port, path, body, headers), mid

    return make


FACTORIES = {"infobip": infobip_factory, "agent": agent_factory}


# --------------------------------------------------------------------------- runs


@dataclass
class Sample:
    index: int
    key: str
    issued: float
    done: float
    status: int  # 0: no answer (timeout or connection error)


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    done: int = 0

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.done += 1


async def _progress(recorder: Recorder, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
        sys.stderr.write(f"progress {recorder.done} {mono() - started:.2f}\n")
        sys.stderr.flush()


async def _one(
    conn: HttpConnection, make: RequestFactory, index: int, issued: float, recorder: Recorder
) -> None:
    data, key = make(index)
    try:
        status = await conn.request(data)
    except (TimeoutError, ConnectionError, OSError):
        status = 0
        conn.close()
    recorder.add(Sample(index, key, issued, mono(), status))


async def run_closed(spec: dict[str, Any], make: RequestFactory) -> tuple[Recorder, float, float]:
    host, port = spec["host"], spec["port"]
    warmup, duration = float(spec["warmup_s"]), float(spec["duration_s"])
    limit = int(spec["max_requests"])
    recorder = Recorder()
    counter = iter(range(limit))
    started = mono()
    window_start, deadline = started + warmup, started + warmup + duration

    async def worker() -> None:
        conn = await connect(host, port)
        try:
            for index in counter:
                if mono() >= deadline:
                    return
                if conn.closed:
                    conn = await connect(host, port)
                await _one(conn, make, index, mono(), recorder)
        finally:
            conn.close()

    stop = asyncio.Event()
    progress = asyncio.create_task(_progress(recorder, started, stop))
    await asyncio.gather(*(worker() for _ in range(int(spec["concurrency"]))))
    stop.set()
    await progress
    return recorder, window_start, min(deadline, mono())


async def run_open(
    spec: dict[str, Any], make: RequestFactory
) -> tuple[Recorder, float, float, list[float]]:
    host, port = spec["host"], spec["port"]
    rate, warmup, duration = float(spec["rate"]), float(spec["warmup_s"]), float(spec["duration_s"])
    total = min(int(rate * (warmup + duration)), int(spec["max_requests"]))
    # Bounded: past it requests wait for a free connection (and that wait counts in
    # their latency) instead of piling new connections onto an overloaded server.
    max_conns = int(spec.get("max_connections", 64))
    recorder = Recorder()
    idle: deque[HttpConnection] = deque()
    waiters: deque[asyncio.Future[HttpConnection]] = deque()
    opened = 0
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    for conn in await asyncio.gather(
        *(connect(host, port) for _ in range(min(max_conns, max(8, int(rate * 0.02)))))
    ):
        idle.append(conn)
        opened += 1

    async def acquire() -> HttpConnection:
        nonlocal opened
        while idle:
            conn = idle.popleft()
            if not conn.closed:
                return conn
            opened -= 1
        if opened < max_conns:
            opened += 1
            try:
                return await connect(host, port)
            except OSError:
                opened -= 1
                raise
        waiter: asyncio.Future[HttpConnection] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        return await waiter

    def release(conn: HttpConnection) -> None:
        nonlocal opened
        if conn.closed:
            opened -= 1
            return
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        idle.append(conn)

    async def issue(index: int, issued: float) -> None:
        try:
            conn = await acquire()
        except OSError:
            recorder.add(Sample(index, "", issued, mono(), 0))
            return
        try:
            await _one(conn, make, index, issued, recorder)
        finally:
            release(conn)

    stop = asyncio.Event()
    started = mono() + 0.05
    progress = asyncio.create_task(_progress(recorder, started, stop))
    interval = 1.0 / rate
    index = 0
    while index < total:
        now = mono()
        while index < total and started + index * interval <= now:
            lags.append(now - (started + index * interval))
            task = asyncio.create_task(issue(index, now))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        if index < total:
            # Ticks of at least 1 ms: uvloop's timers have millisecond resolution, and a
            # shorter sleep would spin and steal CPU from the system under test.
            await asyncio.sleep(max(0.001, started + index * interval - mono()))
    if tasks:
        await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT_S + 1)
    stop.set()
    await progress
    for conn in idle:
        conn.close()
    window_start = started + warmup
    return recorder, window_start, started + warmup + duration, lags[int(rate * warmup) :]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    rank = min(len(values) - 1, max(0, round(fraction * len(values) + 0.5) - 1))
    return values[rank]


def summarize(
    spec: dict[str, Any], recorder: Recorder, window_start: float, window_end: float
) -> dict[str, Any]:
    closed = spec["mode"] == "closed"
    # Closed loop: answers completed inside the window; open loop: requests issued in it.
    if closed:
        window = [s for s in recorder.samples if window_start <= s.done <= window_end]
    else:
        window = [s for s in recorder.samples if s.issued >= window_start]
    ok = [s for s in window if 200 <= s.status < 300]
    errors: dict[str, int] = {}
    for s in window:
        if not 200 <= s.status < 300:
            errors[str(s.status)] = errors.get(str(s.status), 0) + 1
    latencies = sorted((s.done - s.issued) * 1000 for s in ok)
    span = max(1e-9, window_end - window_start)
    if closed:
        achieved = len(ok) / span
    else:
        last = max((s.done for s in window), default=window_end)
        achieved = len(ok) / max(span, last - window_start)
    return {
        "mode": spec["mode"],
        "offered_rate": None if closed else float(spec["rate"]),
        "concurrency": spec.get("concurrency") if closed else None,
        "window_s": round(span, 3),
        "requests": len(window),
        "ok": len(ok),
        "errors": errors,
        "achieved_rate": round(achieved, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 3),
            "p90": round(percentile(latencies, 0.90), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "max": round(latencies[-1], 3) if latencies else float("nan"),
            "mean": round(sum(latencies) / len(latencies), 3) if latencies else float("nan"),
        },
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    make = FACTORIES[spec["workload"]["kind"]](spec["host"], spec["port"], spec["workload"])
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = mono()
    lags: list[float] = []
    if spec["mode"] == "closed":
        recorder, start, end = await run_closed(spec, make)
    else:
        recorder, start, end, lags = await run_open(spec, make)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result = summarize(spec, recorder, start, end)
    lags_ms = sorted(lag * 1000 for lag in lags)
    result["generator"] = {
        "cpu_s": round(cpu_s, 3),
        "cpu_share_of_one_core": round(cpu_s / max(1e-9, mono() - wall0), 3),
        "schedule_lag_ms_p50": round(percentile(lags_ms, 0.5), 3) if lags_ms else None,
        "schedule_lag_ms_p99": round(percentile(lags_ms, 0.99), 3) if lags_ms else None,
    }
    if spec.get("track"):
        result["tracked"] = [
            [s.key, round(s.issued, 6), round(s.done, 6), s.status] for s in recorder.samples
        ]
    return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop
    except ImportError:  # pure asyncio still works, a little slower
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    sys.stdout.buffer.write(orjson.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
