"""The benchmark run: starts its own Redis (AOF everysec), both simulators, the five
mesh components as separate processes and the floor app; drives load from a separate
generator process; measures ingest, bot traffic, relay latency, handover opening,
Redis memory and RSS; stops everything; writes JSON, a table and a chart.

Method and definitions: bench/README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import Sampler, Status, bench_env, machine_cpu_s, mono, run_loadgen
from bench.loadgen import message_id, percentile
from ccbridge.services.local.mesh_ca import create_mesh_pki
from ccbridge.services.local.run import ORDER
from ccbridge.services.local.supervisor import EmbeddedRedis, ProcessGroup, free_port, mesh_env

WEBHOOK_PATH = "/webhooks/infobip/{token}"
# Mesh settings that differ from the production defaults (recorded in the results).
MESH_SETTINGS = {"CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX": "50"}
FLOOR_PREFIX = "flr"


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one run (``FULL`` for ``make bench``, ``SMOKE`` for the
    test that keeps the bench from rotting)."""

    name: str
    active_conversations: int = 200
    bot_conversations: int = 1000
    closed_concurrency: int = 32
    closed_warmup_s: float = 1.0
    closed_duration_s: float = 5.0
    closed_runs: int = 2
    open_levels: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    open_warmup_s: float = 0.5
    open_duration_s: float = 4.0
    relay_rate: float = 100.0
    relay_duration_s: float = 5.0
    opening_samples: int = 5
    opening_history: int = 1000
    page_delay_ms: int = 50
    memory_handovers: int = 10_000
    drain_timeout_s: float = 90.0
    max_requests: int = 200_000


FULL = Profile("full")
SMOKE = Profile(
    "smoke",
    active_conversations=6,
    bot_conversations=20,
    closed_concurrency=8,
    closed_warmup_s=0.3,
    closed_runs=1,
    closed_duration_s=1.0,
    open_levels=(0.5, 0.9),
    open_warmup_s=0.2,
    open_duration_s=0.8,
    relay_rate=20.0,
    relay_duration_s=1.0,
    opening_samples=1,
    opening_history=1000,
    memory_handovers=200,
    drain_timeout_s=60.0,
    max_requests=20_000,
)


def fig(value: float | int | None, unit: str, how: str) -> dict[str, Any]:
    """A reported figure: value, unit, and how it was measured."""
    if isinstance(value, float):
        value = round(value, 3)
    return {"value": value, "unit": unit, "how": how}


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loopback": True,
        "load_generator": "same machine, separate process",
    }


class Bench:
    """One run; see the module docstring."""

    def __init__(
        self, profile: Profile, status: Status, extra_env: dict[str, str] | None = None
    ) -> None:
        self.p = profile
        self.status = status
        self.extra_env = dict(extra_env or {})  # settings of another run (bench/soak.py)
        self.tmp = Path(tempfile.mkdtemp(prefix="ccbridge-bench-"))
        # The mesh as in production: mutual TLS between the components (docs/security.md).
        self.group = ProcessGroup(log_dir=self.tmp / "logs", pki=create_mesh_pki(self.tmp / "pki"))
        self.redis_server: EmbeddedRedis | None = None
        self.mem_redis: EmbeddedRedis | None = None
        self.ports = {name: free_port() for name in (*ORDER, "infobip-sim", "ccaas-sim", "floor")}
        self.env: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self.figures: dict[str, dict[str, Any]] = {}
        self.sampler: Sampler | None = None
        self.run_tag = uuid.uuid4().hex[:6]
        self.other_load: list[float] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.status.phase("starting Redis (AOF everysec), simulators, mesh, floor")
        self.redis_server = EmbeddedRedis(self.tmp / "redis", free_port()).start()
        ports = self.ports
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # The components run the code the bench runs (a worktree's, when set).
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "CCBRIDGE_ESCALATION_TOKEN": secrets.token_urlsafe(16),
            "CCBRIDGE_WEBHOOK_TOKEN": secrets.token_urlsafe(24),
            "INFOBIP_WEBHOOK_SECRET": secrets.token_urlsafe(16),
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": secrets.token_urlsafe(16),
            "INFOBIP_API_KEY": "bench-key",
            "INFOBIP_BASE_URL": f"http://127.0.0.1:{ports['infobip-sim']}",
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": f"http://127.0.0.1:{ports['ccaas-sim']}/webhook",
            "CCBRIDGE_CONNECTORS": "webhook",
            # The reconciler's periodic sweep (one Infobip call per ACTIVE handover) is
            # kept out of the measured windows; see bench/README.md.
            "CCBRIDGE_RECONCILE_INTERVAL_S": "3600",
            # The webhook connector's batched delivery (docs/connectors/webhook.md): the
            # CCaaS simulator takes arrays of case.message events. Production default: 1.
            **MESH_SETTINGS,
            **self.extra_env,
        }
        env = self.env = bench_env(mesh_env(base, ports, self.redis_server.url))
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        self.group.start(
            "infobip-sim",
            env,
            ports["infobip-sim"],
            args=[
                "--port",
                str(ports["infobip-sim"]),
                # "--x=value": a generated secret may start with "-" (argparse: an option)
                f"--api-key={env['INFOBIP_API_KEY']}",
                "--log-level",
                "warning",
                # The answers' own schema check costs CPU the benchmark would measure;
                # requests are still validated (tests/e2e run it strict).
                "--contract=off",
                "--webhook-url",
                f"{gateway}/webhooks/infobip/{env['CCBRIDGE_WEBHOOK_TOKEN']}",
            ],
        )
        self.group.start(
            "ccaas-sim",
            env,
            ports["ccaas-sim"],
            args=[
                "--port",
                str(ports["ccaas-sim"]),
                f"--secret={env['CCBRIDGE_WEBHOOK_CONNECTOR_SECRET']}",
                "--bridge-url",
                f"{gateway}/webhooks/ccaas/webhook",
            ],
        )
        self.group.start(
            "floor",
            env,
            ports["floor"],
            module="bench.floor",
            args=[
                "--port",
                str(ports["floor"]),
                "--redis-url",
                self.redis_server.url,
                "--prefix",
                FLOOR_PREFIX,
            ],
        )
        for name in ORDER:
            self.group.start(name, env, ports[name])
        self.group.wait_ready("infobip-sim", "http:/_sim/health")
        self.group.wait_ready("ccaas-sim", "http:/_sim/status")
        self.group.wait_ready("floor", "tcp")
        for name in ORDER:
            self.group.wait_ready(name, "http:/readyz" if name == "gateway" else "grpc")
        self.r = redis.Redis.from_url(self.redis_server.url)
        self.redis_version = str(self.r.info("server")["redis_version"])
        self.http = httpx.Client(timeout=30)
        self.gateway = f"http://127.0.0.1:{ports['gateway']}"
        self.infobip = f"http://127.0.0.1:{ports['infobip-sim']}"
        self.ccaas = f"http://127.0.0.1:{ports['ccaas-sim']}"
        pids = {name: proc.popen.pid for name, proc in self.group.procs.items()}
        assert self.redis_server.popen is not None
        pids["redis"] = self.redis_server.popen.pid
        self.sampler = Sampler(pids).start()

    def stop(self) -> None:
        self.status.phase("stopping everything")
        if self.sampler is not None:
            self.sampler.stop()
        for closer in (getattr(self, "http", None), getattr(self, "r", None)):
            if closer is not None:
                closer.close()
        self.group.stop_all()
        for server in (self.redis_server, self.mem_redis):
            if server is not None:
                server.stop()

    def logs_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(30)}" for p in self.group.procs.values())

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['CCBRIDGE_ESCALATION_TOKEN']}"}

    def webhook_path(self) -> str:
        return WEBHOOK_PATH.format(token=self.env["CCBRIDGE_WEBHOOK_TOKEN"])

    def load(
        self,
        port: int,
        mode: str,
        workload: dict[str, Any],
        *,
        rate: float = 0.0,
        track: bool = False,
    ) -> dict[str, Any]:
        p = self.p
        spec: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "mode": mode,
            "workload": workload,
            "max_requests": p.max_requests,
            "track": track,
        }
        if mode == "closed":
            spec.update(
                concurrency=p.closed_concurrency,
                warmup_s=p.closed_warmup_s,
                duration_s=p.closed_duration_s,
            )
            budget = p.closed_warmup_s + p.closed_duration_s + 30
        else:
            spec.update(rate=rate, warmup_s=p.open_warmup_s, duration_s=p.open_duration_s)
            budget = p.open_warmup_s + p.open_duration_s + 30
        assert self.sampler is not None
        ours0, machine0, t0 = self.sampler.cpu_now(), machine_cpu_s(), mono()
        result = run_loadgen(spec, self.status, self.env, budget)
        ours1, machine1, elapsed = self.sampler.cpu_now(), machine_cpu_s(), mono() - t0
        shares = {
            name: round((ours1[name] - ours0.get(name, ours1[name])) / elapsed, 3) for name in ours1
        }
        generator = result["generator"]["cpu_s"] / elapsed
        shares["load-generator"] = round(generator, 3)
        machine = (machine1 - machine0) / elapsed
        # CPU of processes that are not part of this run (other work on a shared box).
        other = max(0.0, machine - sum(shares.values()))
        result["cpu_cores"] = {**shares, "machine": round(machine, 3), "other": round(other, 3)}
        self.other_load.append(other)
        return result

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.05
    ) -> Any:
        deadline = mono() + timeout_s
        while mono() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(interval_s)
        raise RuntimeError(f"timed out waiting for {what}")

    def new_conversation(self, history: int) -> dict[str, str]:
        answer = self.http.post(
            f"{self.infobip}/_sim/conversations", json={"history": history, "channel": "WHATSAPP"}
        )
        answer.raise_for_status()
        doc = answer.json()
        return {
            "id": doc["id"],
            "from": doc["endUser"],
            "to": doc["businessSender"],
            "channel": doc["channel"],
        }

    def escalate(self, cid: str) -> None:
        answer = self.http.post(
            f"{self.gateway}/v1/escalations", headers=self.auth, json={"conversationId": cid}
        )
        if answer.status_code != 202:
            raise RuntimeError(f"escalation answered {answer.status_code}: {answer.text}")

    def state(self, cid: str) -> str:
        answer = self.http.get(f"{self.gateway}/v1/handovers/{cid}", headers=self.auth)
        return str(answer.json().get("state", "")) if answer.status_code == 200 else ""

    def wait_active(self, cids: Iterable[str], timeout_s: float = 120) -> None:
        pending = set(cids)

        def probe() -> bool:
            for cid in list(pending):
                if self.state(cid) == "ACTIVE":
                    pending.discard(cid)
            self.status.show(f"{len(pending)} handovers not ACTIVE yet")
            return not pending

        self.wait_for("handovers to become ACTIVE", probe, timeout_s, 0.2)

    def cases_of(self, cid: str) -> list[dict[str, Any]]:
        return list(
            self.http.get(f"{self.ccaas}/_sim/cases", params={"conversationId": cid}).json()[
                "cases"
            ]
        )

    def ccaas_deliveries(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"{self.ccaas}/_sim/deliveries", timeout=120)
        return list(answer.json()["deliveries"])

    def ccaas_delivery_count(self) -> int:
        return int(self.http.get(f"{self.ccaas}/_sim/status").json()["deliveries"])

    def wait_drained(self, expected_total: int) -> float | None:
        """Waits until the CCaaS simulator recorded ``expected_total`` deliveries; returns
        when (monotonic), or None after the drain timeout."""
        deadline = mono() + self.p.drain_timeout_s
        while mono() < deadline:
            count = self.ccaas_delivery_count()
            if count >= expected_total:
                return mono()
            self.status.show(f"draining to the CCaaS: {expected_total - count} to go")
            time.sleep(0.1)
        return None

    # -- phases ------------------------------------------------------------------------------
    def setup_conversations(self) -> None:
        p = self.p
        self.status.phase(f"opening {p.active_conversations} handovers (2-message history)")
        self.active = [self.new_conversation(2) for _ in range(p.active_conversations)]
        self.idle_template = self.new_conversation(2)
        for conv in [*self.active, self.idle_template]:
            self.escalate(conv["id"])
        self.wait_active([c["id"] for c in [*self.active, self.idle_template]])
        cases = self.http.get(f"{self.ccaas}/_sim/cases").json()["cases"]
        by_conv = {c["conversationId"]: c["caseId"] for c in cases}
        self.cases = [{"caseId": by_conv[c["id"]], "conversationId": c["id"]} for c in self.active]
        self.bot = [
            {
                "id": str(uuid.uuid4()),
                "from": f"38591{i:07d}",
                "to": "447492263897",
                "channel": "WHATSAPP",
            }
            for i in range(p.bot_conversations)
        ]
        # The floor's own ACTIVE handovers: same conversation ids, its own key prefix.
        with self.r.pipeline(transaction=False) as pipe:
            for conv in self.active:
                pipe.hset(f"{FLOOR_PREFIX}:h:{{{conv['id']}}}", "state", "ACTIVE")
            pipe.execute()

    def measure_idle_rss(self) -> None:
        assert self.sampler is not None
        time.sleep(1.0)
        self.rss_idle = self.sampler.rss_now()

    def phase_opening(self) -> None:
        p = self.p
        self.status.phase(
            f"handover opening: {p.opening_history}-message history, {p.page_delay_ms} ms per page"
        )
        self.http.put(
            f"{self.infobip}/_sim/config", json={"page_delay_ms": p.page_delay_ms}
        ).raise_for_status()
        accepted: dict[str, float] = {}
        try:
            for _ in range(p.opening_samples):
                conv = self.new_conversation(p.opening_history)
                cid = conv["id"]
                self.escalate(cid)
                accepted[cid] = mono()
                self.wait_for("the case to open", partial(self.cases_of, cid), 60, 0.01)
                self.opening_cid = cid
        finally:
            self.http.put(
                f"{self.infobip}/_sim/config", json={"page_delay_ms": 0}
            ).raise_for_status()
        opened = {
            d["conversationId"]: d["monotonic"]
            for d in self.ccaas_deliveries()
            if d.get("type") == "case.open"
            and d.get("status") in (200, 201)
            and d["conversationId"] in accepted
        }
        samples = sorted((opened[c] - t) * 1000 for c, t in accepted.items())
        self.wait_active([self.opening_cid])
        self.results["opening"] = {
            "history_messages": p.opening_history,
            "page_delay_ms": p.page_delay_ms,
            "samples_ms": [round(s, 1) for s in samples],
        }
        how = (
            f"escalation answered 202 (client clock) → case.open recorded by the CCaaS "
            f"simulator (its time.monotonic()), {p.opening_history}-message history, "
            f"Infobip simulator answering each Get Messages page after "
            f"{p.page_delay_ms} ms; {len(samples)} handovers opened one at a time"
        )
        self.figures["opening_p50"] = fig(percentile(samples, 0.5), "ms", how)
        self.figures["opening_max"] = fig(samples[-1], "ms", how)

    def _relay_inbound(
        self, tracked: list[list[Any]], deliveries: dict[str, float]
    ) -> dict[str, Any]:
        lat = sorted(
            (deliveries[key] - done) * 1000
            for key, _issued, done, status in tracked
            if 200 <= status < 300 and key in deliveries
        )
        return {
            "n": len(lat),
            "p50_ms": round(percentile(lat, 0.5), 3),
            "p99_ms": round(percentile(lat, 0.99), 3),
            "max_ms": round(lat[-1], 3) if lat else None,
            "missing": sum(1 for t in tracked if 200 <= t[3] < 300 and t[0] not in deliveries),
        }

    def _message_deliveries(self) -> dict[str, float]:
        """Idempotency key (= Infobip message id) → first successful case.message at the
        CCaaS simulator (its monotonic clock)."""
        out: dict[str, float] = {}
        for d in self.ccaas_deliveries():
            if d.get("type") == "case.message" and d.get("status") == 200:
                key = d.get("idempotencyKey")
                if key and key not in out:
                    out[key] = d["monotonic"]
        return out

    def phase_relay(self) -> None:
        p = self.p
        rate = p.relay_rate
        self.status.phase(f"relay end user → CCaaS at {rate:g} webhooks/s")
        before = self.ccaas_delivery_count()
        inbound = self.load(
            self.ports["gateway"],
            "open",
            {
                "kind": "infobip",
                "path": self.webhook_path(),
                "conversations": self.active,
                "id_prefix": f"ri{self.run_tag}",
            },
            rate=rate,
            track=True,
        )
        self.wait_drained(before + len(inbound["tracked"]))
        relay_in = self._relay_inbound(inbound.pop("tracked"), self._message_deliveries())
        self.status.phase(f"relay agent → Infobip at {rate:g} events/s")
        agent = self.load(
            self.ports["gateway"],
            "open",
            {
                "kind": "agent",
                "path": "/webhooks/ccaas/webhook",
                "cases": self.cases,
                "secret": self.env["CCBRIDGE_WEBHOOK_CONNECTOR_SECRET"],
                "id_prefix": f"ra{self.run_tag}",
            },
            rate=rate,
            track=True,
        )
        tracked = agent.pop("tracked")
        wanted = {f"bench {t[0]}": t for t in tracked if 200 <= t[3] < 300}
        received: dict[str, float] = {}

        def probe() -> bool:
            for conv in self.active:
                for m in self.http.get(
                    f"{self.infobip}/_sim/conversations/{conv['id']}/agent-messages"
                ).json()["messages"]:
                    text = m.get("content", {}).get("text", "")
                    if text in wanted and text not in received:
                        received[text] = m["receivedMonotonic"]
            self.status.show(f"{len(wanted) - len(received)} agent messages to go")
            return len(received) >= len(wanted)

        try:
            self.wait_for("agent messages at Infobip", probe, self.p.drain_timeout_s, 0.2)
        except RuntimeError:
            pass  # reported as missing
        lat = sorted(
            (received[text] - t[1]) * 1000 for text, t in wanted.items() if text in received
        )
        relay_agent = {
            "n": len(lat),
            "p50_ms": round(percentile(lat, 0.5), 3),
            "p99_ms": round(percentile(lat, 0.99), 3),
            "max_ms": round(lat[-1], 3) if lat else None,
            "missing": len(wanted) - len(received),
        }
        self.results["relay"] = {
            "rate_per_s": rate,
            "inbound": relay_in,
            "agent": relay_agent,
            "inbound_load": inbound,
            "agent_load": agent,
        }
        how_in = (
            f"webhook answered 200 (generator's time.monotonic()) → case.message "
            f"recorded by the CCaaS simulator (its time.monotonic(); CLOCK_MONOTONIC is "
            f"system-wide), open loop at {rate:g} webhooks/s over "
            f"{len(self.active)} ACTIVE handovers"
        )
        how_agent = (
            f"signed agent.message sent to the gateway by the generator (acting as "
            f"the CCaaS) → Create Message recorded by the Infobip simulator (its "
            f"time.monotonic()), open loop at {rate:g} events/s"
        )
        self.figures["relay_inbound_p50"] = fig(relay_in["p50_ms"], "ms", how_in)
        self.figures["relay_inbound_p99"] = fig(relay_in["p99_ms"], "ms", how_in)
        self.figures["relay_agent_p50"] = fig(relay_agent["p50_ms"], "ms", how_agent)
        self.figures["relay_agent_p99"] = fig(relay_agent["p99_ms"], "ms", how_agent)

    def ingest_series(self, target: str, kind: str) -> dict[str, Any]:
        """Closed loop for the max rate, then open loop at fractions of it."""
        assert self.sampler is not None
        port = self.ports["gateway" if target == "mesh" else "floor"]
        convs = self.active if kind == "active" else self.bot
        path = self.webhook_path()
        label = "ACTIVE handovers" if kind == "active" else "no handover (bot traffic)"
        tag = f"{target[0]}{kind[0]}{self.run_tag}"
        track = target == "mesh" and kind == "active"

        def workload(suffix: str) -> dict[str, Any]:
            return {
                "kind": "infobip",
                "path": path,
                "conversations": convs,
                "id_prefix": f"{tag}{suffix}",
            }

        runs: list[tuple[float, dict[str, Any], dict[str, Any] | None]] = []
        for attempt in range(self.p.closed_runs):
            self.status.phase(
                f"{target}: {label}, closed loop ({self.p.closed_concurrency} connections), "
                f"run {attempt + 1}/{self.p.closed_runs}"
            )
            before = self.ccaas_delivery_count()
            self.sampler.recording = target == "mesh"
            closed = self.load(port, "closed", workload(f"c{attempt}"), track=track)
            self.sampler.recording = False
            drain: dict[str, Any] | None = None
            sustained = closed["achieved_rate"]
            if track:
                tracked = closed.pop("tracked")
                accepted = sum(1 for t in tracked if 200 <= t[3] < 300)
                drained_at = self.wait_drained(before + accepted)
                first = min(t[1] for t in tracked)
                delivered = None if drained_at is None else accepted / (drained_at - first)
                drain = {
                    "accepted": accepted,
                    "drained_after_s": None if drained_at is None else round(drained_at - first, 3),
                    "delivered_rate": None if delivered is None else round(delivered, 1),
                }
                # Sustained: what the whole path keeps up with. With a handover every
                # accepted message must also reach the CCaaS: delivery bounds the rate.
                sustained = min(sustained, delivered or 0.0)
            runs.append((sustained, closed, drain))
            if target == "floor":
                self.clear_floor_queues()
        # The best of the runs: a transient hiccup (another process, an AOF rewrite)
        # only ever lowers a run.
        max_rate, closed, drain = max(runs, key=lambda run: run[0])
        series: dict[str, Any] = {
            "closed": closed,
            "levels": [],
            "closed_runs": [
                {
                    "sustained_rate": round(r[0], 1),
                    "achieved_rate": r[1]["achieved_rate"],
                    "relay_drain": r[2],
                }
                for r in runs
            ],
        }
        if drain is not None:
            series["relay_drain"] = drain
        series["sustained_rate"] = max_rate
        for level in self.p.open_levels:
            rate = max(1.0, max_rate * level)
            self.status.phase(f"{target}: {label}, open loop at {level:.0%} of max ({rate:,.0f}/s)")
            before = self.ccaas_delivery_count()
            result = self.load(
                port, "open", workload(f"o{int(level * 100)}"), rate=rate, track=track
            )
            result["fraction_of_max"] = level
            if track:
                tracked = result.pop("tracked")
                accepted = sum(1 for t in tracked if 200 <= t[3] < 300)
                self.wait_drained(before + accepted)
                result["relay"] = self._relay_inbound(tracked, self._message_deliveries())
            series["levels"].append(result)
            if target == "floor":
                self.clear_floor_queues()
        return series

    def clear_floor_queues(self) -> None:
        """Deletes what the floor queued (no one delivers it): keeps the dataset, and so
        Redis's AOF rewrites, as small as the mesh's."""
        with self.r.pipeline(transaction=False) as pipe:
            for pattern in (f"{FLOOR_PREFIX}:in:*", f"{FLOOR_PREFIX}:seen:*"):
                for key in self.r.scan_iter(match=pattern, count=1000):
                    pipe.delete(key)
            pipe.execute()

    def phase_ingest(self) -> None:
        for kind in ("active", "bot"):
            floor = self.ingest_series("floor", kind)
            mesh = self.ingest_series("mesh", kind)
            self.results[f"ingest_{kind}"] = {"mesh": mesh, "floor": floor}
            label = "ACTIVE handover" if kind == "active" else "no handover (bot traffic)"
            how_max = (
                f"closed loop: {self.p.closed_concurrency} keep-alive connections "
                f"sending legacy Infobip webhooks (one message each, conversations "
                f"with {label}) back to back; 2xx answers per second over "
                f"{self.p.closed_duration_s:g} s after {self.p.closed_warmup_s:g} s "
                f"warm-up"
            )
            name = "ingest" if kind == "active" else "bot"
            m_accept = mesh["closed"]["achieved_rate"]
            m_max = mesh["sustained_rate"]
            f_max = floor["closed"]["achieved_rate"]
            how_sustained = how_max
            if kind == "active":
                how_sustained = (
                    "the lower of the closed-loop acceptance rate and the relay rate "
                    "(ingest_relay_delivered_rate): with an ACTIVE handover every accepted "
                    "webhook must also reach the CCaaS, else the queue grows without bound"
                )
                self.figures["ingest_accept_rate"] = fig(m_accept, "webhooks/s", how_max)
                self.figures["ingest_accept_ratio_to_floor"] = fig(
                    m_accept / f_max if f_max else None,
                    "× floor",
                    "mesh closed-loop acceptance rate / floor max rate, same run",
                )
            self.figures[f"{name}_max_rate"] = fig(m_max, "webhooks/s", how_sustained)
            self.figures[f"{name}_floor_max_rate"] = fig(f_max, "webhooks/s", how_max)
            self.figures[f"{name}_ratio_to_floor"] = fig(
                m_max / f_max if f_max else None,
                "× floor",
                "mesh max sustained rate / floor max rate, same run",
            )
            for target, series in (("", mesh), ("floor_", floor)):
                for level in series["levels"]:
                    pct = round(level["fraction_of_max"] * 100)
                    how = (
                        f"open loop at {pct}% of the max sustained rate "
                        f"({level['offered_rate']:,.0f}/s offered) for "
                        f"{self.p.open_duration_s:g} s: issue → answer, measured by the "
                        f"generator (waits for a free connection included)"
                    )
                    for q in ("p50", "p99"):
                        self.figures[f"{name}_{target}{q}_at_{pct}pct"] = fig(
                            level["latency_ms"][q], "ms", how
                        )
            if kind == "active":
                drain = mesh.get("relay_drain", {})
                self.figures["ingest_relay_delivered_rate"] = fig(
                    drain.get("delivered_rate"),
                    "messages/s",
                    "messages accepted in the closed-loop ingest run / time from its first "
                    "webhook to the last case.message at the CCaaS simulator",
                )
                half = next((lv for lv in mesh["levels"] if lv["fraction_of_max"] == 0.5), None)
                if half is not None:
                    how = (
                        "webhook answered 200 → case.message at the CCaaS simulator, open "
                        f"loop at 50% of the max sustained ingest rate "
                        f"({half['offered_rate']:,.0f}/s)"
                    )
                    self.figures["relay_inbound_p50_at_half_max"] = fig(
                        half["relay"]["p50_ms"], "ms", how
                    )
                    self.figures["relay_inbound_p99_at_half_max"] = fig(
                        half["relay"]["p99_ms"], "ms", how
                    )
        assert self.sampler is not None
        self.rss_load = dict(self.sampler.peak)

    def phase_memory(self) -> None:
        """Redis bytes per ACTIVE idle handover and per queued message, measured in a
        quiet Redis of the same build and settings (see bench/README.md)."""
        p = self.p
        self.status.phase(f"Redis memory: {p.memory_handovers:,} ACTIVE idle handovers")
        template = self.idle_template["id"]
        snapshot = snapshot_conversation(self.r, template)
        self.mem_redis = EmbeddedRedis(self.tmp / "redis-mem", free_port()).start()
        quiet = redis.Redis.from_url(self.mem_redis.url)
        try:
            self.results["memory"] = measure_memory(
                quiet,
                self.mem_redis.url,
                snapshot,
                template,
                p.memory_handovers,
                self.idle_template,
            )
        finally:
            quiet.close()
        # Per transcript message: what a handover opened with a long history keeps in
        # Redis beyond one opened with a 2-message history (all keys of each).
        big, small = (
            conversation_bytes(self.r, self.opening_cid),
            conversation_bytes(self.r, template),
        )
        per_message = (big - small) / max(1, p.opening_history - 2)
        self.results["memory"]["transcript"] = {
            "history_messages": p.opening_history,
            "conversation_bytes": big,
            "two_message_conversation_bytes": small,
        }
        mem = self.results["memory"]
        n = p.memory_handovers
        how = (
            f"INFO used_memory delta over {n:,} clones of a real ACTIVE handover's keys "
            f"(opened through the mesh with a 2-message history, no message relayed "
            f"yet), restored into a quiet redis-server of the same build / {n:,}"
        )
        self.figures["memory_per_idle_handover"] = fig(mem["per_handover_bytes"], "bytes", how)
        self.figures["memory_per_queued_message_first"] = fig(
            mem["per_first_message_bytes"],
            "bytes",
            f"used_memory delta / {n:,} after Session's ingest script queued one message "
            f"(parsed by the gateway's parser) on each handover: inbox list, dedupe set and "
            f"schedule entry are created",
        )
        self.figures["memory_per_queued_message_next"] = fig(
            mem["per_next_message_bytes"],
            "bytes",
            f"used_memory delta / {n:,} for a second queued message on each handover",
        )
        self.figures["memory_per_delivered_message_retained"] = fig(
            mem["retained_per_message_bytes"],
            "bytes",
            "used_memory left per message after the inbox lists and schedule entries are "
            "removed (as after delivery): the dedupe id kept for CCBRIDGE_DEDUPE_TTL_S",
        )
        self.figures["memory_per_transcript_message"] = fig(
            per_message,
            "bytes",
            "(MEMORY USAGE of every key of a handover opened with a "
            f"{p.opening_history}-message history − the same for a 2-message history) / "
            f"{p.opening_history - 2}: the transcript ids remembered against relaying twice",
        )

    def background_figure(self) -> None:
        load = self.other_load
        self.figures["background_cpu"] = fig(
            sum(load) / len(load) if load else None,
            "cores",
            "CPU used by processes outside this run (other work on a shared machine), "
            "averaged over the load runs: /proc/stat busy time minus this run's processes",
        )

    def rss_figures(self) -> None:
        idle, load = self.rss_idle, getattr(self, "rss_load", {})
        for name in (*ORDER, "redis"):
            self.figures[f"rss_idle_{name}"] = fig(
                idle.get(name, 0) / 1024,
                "MiB",
                "VmRSS from /proc/<pid>/status after start-up and handover set-up, no traffic",
            )
            self.figures[f"rss_load_{name}"] = fig(
                load.get(name, 0) / 1024,
                "MiB",
                "peak VmRSS sampled every 0.25 s during the mesh's closed-loop ingest runs",
            )
        self.results["rss_kib"] = {"idle": idle, "load": load}


# --------------------------------------------------------------------------- memory


def conversation_bytes(client: redis.Redis, cid: str) -> int:
    """MEMORY USAGE summed over the keys that carry the conversation's hash tag."""
    return sum(
        int(client.memory_usage(key, samples=0) or 0)
        for key in client.scan_iter(match=f"*{{{cid}}}", count=1000)
    )


def snapshot_conversation(client: redis.Redis, cid: str) -> dict[str, Any]:
    """Every Redis entry one conversation owns: keys carrying its hash tag, string keys
    whose value is its id (reverse indexes), and its members of sorted sets and sets."""
    tag = f"{{{cid}}}".encode()
    keys: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    for key in client.scan_iter(count=1000):
        raw_kind = client.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
        if tag in key:
            keys.append(
                {
                    "key": key,
                    "dump": client.dump(key),
                    "pttl": client.pttl(key),
                    "type": kind,
                    "bytes": client.memory_usage(key, samples=0),
                }
            )
        elif kind == "string" and client.get(key) == cid.encode():
            keys.append(
                {
                    "key": key,
                    "dump": None,
                    "pttl": client.pttl(key),
                    "type": kind,
                    "bytes": client.memory_usage(key, samples=0),
                }
            )
        elif kind == "zset" and client.zscore(key, cid) is not None:
            members.append({"key": key, "type": kind, "score": client.zscore(key, cid)})
        elif kind == "set" and client.sismember(key, cid):
            members.append({"key": key, "type": kind})
    return {"keys": keys, "members": members}


def _rename(key: bytes, old: str, new: str) -> bytes:
    return key.replace(old.encode(), new.encode())


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure_memory(
    quiet: redis.Redis,
    url: str,
    snapshot: dict[str, Any],
    cid: str,
    count: int,
    conv: dict[str, str],
) -> dict[str, Any]:
    """Clones the snapshot ``count`` times, then queues messages with Session's own
    ingest script; returns the used_memory deltas per handover and per message."""
    # New ids of the same length as the template's (sizes, not contents, matter).
    ids = [f"{i:08d}{cid[8:]}" for i in range(count)]
    base = used_memory(quiet)
    for start in range(0, count, 500):
        with quiet.pipeline(transaction=False) as pipe:
            for index, new in enumerate(ids[start : start + 500], start):
                for entry in snapshot["keys"]:
                    key = _rename(entry["key"], cid, new)
                    ttl = max(0, entry["pttl"])
                    if entry["dump"] is None:
                        # A reverse index (case → conversation): a unique key of the
                        # same length (the last 6 characters before the closing brace).
                        key = key[:-7] + f"{index:06d}".encode() + key[-1:]
                        pipe.set(key, new, px=ttl or None)
                    else:
                        pipe.restore(key, ttl, entry["dump"], replace=True)
                for member in snapshot["members"]:
                    if member["type"] == "zset":
                        pipe.zadd(member["key"], {new: member["score"]})
                    else:
                        pipe.sadd(member["key"], new)
            pipe.execute()
    after_handovers = used_memory(quiet)
    first, _second = asyncio.run(_queue_messages(url, ids, conv))
    after_messages = used_memory(quiet)
    # Delivery empties the inbox lists and the schedule; the dedupe ids stay.
    with quiet.pipeline(transaction=False) as pipe:
        for key in quiet.scan_iter(match="*:in:*", count=1000):
            pipe.delete(key)
        # The schedules: one per lane, and the one of releases before the lanes.
        pipe.delete(b"ccb:due:in", b"ccb:due:out", b"ccb:due")
        pipe.execute()
    after_delivery = used_memory(quiet)
    return {
        "handovers": count,
        "record": [
            {
                "key": e["key"].decode().replace(cid, "<cid>"),
                "type": e["type"],
                "memory_usage_bytes": e["bytes"],
                "ttl_ms": e["pttl"],
            }
            for e in snapshot["keys"]
        ]
        + [{"member_of": m["key"].decode(), "type": m["type"]} for m in snapshot["members"]],
        "used_memory": {
            "empty": base,
            "handovers": after_handovers,
            "first_messages": first,
            "messages": after_messages,
            "after_delivery": after_delivery,
        },
        "per_handover_bytes": round((after_handovers - base) / count, 1),
        "per_first_message_bytes": round((first - after_handovers) / count, 1),
        "per_next_message_bytes": round((after_messages - first) / count, 1),
        "retained_per_message_bytes": round((after_delivery - after_handovers) / (2 * count), 1),
    }


async def _queue_messages(url: str, ids: list[str], conv: dict[str, str]) -> tuple[int, int]:
    """Queues two messages on each handover with Session's store (its ingest script), the
    messages built by the gateway's parser from a legacy webhook body; returns
    used_memory after the first round and after the second."""
    from ccbridge.gateway.webhooks import legacy_message, now_instant
    from ccbridge.services.runtime.redis import create_redis
    from ccbridge.services.session.store import SessionStore

    client = create_redis(url)
    store = SessionStore(client)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    marks: list[int] = []
    try:
        for round_ in range(2):
            for start in range(0, len(ids), 200):
                batch = []
                for offset, cid in enumerate(ids[start : start + 200], start):
                    item: dict[str, object] = {
                        "id": message_id(f"m{round_}", offset),
                        "channel": conv["channel"],
                        "from": conv["from"],
                        "to": conv["to"],
                        "direction": "INBOUND",
                        "conversationId": cid,
                        "authorId": conv["from"],
                        "authorType": "CUSTOMER",
                        "createdAt": stamp,
                        "updatedAt": stamp,
                        "contentType": "TEXT",
                        "content": {"text": "Hello, I still need help with my order, please."},
                    }
                    batch.append(legacy_message(item, "body", now_instant()))
                outcomes = await store.ingest(batch)
                if any(o != 1 for o in outcomes):
                    raise RuntimeError("a cloned handover refused a message")
            info = await client.info("memory")
            marks.append(int(info["used_memory"]))
    finally:
        await store.raw.aclose()
        await client.aclose()
    return marks[0], marks[1]


# --------------------------------------------------------------------------- entry


def goals(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def value(name: str) -> float | None:
        v = figures.get(name, {}).get("value")
        return float(v) if isinstance(v, int | float) else None

    def check(name: str, target: str, measured: float | None, ok: bool | None) -> dict[str, Any]:
        return {"goal": name, "target": target, "measured": measured, "met": ok}

    ingest, bot = value("ingest_ratio_to_floor"), value("bot_ratio_to_floor")
    relay = value("relay_inbound_p99_at_half_max")
    opening = value("opening_max")
    mem = value("memory_per_idle_handover")
    return [
        check(
            "ingest (ACTIVE handover)",
            ">= 0.7 x floor",
            ingest,
            None if ingest is None else ingest >= 0.7,
        ),
        check(
            "bot traffic (no handover)", ">= 0.9 x floor", bot, None if bot is None else bot >= 0.9
        ),
        check(
            "relay p99 at half the max ingest rate",
            "<= 25 ms",
            relay,
            None if relay is None else relay <= 25,
        ),
        check(
            "handover opening (slowest sample)",
            "<= 300 ms",
            opening,
            None if opening is None else opening <= 300,
        ),
        check(
            "Redis per ACTIVE idle handover",
            "<= 1024 bytes",
            mem,
            None if mem is None else mem <= 1024,
        ),
    ]


def run(profile: Profile, status: Status) -> dict[str, Any]:
    """Runs every phase and returns the result document."""
    bench = Bench(profile, status)
    started = datetime.now(UTC)
    t0 = mono()
    ok = False
    try:
        stages = (
            bench.start,
            bench.setup_conversations,
            bench.measure_idle_rss,
            bench.phase_opening,
            bench.phase_relay,
            bench.phase_ingest,
            bench.phase_memory,
            bench.rss_figures,
            bench.background_figure,
        )
        for number, stage in enumerate(stages, 1):
            status.stage = f"{number}/{len(stages)}"  # shown before every phase line
            stage()
        ok = True
    except BaseException:
        status.finish()
        print(bench.logs_tail(), file=sys.stderr)
        raise
    finally:
        bench.stop()
        if ok:
            bench.cleanup()
        else:
            print(f"bench: logs kept in {bench.tmp / 'logs'}", file=sys.stderr)
    return {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(mono() - t0, 1),
        "profile": asdict(replace(profile)),
        "machine": machine_info(),
        "mesh_settings": {**MESH_SETTINGS, "CCBRIDGE_RECONCILE_INTERVAL_S": "3600"},
        "redis": {
            "version": getattr(bench, "redis_version", None),
            "persistence": "appendonly yes, appendfsync everysec",
        },
        "figures": bench.figures,
        "goals": goals(bench.figures),
        "details": bench.results,
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"
