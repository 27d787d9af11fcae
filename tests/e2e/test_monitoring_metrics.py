"""Every metric the alert rules and the Grafana dashboard name (k8s/components/monitoring)
exists in a real scrape of the running mesh: each process's /metrics (the gRPC
components on their own metrics port, the gateway on its HTTP port), after a handover
went both ways. Metrics that come from elsewhere (Prometheus itself, kube-state-metrics)
are listed explicitly. The label names the queries match on or group by exist on the
scraped series too, so a renamed label fails here, not at 3 a.m."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mesh import Mesh, wait_for
from tests.support.monitoring import grouping_labels, queries, selectors

pytestmark = pytest.mark.e2e

# Series no ccbridge process exports, each with where it comes from.
EXTERNAL: Mapping[str, str] = {
    "up": "Prometheus: one per scrape target",
    "ALERTS": "Prometheus: the state of each alert",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
}
# Labels Prometheus adds at scrape (the PodMonitor's target labels), and histograms' le.
TARGET_LABELS = frozenset({"job", "namespace", "pod", "container", "instance", "endpoint"})
_TYPE = re.compile(r"^# TYPE (\S+) (\w+)$", re.MULTILINE)
_SUFFIXES = {
    "counter": ("", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "untyped": ("",),
}


class Scrape:
    """The union of every process's /metrics: declared names and each series' labels."""

    def __init__(self) -> None:
        self.declared: set[str] = set()
        self.labels: dict[str, set[str]] = defaultdict(set)
        self.by_process: dict[str, set[str]] = {}

    def add(self, process: str, text: str) -> None:
        for name, kind in _TYPE.findall(text):
            stem = name.removesuffix("_total") if kind == "counter" else name
            for suffix in _SUFFIXES[kind]:
                self.declared.add(name if suffix == "" else stem + suffix)
        names = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.labels[sample.name] |= set(sample.labels)
                names.add(sample.name)
        self.by_process[process] = names


def _handover_both_ways(mesh: Mesh) -> None:
    cid = mesh.conversation(history=3)["id"]
    assert mesh.escalate(cid, tags=["vip"]).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    assert mesh.send(cid, "hello from the customer")["webhook_status"] == 200
    wait_for("the message at the CCaaS", lambda: mesh.customer_texts(cid))
    case = wait_for("the case", lambda: mesh.case_for(cid))
    reply = mesh.ccaas.post(
        f"/_sim/cases/{case['caseId']}/reply", json={"text": "hi", "agentName": "Alice"}
    )
    assert reply.json()["bridgeStatus"] == 200
    wait_for("the reply at Infobip", lambda: mesh.agent_messages(cid))


@pytest.fixture(scope="module")
def scrape(mesh: Mesh) -> Scrape:
    _handover_both_ways(mesh)
    result = Scrape()
    assert set(mesh.metrics_ports) >= {"gateway", "session", "history", "routing", "connector"}
    for process, port in mesh.metrics_ports.items():
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert answer.status_code == 200, process
        result.add(process, answer.text)
    return result


def test_every_process_serves_its_process_metrics(scrape: Scrape) -> None:
    # The dashboard's "Processes" row and the no-webhook alert read these of every pod.
    for process, names in scrape.by_process.items():
        assert {"process_resident_memory_bytes", "process_start_time_seconds"} <= names, process


def test_every_metric_the_alerts_and_the_dashboard_name_is_scraped(scrape: Scrape) -> None:
    missing = []
    for query in queries():
        for metric, _ in selectors(query.expr):
            if metric not in EXTERNAL and metric not in scrape.declared:
                missing.append(f"{query.where}: {metric}")
    assert missing == []


def test_the_external_list_holds_only_what_the_queries_use(scrape: Scrape) -> None:
    used = {m for q in queries() for m, _ in selectors(q.expr)}
    assert set(EXTERNAL) <= used
    assert not set(EXTERNAL) & scrape.declared


def test_every_label_the_queries_use_is_on_the_scraped_series(scrape: Scrape) -> None:
    problems = []
    for query in queries():
        found = selectors(query.expr)
        if any(metric in EXTERNAL for metric, _ in found):
            continue  # their labels are kube-state-metrics' and Prometheus'
        known = set(TARGET_LABELS | {"le"})
        for metric, matched in found:
            if metric not in scrape.labels:
                problems.append(f"{query.where}: no series of {metric} after a handover")
                continue
            known |= scrape.labels[metric]
            unknown = matched - TARGET_LABELS - scrape.labels[metric]
            if unknown:
                problems.append(f"{query.where}: {metric} has no label {sorted(unknown)}")
        unknown_groups = grouping_labels(query.expr) - known
        if unknown_groups:
            problems.append(f"{query.where}: groups by unknown labels {sorted(unknown_groups)}")
    assert problems == []
