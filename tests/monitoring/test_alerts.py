"""The alert rules and the dashboard of k8s/components/monitoring, offline: ``promtool check
rules`` and ``promtool test rules`` (tests/monitoring/rules_test.yaml: every alert fires
on its input series and stays quiet on a near miss), the dashboard's queries through
promtool's parser, and every runbook link landing on a section of docs/operations.md.

promtool comes with Debian's ``prometheus`` package; .ci/run installs it as root. Where it
is missing the promtool tests skip and say how to install it. (tests/e2e/
test_monitoring_metrics.py checks every metric named here against a real scrape.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import (
    ROOT,
    alerts,
    dashboard,
    grouping_labels,
    queries,
    rule_groups,
    selectors,
    write_rule_file,
)

RULES_TEST = Path(__file__).with_name("rules_test.yaml")
OPERATIONS = ROOT / "docs" / "operations.md"
HOW_TO = (
    "promtool is not installed: `sudo apt-get install prometheus` (Debian's package "
    "brings /usr/bin/promtool; the server need not run — `sudo systemctl disable --now "
    "prometheus`); .ci/run does this when it runs as root"
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(HOW_TO)
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules(promtool: str, tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path / "rules.yaml")
    done = _run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in yaml.safe_load(rules.read_text())["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_unit_tests_of_every_alert_pass(promtool: str, tmp_path: Path) -> None:
    write_rule_file(tmp_path / "rules.yaml")
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = _run(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_rule_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    # The unit tests can fail: with the threshold of one alert moved, promtool says so.
    groups = rule_groups()
    rule = next(
        r for g in groups for r in g["rules"] if r.get("alert") == "CcbridgeOpeningsFailing"
    )
    assert "> 0.1\n" in rule["expr"]
    rule["expr"] = rule["expr"].replace("> 0.1\n", "> 0.5\n")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = _run(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "alertname: CcbridgeOpeningsFailing" in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_the_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    # promtool has no query linter: the queries go through its parser as recording rules.
    panel_queries = [q for q in queries() if q.where.startswith("panel ")]
    assert len(panel_queries) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.expr}
                    for i, q in enumerate(panel_queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = _run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


def test_every_runbook_link_lands_on_a_section_of_the_operations_doc() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for alert in alerts():
        path, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert path == "docs/operations.md"
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in {path}"


def test_the_dashboard_shows_what_the_alerts_watch() -> None:
    # Each metric an alert is about has a panel.
    def metrics(where: str) -> set[str]:
        return {m for q in queries() if q.where.startswith(where) for m, _ in selectors(q.expr)}

    missing = metrics("alert ") - metrics("panel ")
    assert missing == set()
    assert dashboard()["uid"] == "ccbridge-overview"


def test_selectors_finds_metric_names_and_matched_labels() -> None:
    expr = """
        # a comment naming words like up and metric
        sum by (namespace, direction) (rate(a_total{code=~"5..|x", b!="y"}[5m]))
          / on (namespace) group_left (direction) max without (pod) (b_seconds_bucket)
          > 0.1 and on (namespace) c{state="ACTIVE"} unless absent(d) offset 5m
    """
    assert selectors(expr) == [
        ("a_total", frozenset({"code", "b"})),
        ("b_seconds_bucket", frozenset()),
        ("c", frozenset({"state"})),
        ("d", frozenset()),
    ]
    assert grouping_labels(expr) == {"namespace", "direction", "pod"}
