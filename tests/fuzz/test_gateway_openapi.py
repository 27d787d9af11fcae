"""Schemathesis against the gateway's own ``/openapi.json``: the real gateway process
(``python -m ccbridge.gateway``, uvicorn on loopback) in front of the gateway tests'
Session and Connector doubles, every case sent with valid credentials (the escalation
bearer token, the webhook path token, an HMAC signature over the exact body sent).

Positive and negative cases of every operation. Checks: no 5xx, every status, content
type, header and body as the document says, and the process never dies nor logs an
error. Under ``make fuzz`` (``CCBRIDGE_FUZZ_EXAMPLES=10000``) rounds run until that many
cases were sent, and the gateway's RSS must stay flat after warm-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import given
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ccbridge.services.connector.adapters.webhook_signature import signed_headers
from tests.fuzz.conftest import (
    fuzz_examples,
    fuzz_settings,
    gateway_process,
    long_run,
    rss_bytes,
)
from tests.gateway.conftest import ESCALATION_TOKEN, WEBHOOK_TOKEN, Peers, sign_hex

pytestmark = pytest.mark.fuzz

SAMPLE = 300  # cases in the normal test run
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Growth of the gateway's RSS allowed between the end of the first round (warm: every
# code path, pool and cache touched) and the end of the run.
MAX_RSS_GROWTH = 16 * 1024 * 1024
# Connector names the Connector double answers with an error on purpose (UNAVAILABLE
# would be a documented 503, UNAUTHENTICATED a 401): renamed so that every case reaches
# a healthy peer that accepts it.
DOUBLE_ERROR_CONNECTORS = {"down", "reject"}
CONNECTOR_SECRET = "ccaas-webhook-secret-0123456789"


@dataclass
class Tally:
    """What the run sent and saw."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


def _body_bytes(kwargs: dict[str, Any]) -> bytes | None:
    """The exact bytes to send (and sign): JSON as requests would write it."""
    if "json" in kwargs:
        return json.dumps(kwargs.pop("json"), allow_nan=False).encode()
    data = kwargs.pop("data", None)
    if data is None:
        return None
    return data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass")


def send(case: Case, base_url: str, http: requests.Session) -> requests.Response:
    """Sends ``case`` with valid credentials for its operation."""
    operation = case.operation.label
    if operation == "POST /webhooks/infobip/{token}":
        case.path_parameters = {**(case.path_parameters or {}), "token": WEBHOOK_TOKEN}
    if operation == "POST /webhooks/ccaas/{connector}":
        params = case.path_parameters or {}
        name = str(params.get("connector", ""))
        if name in DOUBLE_ERROR_CONNECTORS or len(name) % 2:
            # Half the cases to the webhook connector, whose signature the gateway verifies.
            case.path_parameters = {**params, "connector": "webhook"}
    kwargs = case.as_transport_kwargs(base_url=base_url)
    headers: dict[str, str] = dict(kwargs.pop("headers", {}) or {})
    body = _body_bytes(kwargs)
    if case.operation.path.startswith("/v1/"):
        headers["Authorization"] = f"Bearer {ESCALATION_TOKEN}"
    if operation == "POST /webhooks/ccaas/{connector}":
        headers.update(signed_headers(CONNECTOR_SECRET, body or b""))
    if operation == "POST /webhooks/infobip/events":
        headers.pop("Authorization", None)
        headers["X-Hub-Signature-256"] = "sha256=" + sign_hex(body or b"")
    return http.request(
        kwargs.pop("method"),
        kwargs.pop("url"),
        headers=headers,
        data=body,
        params=kwargs.pop("params", None),
        timeout=30,
        allow_redirects=False,
    )


def run_operation(
    operation: APIOperation,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    http: requests.Session,
    tally: Tally,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @fuzz_settings(examples)
    def fuzz(case: Case) -> None:
        response = send(case, base_url, http)
        tally.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    fuzz()


def has_inputs(operation: APIOperation) -> bool:
    return operation.method.upper() == "POST" or "{" in operation.path


def run_all(base_url: str, budget: int, tally: Tally, warm_rss: list[int], pid: int) -> None:
    """Rounds over every operation (positive, then negative cases) until ``budget`` cases
    were sent (one round in the short sample)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if has_inputs(op)]
    per_mode = max(1, budget // (10 * len(fuzzed)) if long_run() else budget // (2 * len(fuzzed)))
    with requests.Session() as http:
        while True:
            for operation in operations:
                if not has_inputs(operation):
                    run_operation(operation, GenerationMode.POSITIVE, 1, base_url, http, tally)
                    continue
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    run_operation(operation, mode, per_mode, base_url, http, tally)
                if long_run():
                    print(f"fuzz: gateway openapi {tally.sent}/{budget} cases", file=sys.stderr)
            if not warm_rss:
                warm_rss.append(rss_bytes(pid))
            if not long_run() or tally.sent >= budget:
                return


async def test_openapi_fuzz_with_valid_credentials(fuzz_peers: Peers, tmp_path: Any) -> None:
    budget = fuzz_examples(SAMPLE)
    log = tmp_path / "gateway.log"
    tally = Tally()
    warm_rss: list[int] = []
    env = fuzz_peers.env(CCBRIDGE_WEBHOOK_CONNECTOR_SECRET=CONNECTOR_SECRET)
    async with gateway_process(env, log) as gateway:
        start_rss = rss_bytes(gateway.pid)
        # Synchronous schemathesis in a thread: this loop keeps serving the peer doubles.
        await asyncio.to_thread(run_all, gateway.base_url, budget, tally, warm_rss, gateway.pid)
        end_rss = rss_bytes(gateway.pid)
        assert gateway.alive()
    logs = log.read_text()
    print(
        f"fuzz: gateway openapi: {tally.sent} cases, statuses {sorted(tally.statuses.items())}, "
        f"RSS start {start_rss / 2**20:.1f} MiB, warm {warm_rss[0] / 2**20:.1f} MiB, "
        f"end {end_rss / 2**20:.1f} MiB",
        file=sys.stderr,
    )
    assert not [status for status in tally.statuses if status >= 500], tally.statuses
    # Valid credentials on every case: a 401 means this suite no longer signs as the
    # gateway verifies (update send()), not that the gateway is right to refuse.
    assert 401 not in tally.statuses, tally.statuses
    assert "Traceback" not in logs and '"level": "ERROR"' not in logs, logs[-4000:]
    assert tally.sent >= (budget if long_run() else 50)
    if long_run():
        assert end_rss - warm_rss[0] < MAX_RSS_GROWTH, (warm_rss[0], end_rss)
