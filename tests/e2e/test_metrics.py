"""Every process of the real mesh serves its Prometheus series (docs/operations.md,
"Metrics"): one handover end to end, then a scrape of each process checks every series
it should serve is there, with the values the handover implies, and that no label holds
the conversation id or the end user's number."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.mesh import Mesh, wait_for
from tests.support.metric_names import (
    BACKLOG,
    BACKLOG_AGE,
    DEAD_LETTER_AGE,
    DEAD_LETTERS,
    DELIVERIES,
    FARSIDE_DURATION,
    FARSIDE_REQUESTS,
    GATEWAY_LAST_WEBHOOK,
    GRPC_CLIENT_HANDLED,
    GRPC_SERVER_HANDLED,
    GRPC_SERVER_SECONDS,
    HANDOVERS,
    LEASE_TAKEOVERS,
    OPENING_DURATION,
    OPENINGS,
    PROCESSES,
    REDIS_DURATION,
    SERIES_BY_PROCESS,
)

pytestmark = pytest.mark.e2e

END_USER = "385981234567"  # tests/support/mesh.py's end user


def _scrape(mesh: Mesh, process: str) -> dict[str, list[Sample]]:
    answer = httpx.get(f"http://127.0.0.1:{mesh.metrics_ports[process]}/metrics", timeout=10)
    assert answer.status_code == 200, (process, answer.text[:200])
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    families: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(answer.text):
        # The text format names a counter's family with its _total.
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = list(family.samples)
    return families


def _value(samples: list[Sample], suffix: str = "", **labels: str) -> float:
    """The sum of the samples whose labels include ``labels``: a counter's ``_total``
    or a gauge's samples, or (``suffix``) a histogram's ``_count``, never ``_created``."""
    return sum(
        s.value
        for s in samples
        if not s.name.endswith("_created")
        and (s.name.endswith(suffix) if suffix else not s.name.endswith(("_bucket", "_sum")))
        and labels.items() <= s.labels.items()
    )


def _labels(families: dict[str, list[Sample]]) -> Iterator[str]:
    for samples in families.values():
        for sample in samples:
            yield from sample.labels.values()


@pytest.fixture(scope="module")
def handover(mesh: Mesh) -> str:
    """One handover: opened, an end-user message to the CCaaS, an agent reply back."""
    cid = str(mesh.conversation(history=3)["id"])
    assert mesh.escalate(cid).status_code == 202
    case = wait_for("the case to open", lambda: mesh.case_for(cid))
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    assert mesh.send(cid, "hello from the end user")["webhook_status"] == 200
    wait_for("the message at the CCaaS", lambda: mesh.customer_texts(cid))
    reply = mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/reply", json={"text": "Hi"}).json()
    assert reply["bridgeStatus"] == 200
    wait_for("the reply at Infobip", lambda: mesh.agent_messages(cid))
    return cid


def test_every_process_serves_its_series(mesh: Mesh, handover: str) -> None:
    scraped = {process: _scrape(mesh, process) for process in PROCESSES}
    for process, names in SERIES_BY_PROCESS.items():
        missing = sorted(set(names) - set(scraped[process]))
        assert not missing, f"{process} does not serve {missing}"

    session = scraped["session"]
    assert _value(session[OPENINGS], outcome="ok") >= 1
    assert _value(session[OPENING_DURATION], "_count") >= 1
    assert _value(session[HANDOVERS], state="ACTIVE") >= 1
    for direction in ("inbound", "outbound"):
        assert _value(session[DELIVERIES], direction=direction, outcome="delivered") >= 1
        assert [s.value for s in session[BACKLOG] if s.labels["direction"] == direction]
        assert [s.value for s in session[BACKLOG_AGE] if s.labels["direction"] == direction]
    assert [s.value for s in session[DEAD_LETTERS]] and [s.value for s in session[DEAD_LETTER_AGE]]
    assert _value(session[FARSIDE_REQUESTS], system="infobip", operation="create message") >= 1
    assert _value(session[FARSIDE_DURATION], "_count", system="infobip") >= 1
    assert _value(session[REDIS_DURATION], "_count", component="session") >= 1
    assert {s.labels["kind"] for s in session[LEASE_TAKEOVERS]} >= {"inbox", "outbox"}
    session_service = "ccbridge.session.v1.SessionService"
    assert _value(session[GRPC_SERVER_HANDLED], service=session_service, code="OK") >= 1
    assert _value(session[GRPC_SERVER_SECONDS], "_count", service=session_service) >= 1
    assert _value(session[GRPC_CLIENT_HANDLED], code="OK") >= 1  # to the other components

    for process in ("history", "routing", "connector"):
        assert _value(scraped[process][GRPC_SERVER_HANDLED], code="OK") >= 1, process
        assert _value(scraped[process]["process_cpu_seconds_total"]) > 0, process
    # The connector's far side (the CCaaS's webhook) and Infobip's, as called by History.
    assert _value(scraped["connector"][FARSIDE_REQUESTS], system="webhook", status="200") >= 1
    assert _value(scraped["history"][FARSIDE_REQUESTS], system="infobip") >= 1

    gateway = scraped["gateway"]
    assert max(s.value for s in gateway[GATEWAY_LAST_WEBHOOK]) > 0
    assert _value(gateway[GRPC_CLIENT_HANDLED], service=session_service, code="OK") >= 1


def test_no_label_holds_a_conversation_id_or_personal_data(mesh: Mesh, handover: str) -> None:
    for process in PROCESSES:
        for value in _labels(_scrape(mesh, process)):
            assert handover not in value, (process, value)
            assert END_USER not in value, (process, value)
