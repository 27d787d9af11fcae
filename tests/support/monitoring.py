"""The monitoring component's alert rules and dashboard queries, read from the repository
(k8s/components/monitoring), and the metric names a PromQL query selects.

PromQL is not parsed in full: the queries are ccbridge's own, and :func:`selectors`
understands what they use (selectors with matchers, ranges, functions, aggregations
with by/without, vector matching with on/ignoring/group_left/group_right, set operators).
promtool checks their syntax (tests/monitoring/test_alerts.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "components" / "monitoring"
RULE_FILE = MONITORING / "prometheusrule.yaml"
DASHBOARD_FILE = MONITORING / "dashboard.json"

# Grafana's variables, replaced by values a plain PromQL parser accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$namespace": "ccbridge",
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_COMMENT = re.compile(r"#[^\n]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:.])\d[A-Za-z0-9_.]*")  # 0.95, 5m (offset), 1e3
_RANGE = re.compile(r"\[[^\]]*\]")
_STRING = r'"(?:[^"\\]|\\.)*"'
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*(\{(?:[^}\"]|" + _STRING + r")*\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*" + _STRING)


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (an alert or a dashboard panel)."""

    where: str
    expr: str


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule (the only copy of the rules)."""
    doc = yaml.safe_load(RULE_FILE.read_text())
    groups: list[dict[str, Any]] = doc["spec"]["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def write_rule_file(path: Path) -> Path:
    """The rule groups as a plain Prometheus rules file (what promtool reads)."""
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def substitute(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def queries() -> list[Query]:
    """Every alert expression and every dashboard panel query."""
    found = [Query(f"alert {r['alert']}", str(r["expr"])) for r in alerts()]
    for panel in dashboard()["panels"]:
        for target in panel.get("targets") or ():
            found.append(
                Query(f"panel {panel['title']!r} {target['refId']}", substitute(target["expr"]))
            )
    return found


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """(metric name, label names of its matchers) of every series selector in ``expr``."""
    text = _NUMBER.sub(" ", _RANGE.sub(" ", _GROUPING.sub(" ", _COMMENT.sub("", expr))))
    found = []
    for match in _SELECTOR.finditer(text):
        name, braces = match.group(1), match.group(2)
        if not name and not braces:
            continue
        labels = frozenset(m.group(1) for m in _MATCHER.finditer(braces or ""))
        if name is None:
            named = [m for m in _MATCHER.finditer(braces or "") if m.group(1) == "__name__"]
            if not named:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            continue
        rest = text[match.end() :].lstrip()
        if not braces and (rest.startswith("(") or name.lower() in _KEYWORDS):
            continue  # a function, an aggregation or a keyword
        found.append((name, labels - {"__name__"}))
    return found


def grouping_labels(expr: str) -> frozenset[str]:
    """The label names of every by/without/on/ignoring/group_left/group_right clause."""
    return frozenset(
        label.strip()
        for clause in _GROUPING.finditer(_COMMENT.sub("", expr))
        for label in clause.group(1).split(",")
        if label.strip()
    )
