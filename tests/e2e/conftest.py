"""End-to-end fixtures: the whole mesh as separate processes (tests/support/mesh.py),
with routing rules that exercise escalation tags and Infobip's own tags and metadata."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.mesh import Mesh, running_mesh

pytestmark = pytest.mark.e2e

# Routing by escalation tags and by what Infobip itself holds (Get Tags, Get Metadata).
ROUTING_RULES = """
default: {connector: webhook, queue: general}
rules:
  - name: vip
    match: {tags_any: [vip]}
    route: {queue: vip, priority: 10, skills: [vip]}
  - name: billing-de
    match: {tags_any: [billing], metadata: {country: DE}}
    route: {queue: billing-de, priority: 5, skills: [billing, german]}
"""


@pytest.fixture(scope="module")
def mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    rules = tmp_path_factory.mktemp("routing") / "rules.yaml"
    rules.write_text(ROUTING_RULES)
    log_dir = Path(tmp_path_factory.mktemp("mesh-logs"))
    # With the metrics listeners: tests/e2e/test_metrics.py and test_monitoring_metrics.py
    # scrape them.
    with running_mesh(
        redis_url, log_dir, {"CCBRIDGE_ROUTING_RULES": str(rules)}, metrics=True
    ) as handle:
        yield handle


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed end-to-end test shows the tail of every component's log."""
    report = yield
    mesh_obj = getattr(item, "funcargs", {}).get("mesh")
    if report.failed and isinstance(mesh_obj, Mesh):
        for name, proc in mesh_obj.group.procs.items():
            report.sections.append((f"{name} log (tail)", proc.tail(30)))
    return report
