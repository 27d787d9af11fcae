"""Validates what the Infobip simulator recorded (``--record``) against Infobip's
published OpenAPI documents in ``<repo>/../shared/reference/infobip-openapi`` (the copy
beside the checkout, as CI has it): every request the mesh sent, every answer and every
webhook the simulator produced. Without that folder the vendored extract is used (a test
checks the two agree when both are there)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from ccbridge.simulators.infobip.contract import Contract, extract_from_files
from ccbridge.simulators.infobip.recorder import read_records

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = REPO_ROOT.parent / "shared" / "reference" / "infobip-openapi"


@cache
def published_contract() -> Contract:
    """The contract built from the published documents themselves (else the vendored one)."""
    if DOCUMENTS.is_dir():
        return Contract(extract_from_files(DOCUMENTS))
    return Contract()


def violations(records: Iterable[Mapping[str, Any]], contract: Contract | None = None) -> list[str]:
    """One line per request, answer or webhook that the documents do not allow."""
    contract = contract or published_contract()
    found: list[str] = []
    for record in records:
        if record.get("kind") == "webhook":
            body = record.get("body")
            if record.get("webhook") == "event":
                errors = contract.webhook_errors(body)
            else:
                errors = contract.message_errors(body)
            if errors:
                found.append(f"{record.get('webhook')} webhook: {errors}")
            continue
        method, path = str(record.get("method")), str(record.get("path"))
        matched = contract.match(method, path)
        if matched is None:
            found.append(f"{method} {path}: not an operation of the documents")
            continue
        op, params = matched
        request = contract.request_errors(
            op,
            params,
            record.get("query") or {},
            record.get("body"),
            has_body=bool(record.get("hasBody")),
        )
        if request:
            found.append(f"request {method} {op.path}: {request}")
        read_only = contract.read_only_sent(op, record.get("body"))
        if read_only:
            found.append(f"request {method} {op.path}: sends read-only fields {read_only}")
        answer = contract.response_errors(op, int(record["status"]), record.get("answer"))
        if answer:
            found.append(f"answer {record['status']} to {method} {op.path}: {answer}")
    return found


def assert_conforms(record_path: Path) -> int:
    """Raises AssertionError listing the violations in ``record_path``; returns how many
    records were checked."""
    records = read_records(record_path)
    problems = violations(records)
    if problems:
        shown = "\n".join(problems[:30])
        raise AssertionError(
            f"{len(problems)} of {len(records)} recorded Infobip exchanges violate the "
            f"published documents:\n{shown}"
        )
    return len(records)
