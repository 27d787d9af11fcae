"""Zendesk's published Sunshine Conversations v2 OpenAPI document (17.12.1) as the
Zendesk simulator's contract.

The document ships unchanged as package data (``openapi/sunshine-conversations-openapi.yaml``,
a checked copy of the one in Zendesk's public ``sunshine-conversations-api-spec``
repository; :data:`SHA256` is its digest and a test checks it). :class:`Contract`
validates every request the bridge sends (the operation exists, its path and query
parameters, its JSON body), every answer the simulator gives (against the schema
documented for its status) and every webhook event it sends, with ``jsonschema``.

OpenAPI 3.0 is not JSON Schema; the readings taken here, once, for the whole document:
``nullable: true`` adds ``null`` to the type; a ``oneOf`` with a ``discriminator``
mapping selects the mapped schema by the property's value (the message ``content``
types overlap, so a plain oneOf would refuse valid bodies); deepObject query parameters
(``page[after]``, ``filter[userId]``) are collected into their object and validated as
one; ``format`` is not asserted; ``readOnly`` fields in requests are not refused.
Requests are checked open (unknown fields pass, as the document does not close its
objects).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT7

DOCUMENT = "sunshine-conversations-openapi.yaml"
SHA256 = "87c086e2dd2449ff2c1e316e7bfd33b0d555660a78e9b3ddfc6935e4f1880ee0"
_URN = "urn:zendesk:sunshine-conversations"
_METHODS = ("get", "post", "patch", "put", "delete")
# Webhook event type -> its payload schema in components/schemas.
WEBHOOK_SCHEMAS = {
    "conversation:message": "conversationMessageEvent",
    "conversation:typing": "conversationTypingEvent",
    "switchboard:passControl": "switchboardPassControl",
    "switchboard:releaseControl": "switchboardReleaseControl",
}


def document_bytes() -> bytes:
    return (
        importlib.resources.files("ccbridge.simulators.zendesk")
        .joinpath("openapi", DOCUMENT)
        .read_bytes()
    )


def _openapi30_to_schema(node: object) -> object:
    """The document's schemas read as JSON Schema draft 7 (see the module doc)."""
    if isinstance(node, list):
        return [_openapi30_to_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {key: _openapi30_to_schema(value) for key, value in node.items()}
    discriminator = out.pop("discriminator", None)
    if isinstance(discriminator, dict) and "oneOf" in out and discriminator.get("mapping"):
        prop = str(discriminator["propertyName"])
        mapping: dict[str, str] = discriminator["mapping"]
        out.pop("oneOf")
        out["required"] = sorted({*out.get("required", []), prop})
        out.setdefault("properties", {})[prop] = {"enum": sorted(mapping)}
        out["allOf"] = [
            *out.get("allOf", []),
            *(
                {
                    "if": {"properties": {prop: {"const": value}}, "required": [prop]},
                    "then": {"$ref": target},
                }
                for value, target in sorted(mapping.items())
            ),
        ]
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    out.pop("format", None)
    return out


@dataclass(frozen=True)
class Operation:
    """One documented operation."""

    method: str
    template: str  # e.g. /v2/apps/{appId}/conversations/{conversationId}/messages
    operation_id: str
    pattern: re.Pattern[str]
    parameters: tuple[Mapping[str, Any], ...]
    body: Mapping[str, Any] | None  # JSON schema of the request body
    body_required: bool
    responses: Mapping[str, Mapping[str, Any]]  # status -> JSON schema of the answer


class ContractViolation(ValueError):
    """A request or webhook the published document does not allow."""


class Contract:
    """The document, ready to validate requests and webhook events."""

    def __init__(self, raw: bytes | None = None) -> None:
        raw = raw if raw is not None else document_bytes()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(raw, Loader=loader)
        self.version = str(doc["info"]["version"])
        schemas = _openapi30_to_schema(copy.deepcopy(doc))
        assert isinstance(schemas, dict)
        self._doc = schemas
        self._registry: Registry[Any] = Registry().with_resource(
            _URN, DRAFT7.create_resource(schemas)
        )
        self.operations: list[Operation] = []
        for template, item in doc["paths"].items():
            shared = item.get("parameters", [])
            for method in _METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                body = None
                required = False
                if "requestBody" in op:
                    request = op["requestBody"]
                    required = bool(request.get("required"))
                    body = request["content"].get("application/json", {}).get("schema")
                responses = {
                    str(status): _openapi30_to_schema(schema)
                    for status, answer in (op.get("responses") or {}).items()
                    if (
                        schema := (answer.get("content") or {})
                        .get("application/json", {})
                        .get("schema")
                    )
                }
                pattern = re.compile(
                    "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
                )
                self.operations.append(
                    Operation(
                        method.upper(),
                        template,
                        str(op.get("operationId", "")),
                        pattern,
                        tuple(self._param(p) for p in [*shared, *op.get("parameters", [])]),
                        _openapi30_to_schema(body) if body is not None else None,  # type: ignore[arg-type]
                        required,
                        responses,  # type: ignore[arg-type]
                    )
                )

    def _param(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        if "$ref" in node:
            target: Any = self._doc
            for part in str(node["$ref"]).removeprefix("#/").split("/"):
                target = target[part]
            return dict(target)
        return node

    @functools.cache  # noqa: B019 - one Contract per process
    def _validator(self, key: str, schema_json: str) -> Draft7Validator:
        import orjson

        return Draft7Validator(orjson.loads(schema_json), registry=self._registry)

    def _check(self, schema: Mapping[str, Any], value: object, where: str) -> None:
        import orjson

        anchored = _anchor(schema)
        validator = self._validator(
            where, orjson.dumps(anchored, option=orjson.OPT_SORT_KEYS).decode()
        )
        error = best_match(validator.iter_errors(value))
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ContractViolation(f"{where}: {path}: {error.message}"[:1000])

    def operation(self, method: str, path: str) -> tuple[Operation, list[str]]:
        """The documented operation of a request, and its path values."""
        known = False
        for op in self.operations:
            match = op.pattern.match(path)
            if match:
                known = True
                if op.method == method.upper():
                    return op, list(match.groups())
        if known:
            raise ContractViolation(f"{method} {path}: method not documented for this path")
        raise ContractViolation(f"{method} {path}: no such path in the published document")

    def check_request(
        self, method: str, path: str, query: Mapping[str, str], body: object
    ) -> Operation:
        """Raises ContractViolation unless the request is one the document allows
        (``body`` is the parsed JSON, or None when there was none)."""
        op, _ = self.operation(method, path)
        where = op.operation_id
        deep: dict[str, dict[str, str]] = {}
        plain: dict[str, str] = {}
        for key, text in query.items():
            found = re.fullmatch(r"([A-Za-z]+)\[([A-Za-z]+)\]", key)
            if found:
                deep.setdefault(found[1], {})[found[2]] = text
            else:
                plain[key] = text
        declared = {str(p["name"]): p for p in op.parameters if p.get("in") == "query"}
        for name in [*deep, *plain]:
            if name not in declared:
                raise ContractViolation(f"{where}: query parameter {name!r} is not documented")
        for name, param in declared.items():
            value: object = (
                deep.get(name) if param.get("style") == "deepObject" else plain.get(name)
            )
            if value is None:
                if param.get("required"):
                    raise ContractViolation(f"{where}: query parameter {name!r} is required")
                continue
            schema = _openapi30_to_schema(param.get("schema", {}))
            assert isinstance(schema, dict)
            if isinstance(value, dict):  # numbers arrive as text
                props = schema.get("properties", {})
                value = {
                    k: int(v) if props.get(k, {}).get("type") == "integer" and v.isdigit() else v
                    for k, v in value.items()
                }
            self._check(schema, value, f"{where} query {name}")
        if op.body is None:
            if body is not None:
                raise ContractViolation(f"{where}: this operation takes no body")
        elif body is None:
            if op.body_required:
                raise ContractViolation(f"{where}: a JSON body is required")
        else:
            self._check(op.body, body, f"{where} body")
        return op

    def check_answer(self, op: Operation, status: int, body: object) -> None:
        """Raises ContractViolation unless an answer matches the schema documented for its
        status (statuses the document does not list for the operation are not checked)."""
        schema = op.responses.get(str(status))
        if schema is not None:
            self._check(schema, body, f"{op.operation_id} answer {status}")

    def check_event(self, event: Mapping[str, Any]) -> None:
        """Raises ContractViolation unless a webhook event matches its published schema."""
        kind = str(event.get("type"))
        name = WEBHOOK_SCHEMAS.get(kind)
        if name is None:
            raise ContractViolation(f"webhook event type {kind!r} is not simulated")
        self._check({"$ref": f"#/components/schemas/{name}"}, event, f"webhook {kind}")


def _anchor(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with its local ``$ref`` s pointing into the registered document."""

    def fix(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: (f"{_URN}{v}" if k == "$ref" and str(v).startswith("#") else fix(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    fixed = fix(schema)
    assert isinstance(fixed, dict)
    return fixed


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
