"""Process plumbing of the benchmark: the live status line, the load-generator
subprocess, and the sampler of each component's memory (VmRSS) and CPU time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

ROOT = Path(__file__).resolve().parent.parent
mono = time.monotonic


class Status:
    """One live status line on a terminal (phase, elapsed, progress); one line per
    phase when the output is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.phase_name = ""
        # "3/9": which of the run's stages is running (set by the run; "" when unknown).
        self.stage = ""
        self.started = mono()
        self.phase_started = mono()
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        with self._lock:
            self.phase_name = name
            self.phase_started = mono()
            if not self.tty:
                self.stream.write(f"[{mono() - self.started:6.1f}s] {self._stage()}{name}\n")
                self.stream.flush()
        self.show("")

    def show(self, detail: str) -> None:
        if not self.tty:
            return
        with self._lock:
            line = (
                f"[{mono() - self.started:6.1f}s] {self._stage()}{self.phase_name}  "
                f"({mono() - self.phase_started:4.1f}s)  {detail}"
            )
            self.stream.write("\r\x1b[K" + line[:160])
            self.stream.flush()

    def _stage(self) -> str:
        return f"stage {self.stage}: " if self.stage else ""

    def finish(self, text: str = "") -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        if text:
            self.stream.write(text + "\n")
        self.stream.flush()


def bench_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of bench subprocesses: ``bench`` importable from the tree."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_loadgen(
    spec: dict[str, Any], status: Status, env: Mapping[str, str], timeout_s: float
) -> dict[str, Any]:
    """Runs ``python -m bench.loadgen`` with ``spec`` and returns its JSON result while
    showing its progress on the status line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=bench_env(env),
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_tail: list[str] = []

    def pump(stream: Any) -> None:
        last = (0, 0.0)
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("progress "):
                _, done_s, elapsed_s = line.split()
                done, elapsed = int(done_s), float(elapsed_s)
                rate = (done - last[0]) / max(1e-9, elapsed - last[1])
                last = (done, elapsed)
                status.show(f"{done} answers  {rate:,.0f}/s")
            else:
                stderr_tail.append(line)
                del stderr_tail[:-30]

    reader = threading.Thread(target=pump, args=(proc.stderr,), daemon=True)
    reader.start()
    proc.stdin.write(orjson.dumps(spec))
    proc.stdin.close()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
    reader.join(5)
    if proc.returncode != 0:
        tail = "\n".join(stderr_tail)
        raise RuntimeError(f"load generator failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = orjson.loads(out)
    return result


def read_rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process used so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_s() -> float:
    """CPU seconds the whole machine was busy so far (all cores; /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples VmRSS of named processes every ``interval_s`` in a thread; keeps the
    peak per process while a window is open."""

    def __init__(self, pids: Mapping[str, int], interval_s: float = 0.25) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self.recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.recording:
                continue
            for name, pid in self.pids.items():
                rss = read_rss_kib(pid)
                if rss is not None and rss > self.peak.get(name, 0):
                    self.peak[name] = rss

    def rss_now(self) -> dict[str, int]:
        out = {}
        for name, pid in self.pids.items():
            rss = read_rss_kib(pid)
            if rss is not None:
                out[name] = rss
        return out

    def cpu_now(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            cpu = read_cpu_s(pid)
            if cpu is not None:
                out[name] = cpu
        return out
