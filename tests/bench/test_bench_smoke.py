"""Keeps the benchmark from rotting: a seconds-long ``python -m bench --smoke`` run with
tiny counts must complete and write a result with every figure. No timing assertions:
the figures' values are not checked, only that each was measured."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FIGURES = [
    "ingest_max_rate",
    "ingest_accept_rate",
    "ingest_floor_max_rate",
    "ingest_ratio_to_floor",
    "ingest_accept_ratio_to_floor",
    "ingest_relay_delivered_rate",
    "ingest_p50_at_50pct",
    "ingest_p99_at_50pct",
    "ingest_p50_at_90pct",
    "ingest_p99_at_90pct",
    "ingest_floor_p50_at_50pct",
    "ingest_floor_p99_at_90pct",
    "bot_max_rate",
    "bot_floor_max_rate",
    "bot_ratio_to_floor",
    "bot_p50_at_50pct",
    "bot_p99_at_50pct",
    "bot_p50_at_90pct",
    "bot_p99_at_90pct",
    "bot_floor_p99_at_90pct",
    "relay_inbound_p50",
    "relay_inbound_p99",
    "relay_inbound_p50_at_half_max",
    "relay_inbound_p99_at_half_max",
    "relay_agent_p50",
    "relay_agent_p99",
    "opening_p50",
    "opening_max",
    "memory_per_idle_handover",
    "memory_per_queued_message_first",
    "memory_per_queued_message_next",
    "memory_per_delivered_message_retained",
    "memory_per_transcript_message",
    "background_cpu",
    *(
        f"rss_{when}_{name}"
        for when in ("idle", "load")
        for name in ("gateway", "session", "history", "routing", "connector", "redis")
    ),
]


@pytest.mark.timeout(240)
def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert list(tmp_path.glob("2*.json")), "the timestamped result is missing"
    missing = [name for name in FIGURES if name not in doc["figures"]]
    assert not missing, missing
    for name in FIGURES:
        figure = doc["figures"][name]
        assert figure["unit"] and figure["how"], name
        value = figure["value"]
        assert isinstance(value, int | float) and not math.isnan(value), (name, value)
    assert {g["goal"] for g in doc["goals"]} and all("met" in g for g in doc["goals"])
    assert doc["machine"]["nproc"] and doc["machine"]["python"]
    assert "goals:" in run.stdout  # the table was printed
