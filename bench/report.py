"""Renders a bench result: the terminal table and the PNG chart of latency against
offered load (matplotlib, from the ``bench`` extra; skipped with a note without it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _num(value: Any, digits: int = 1) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _value(doc: dict[str, Any], name: str) -> Any:
    return doc["figures"].get(name, {}).get("value")


def _pair(doc: dict[str, Any], first: str, second: str, unit: str, digits: int) -> str:
    return f"{_num(_value(doc, first), digits)}/{_num(_value(doc, second), digits)} {unit}"


def table(doc: dict[str, Any]) -> str:
    """The human summary: figures with units, ratios to the floor and the goals."""
    m = doc["machine"]
    lines = [
        f"ccbridge bench ({doc['profile']['name']}) — {m['nproc']} cores, {m['cpu_model']}, "
        f"Python {m['python']}, loopback, load generator on the same machine; "
        f"{doc['duration_s']} s",
        f"Redis {doc['redis'].get('version')} ({doc['redis']['persistence']}); CPU used by "
        f"other processes during the load runs: {_num(_value(doc, 'background_cpu'), 2)} cores",
        "mesh settings that differ from the defaults: "
        + (", ".join(f"{k}={v}" for k, v in doc.get("mesh_settings", {}).items()) or "none"),
        "",
        f"{'figure':<52}{'mesh':>16}{'floor':>16}{'ratio':>9}",
        "-" * 93,
    ]

    def row(label: str, mesh: str, floor: str = "", ratio: str = "") -> None:
        lines.append(f"{label:<52}{mesh:>16}{floor:>16}{ratio:>9}")

    for name, label in (("ingest", "ingest, ACTIVE handover"), ("bot", "bot traffic, no handover")):
        mesh, floor = _value(doc, f"{name}_max_rate"), _value(doc, f"{name}_floor_max_rate")
        ratio = _value(doc, f"{name}_ratio_to_floor")
        row(
            f"{label}: max sustained rate",
            f"{_num(mesh, 0)} /s",
            f"{_num(floor, 0)} /s",
            f"{_num(ratio, 2)}×",
        )
        if name == "ingest":
            row(
                "  accepted (closed loop) / relayed to the CCaaS",
                f"{_num(_value(doc, 'ingest_accept_rate'), 0)}/"
                f"{_num(_value(doc, 'ingest_relay_delivered_rate'), 0)} /s",
                "",
                f"{_num(_value(doc, 'ingest_accept_ratio_to_floor'), 2)}×",
            )
        for pct in (50, 90):
            lat = [
                _value(doc, f"{name}_{t}{q}_at_{pct}pct")
                for t in ("", "floor_")
                for q in ("p50", "p99")
            ]
            row(
                f"  p50 / p99 latency at {pct}% of max",
                f"{_num(lat[0], 2)}/{_num(lat[1], 2)} ms",
                f"{_num(lat[2], 2)}/{_num(lat[3], 2)} ms",
            )
    rate = doc["details"].get("relay", {}).get("rate_per_s")
    row(
        f"relay end user → CCaaS p50 / p99 at {_num(rate, 0)}/s",
        _pair(doc, "relay_inbound_p50", "relay_inbound_p99", "ms", 2),
    )
    row(
        "relay end user → CCaaS p50 / p99 at 50% of max sust.",
        f"{_num(_value(doc, 'relay_inbound_p50_at_half_max'), 2)}/"
        f"{_num(_value(doc, 'relay_inbound_p99_at_half_max'), 2)} ms",
    )
    row(
        f"relay agent → Infobip p50 / p99 at {_num(rate, 0)}/s",
        f"{_num(_value(doc, 'relay_agent_p50'), 2)}/{_num(_value(doc, 'relay_agent_p99'), 2)} ms",
    )
    opening = doc["details"].get("opening", {})
    row(
        f"handover opening, {opening.get('history_messages')} msgs, p50 / max",
        f"{_num(_value(doc, 'opening_p50'), 0)}/{_num(_value(doc, 'opening_max'), 0)} ms",
    )
    row("Redis per ACTIVE idle handover", f"{_num(_value(doc, 'memory_per_idle_handover'), 0)} B")
    row(
        "Redis per queued message (first / next)",
        f"{_num(_value(doc, 'memory_per_queued_message_first'), 0)}/"
        f"{_num(_value(doc, 'memory_per_queued_message_next'), 0)} B",
    )
    row(
        "Redis per delivered message (dedupe id kept)",
        f"{_num(_value(doc, 'memory_per_delivered_message_retained'), 0)} B",
    )
    row(
        "Redis per transcript message (dedupe ids)",
        f"{_num(_value(doc, 'memory_per_transcript_message'), 0)} B",
    )
    rss = [
        name.removeprefix("rss_idle_") for name in doc["figures"] if name.startswith("rss_idle_")
    ]
    row("RSS idle / under load (MiB)", "")
    for name in rss:
        row(
            f"  {name}",
            f"{_num(_value(doc, f'rss_idle_{name}'))}/{_num(_value(doc, f'rss_load_{name}'))}",
        )
    lines += ["", "goals:"]
    for goal in doc["goals"]:
        met = {True: "met", False: "NOT met", None: "n/a"}[goal["met"]]
        lines.append(
            f"  {goal['goal']:<42} {goal['target']:<16} measured "
            f"{_num(goal['measured'], 2):>8}  {met}"
        )
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> str | None:
    """Writes the PNG; returns None, or why no chart was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, kind, title in (
        (axes[0], "active", "ACTIVE handover (ingest)"),
        (axes[1], "bot", "no handover (bot traffic)"),
    ):
        data = doc["details"].get(f"ingest_{kind}", {})
        for target, color in (("mesh", "tab:blue"), ("floor", "tab:gray")):
            levels = data.get(target, {}).get("levels", [])
            if not levels:
                continue
            xs = [lv["offered_rate"] for lv in levels]
            for q, style in (("p50", "-o"), ("p99", "--s")):
                ax.plot(
                    xs,
                    [lv["latency_ms"][q] for lv in levels],
                    style,
                    color=color,
                    label=f"{target} {q}",
                )
            ax.axvline(
                data[target].get("sustained_rate", data[target]["closed"]["achieved_rate"]),
                color=color,
                linestyle=":",
                linewidth=1,
                label=f"{target} max sustained",
            )
        ax.set_title(title)
        ax.set_xlabel("offered load (webhooks/s, open loop)")
        ax.set_ylabel("latency: issue → 200 answer (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = doc["machine"]
    fig.suptitle(
        f"ccbridge gateway latency vs offered load — {m['nproc']} cores, loopback, "
        f"generator included ({doc['started_at']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
