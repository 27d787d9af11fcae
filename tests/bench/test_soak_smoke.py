"""Keeps the soak run from rotting: a short ``python -m bench.soak`` must drive every kind
of traffic and record every memory series. Its growth verdict over seconds means nothing
and is not checked here (``make soak`` runs 30 minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import slope_pct_per_10_min

ROOT = Path(__file__).resolve().parents[2]


def test_the_slope_is_relative_growth_per_10_minutes() -> None:
    flat = [(t * 60.0, 100.0) for t in range(10)]
    assert slope_pct_per_10_min(flat) == 0.0
    growing = [(t * 60.0, 100.0 + t) for t in range(11)]  # +1 per minute, mean 105
    assert abs(slope_pct_per_10_min(growing) - 10 / 105 * 100) < 1e-9
    assert slope_pct_per_10_min(flat[:2]) != slope_pct_per_10_min(flat[:2])  # NaN: too few


@pytest.mark.e2e
def test_a_short_soak_drives_everything_and_samples_memory(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--minutes",
            "0.3",
            "--sample-every-s",
            "3",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: verdict only
    (report,) = tmp_path.glob("soak-*.json")
    doc = json.loads(report.read_text())
    for kind in ("escalations", "end_user_messages", "agent_replies", "abuse_wrong_token"):
        assert doc["traffic"].get(kind, 0) > 0, doc["traffic"]
    assert len(doc["samples"]) >= 3
    assert set(doc["growth_pct_per_10_min"]) == {
        *(f"rss_{name}_kib" for name in ("gateway", "session", "history", "routing", "connector")),
        "redis_used_memory_bytes",
    }
