"""``python -m bench.soak [--minutes 30]`` (``make soak``): memory stays flat under
abusive traffic.

Starts the mesh as the benchmark does (its own Redis with AOF, both simulators, the five
components as processes), with short retentions so that a steady state is reached within
minutes, then for ``--minutes`` drives, at a steady ``--rate``, a mix of real handovers
(create, escalate, messages both ways, close from either side) and abuse (bad
signatures, wrong tokens, oversized and malformed bodies, unknown conversations that end
FAILED, replayed messages). Every 30 s it samples the RSS of each component and Redis's
``used_memory``. After a warm-up (the first third), the growth of each series is the
slope of a least-squares line over the samples, per 10 minutes, relative to the series'
mean: the run passes when every series grows less than 1 % per 10 minutes. Results:
``bench/results/soak-<stamp>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness import ROOT, Status, mono
from bench.run import FULL, Bench
from ccbridge.services.connector.adapters.webhook_signature import signed_headers
from ccbridge.services.local.run import ORDER

# Short retentions: what a 30-day default keeps for operators would otherwise pile up
# for the whole run and hide (or fake) a leak.
SOAK_SETTINGS = {
    "CCBRIDGE_CLOSED_RETENTION_S": "60",
    "CCBRIDGE_FAILED_RETENTION_S": "60",
    "CCBRIDGE_DEAD_LETTER_RETENTION_S": "60",
    "CCBRIDGE_DEDUPE_TTL_S": "120",
    "CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S": "60",  # must stay below the dedupe TTL
    "CCBRIDGE_RECONCILE_INTERVAL_S": "10",
    "CCBRIDGE_OPEN_MAX_ATTEMPTS": "1",
}
LIMIT_PCT_PER_10_MIN = 1.0


def slope_pct_per_10_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per 10 minutes, in % of the mean."""
    n = len(points)
    if n < 3:
        return float("nan")
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0 or mean_v == 0:
        return float("nan")
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t
    return slope * 600 / mean_v * 100


class Soak:
    def __init__(
        self, minutes: float, status: Status, sample_every_s: float = 30.0, rate: float = 8.0
    ) -> None:
        self.minutes = minutes
        self.rate = rate  # handovers per second, each with three abusive requests
        self.sample_every_s = sample_every_s
        self.status = status
        self.bench = Bench(FULL, status, extra_env=SOAK_SETTINGS)
        self.samples: list[dict[str, float]] = []
        self.counts: dict[str, int] = {}
        self.rng = random.Random(7)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- traffic -----------------------------------------------------------------------------
    def handover(self, http: httpx.Client) -> None:
        b = self.bench
        conv = b.new_conversation(history=5)
        cid = conv["id"]
        b.escalate(cid)
        self.count("escalations")
        for i in range(3):
            http.post(f"{b.infobip}/_sim/conversations/{cid}/send", json={"text": f"m{i}"})
            self.count("end_user_messages")
        cases = http.get(f"{b.ccaas}/_sim/cases", params={"conversationId": cid}).json()["cases"]
        if cases:
            case_id = cases[0]["caseId"]
            http.post(f"{b.ccaas}/_sim/cases/{case_id}/reply", json={"text": "hello"})
            self.count("agent_replies")
            if self.rng.random() < 0.5:
                http.post(f"{b.ccaas}/_sim/cases/{case_id}/close", json={"reason": "done"})
                self.count("closed_by_agent")
                return
        http.post(f"{b.infobip}/_sim/conversations/{cid}/close")
        self.count("closed_at_infobip")

    def abuse(self, http: httpx.Client) -> None:
        b = self.bench
        gw = b.gateway
        token = b.env["CCBRIDGE_WEBHOOK_TOKEN"]
        kind = self.rng.randrange(6)
        if kind == 0:  # a big body with a bad signature
            body = b'{"results": [' + b"1," * 200_000 + b"1]}"
            http.post(
                f"{gw}/webhooks/infobip/events",
                content=body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00"},
            )
            self.count("abuse_bad_signature")
        elif kind == 1:  # a wrong path token
            http.post(f"{gw}/webhooks/infobip/{uuid.uuid4().hex}", json={"results": []})
            self.count("abuse_wrong_token")
        elif kind == 2:  # too large
            http.post(
                f"{gw}/webhooks/infobip/{token}",
                content=b"x" * (2 * 1024 * 1024),
                headers={"Content-Type": "application/json"},
            )
            self.count("abuse_oversized")
        elif kind == 3:  # garbage and deep JSON with a valid token
            http.post(
                f"{gw}/webhooks/infobip/{token}",
                content=b"[" * 5000 + b"]" * 5000,
                headers={"Content-Type": "application/json"},
            )
            self.count("abuse_malformed")
        elif kind == 4:  # a conversation Infobip does not know: the opening ends FAILED
            b.escalate(f"ghost-{uuid.uuid4().hex}")
            self.count("abuse_unknown_conversation")
        else:  # a signed CCaaS event for a case nobody has
            secret = b.env["CCBRIDGE_WEBHOOK_CONNECTOR_SECRET"]
            doc = {
                "type": "agent.message",
                "id": uuid.uuid4().hex,
                "caseId": "no-such-case",
                "message": {"id": uuid.uuid4().hex, "text": "x"},
            }
            raw = json.dumps(doc).encode()
            http.post(
                f"{gw}/webhooks/ccaas/webhook",
                content=raw,
                headers={"Content-Type": "application/json", **signed_headers(secret, raw)},
            )
            self.count("abuse_unknown_case")

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, t: float) -> None:
        b = self.bench
        assert b.sampler is not None
        rss = b.sampler.rss_now()
        row: dict[str, float] = {"t": t}
        for name in ORDER:
            row[f"rss_{name}_kib"] = float(rss.get(name, 0))
        info = b.r.info("memory")
        row["redis_used_memory_bytes"] = float(info["used_memory"])
        row["redis_keys"] = float(b.r.dbsize())
        self.samples.append(row)

    def run(self) -> dict[str, Any]:
        b = self.bench
        b.start()
        t0 = mono()
        deadline = t0 + self.minutes * 60
        next_sample = t0
        # Paced (open loop): a steady rate keeps what Redis must hold steady, so that a
        # change in memory means a leak, not a change in the driver's speed.
        period = 1.0 / self.rate
        next_round = t0
        with httpx.Client(timeout=30) as http:
            while (now := mono()) < deadline:
                if now >= next_sample:
                    self.sample(now - t0)
                    next_sample += self.sample_every_s
                if now < next_round:
                    time.sleep(min(next_round - now, deadline - now))
                    continue
                next_round = max(next_round + period, now - 1.0)  # no catch-up bursts
                try:
                    self.handover(http)
                    for _ in range(3):
                        self.abuse(http)
                except (httpx.HTTPError, RuntimeError) as exc:
                    self.count(f"driver_error_{type(exc).__name__}")
                left = deadline - mono()
                self.status.show(
                    f"{left / 60:5.1f} min left · {self.counts.get('escalations', 0)} handovers · "
                    f"{sum(v for k, v in self.counts.items() if k.startswith('abuse'))} abusive "
                    "requests"
                )
            self.sample(mono() - t0)
        return self.report()

    def report(self) -> dict[str, Any]:
        warm = self.minutes * 60 / 3
        series = [key for key in self.samples[0] if key != "t"]
        growth = {
            key: slope_pct_per_10_min(
                [(row["t"], row[key]) for row in self.samples if row["t"] >= warm]
            )
            for key in series
            if key != "redis_keys"
        }
        checked = {k: v for k, v in growth.items() if v == v}  # NaN: too few samples
        ok = bool(checked) and all(v < LIMIT_PCT_PER_10_MIN for v in checked.values())
        return {
            "schema": 1,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "minutes": self.minutes,
            "rate_per_s": self.rate,
            "achieved_rate_per_s": round(
                self.counts.get("escalations", 0) / (self.minutes * 60), 2
            ),
            "settings": SOAK_SETTINGS,
            "traffic": self.counts,
            "samples": self.samples,
            "growth_pct_per_10_min": growth,
            "limit_pct_per_10_min": LIMIT_PCT_PER_10_MIN,
            "passed": ok,
        }


def chart(doc: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (make bench installs it)"
    samples = doc["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    minutes = [row["t"] / 60 for row in samples]
    for name in ORDER:
        top.plot(minutes, [row[f"rss_{name}_kib"] / 1024 for row in samples], label=name)
    top.set_ylabel("RSS (MiB)")
    top.legend(loc="upper left", fontsize="small")
    bottom.plot(minutes, [row["redis_used_memory_bytes"] / 2**20 for row in samples], color="k")
    bottom.set_ylabel("Redis used_memory (MiB)")
    bottom.set_xlabel("minutes")
    fig.suptitle(f"soak: {doc['minutes']:g} min of handovers and abuse")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-every-s", type=float, default=30.0)
    parser.add_argument(
        "--rate", type=float, default=8.0, help="handovers per second, each with 3 abusive requests"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    status = Status()
    soak = Soak(args.minutes, status, args.sample_every_s, args.rate)
    try:
        doc = soak.run()
    except KeyboardInterrupt:
        status.finish("soak: interrupted")
        return 130
    except BaseException:
        status.finish()
        print(soak.bench.logs_tail(), file=sys.stderr)
        raise
    finally:
        soak.bench.stop()
        soak.bench.cleanup()
    status.finish()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    skipped = chart(doc, args.out / f"soak-{stamp}.png")
    if skipped:
        doc["chart_skipped"] = skipped
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(doc, indent=2, allow_nan=True))
    print(f"soak: {doc['minutes']:g} min, traffic {doc['traffic']}")
    for key, value in doc["growth_pct_per_10_min"].items():
        print(f"  {key:<32} {value:+7.3f} % per 10 min")
    print(f"soak: {'PASSED' if doc['passed'] else 'FAILED'} (limit {LIMIT_PCT_PER_10_MIN} %)")
    print(f"soak: results in {args.out / f'soak-{stamp}.json'}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
