"""Infobip's published OpenAPI documents as the simulator's contract.

:func:`extract` turns the three documents (``infobip-conversations-openapi.json``,
``infobip-subscriptions-api-openapi.json``, ``infobip-common-assets-openapi.json``, API
3.210.0) into one trimmed extract: every ``/ccaas/1`` and ``/subscriptions/1`` operation
with its parameters, request body and response schemas, the conversation event webhook,
and the schemas they reach (descriptions and examples dropped). The simulator ships that
extract as package data (``openapi/infobip-contract.json``, written by
``scripts/extract_infobip_contract.py``; a test checks it matches the documents), so it
needs neither the documents nor the source tree at run time.

:class:`Contract` validates requests (parameters, JSON bodies), answers (per status) and
webhooks against it with ``jsonschema`` (Draft 2020-12, the dialect of OpenAPI 3.1).
Requests are checked open (unknown fields pass), answers and webhooks closed (a field
neither the schema nor an example of it names is a violation). ``format`` (e.g.
``date-time``) is not asserted. Where the documents contradict themselves, the reading
taken is stated where it is made (``_reconciled``, ``content_schemas``,
``request_channels``, ``_channel_variant``, oneOf read as anyOf) and in
docs/infobip.md.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOCUMENTS = {
    "conversations": "infobip-conversations-openapi.json",
    "subscriptions": "infobip-subscriptions-api-openapi.json",
    "common": "infobip-common-assets-openapi.json",
}
EXTRACT_FILE = "infobip-contract.json"
WEBHOOK = "conversation-event-webhook"
_PATH_PREFIXES = {"conversations": ("/ccaas/1/",), "subscriptions": ("/subscriptions/1/",)}
_METHODS = ("get", "put", "post", "patch", "delete")
_DROPPED = frozenset({"description", "summary", "example", "examples", "title", "tags"})
_CREATE_MESSAGE = ("post", "/ccaas/1/conversations/{conversationId}/messages")
_UNDOCUMENTED = "is not a documented field"
_SUBSCRIPTION = "/subscriptions/1/subscription/{channel}"
_LIMIT = re.compile(r"longer than (\d+) characters")


# -- extraction (documents -> extract) -----------------------------------------------------


def _urn(doc: str) -> str:
    return f"urn:infobip:{doc}"


def _walk_refs(node: object) -> Iterator[str]:
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        mapping = node.get("mapping")
        if isinstance(mapping, Mapping):  # a discriminator's targets
            yield from (str(target) for target in mapping.values())
        for value in node.values():
            yield from _walk_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_refs(value)


def _resolve(document: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follows a ``$ref`` to a component other than a schema (parameters, responses...)."""
    while "$ref" in node and not str(node["$ref"]).startswith("#/components/schemas/"):
        target: Any = document
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _clean_schema_tree(node: object, doc: str) -> Any:
    """Like :func:`_clean`, but keys of ``properties`` objects are kept whatever their
    name (a property may be called ``description`` or ``title``)."""
    if isinstance(node, Mapping):
        cleaned: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, Mapping):
                cleaned[key] = {name: _clean_schema_tree(sub, doc) for name, sub in value.items()}
            elif key in _DROPPED:
                continue
            elif key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                cleaned[key] = _urn(doc) + value
            elif key == "mapping" and isinstance(value, Mapping):
                cleaned[key] = {k: _urn(doc) + str(v) for k, v in value.items()}
            elif key == "oneOf":
                # The documents list overlapping alternatives under oneOf without a
                # discriminator (every channel's subscription request, every credentials
                # payload), which a body could never match exactly once: anyOf.
                cleaned["anyOf"] = _clean_schema_tree(value, doc)
            else:
                cleaned[key] = _clean_schema_tree(value, doc)
        return cleaned
    if isinstance(node, list):
        return [_clean_schema_tree(value, doc) for value in node]
    return node


def _json_schema(media: Mapping[str, Any] | None, doc: str) -> Any:
    if not media:
        return None
    json_media = media.get("application/json") or media.get("application/json;charset=UTF-8")
    if not isinstance(json_media, Mapping) or "schema" not in json_media:
        return None
    return _clean_schema_tree(json_media["schema"], doc)


def _examples(media: Mapping[str, Any] | None) -> list[Any]:
    json_media = (media or {}).get("application/json") or {}
    examples = [e.get("value") for e in json_media.get("examples", {}).values()]
    if "example" in json_media:
        examples.append(json_media["example"])
    return examples


def _reconciled(
    document: Mapping[str, Any], media: Mapping[str, Any] | None, doc: str, status: str
) -> Any:
    """The answer's schema, widened where the document contradicts it with its own
    examples: Get Metadata declares a string and shows an object (both pass); error
    answers declared ``{statusCode, message}`` are shown as ``requestError`` bodies, as
    every error example of the documents is (``ApiException`` passes too)."""
    schema = _json_schema(media, doc)
    examples = _examples(media)
    if schema == {"type": "string"} and examples and all(isinstance(e, dict) for e in examples):
        return {"anyOf": [schema, {"type": "object"}], "x-reconciled-with-examples": True}
    exception = "#/components/schemas/ApiException"
    if (
        status[:1] in ("4", "5")
        and isinstance(schema, Mapping)
        and not str(schema.get("$ref", "")).endswith("ApiException")
        and "ApiException" in document["components"]["schemas"]
    ):
        ref = {"$ref": _urn(doc) + exception}
        return {"anyOf": [schema, ref] if schema else [ref], "x-reconciled-with-examples": True}
    return schema


def _example_fields(examples: list[Any]) -> list[str]:
    """Every field path the examples show (array items as ``*``): a field an example
    shows is documented, whatever the schema omits (Create Tag's ``createdAt``)."""
    found: set[str] = set()

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                found.add(path)
                walk(sub, path)
        elif isinstance(value, list):
            for sub in value:
                walk(sub, f"{prefix}.*" if prefix else "*")

    for example in examples:
        walk(example, "")
    return sorted(found)


def _operation(document: Mapping[str, Any], doc: str, method: str, path: str) -> dict[str, Any]:
    item = document["paths"][path]
    op = item[method]
    parameters = []
    for raw in [*item.get("parameters", ()), *op.get("parameters", ())]:
        param = _resolve(document, raw)
        parameters.append(
            {
                "name": param["name"],
                "in": param["in"],
                "required": bool(param.get("required", False)),
                "style": param.get("style"),
                "explode": param.get("explode"),
                "schema": _clean_schema_tree(param.get("schema", {}), doc),
            }
        )
    body = op.get("requestBody")
    request_body = None
    if body is not None:
        body = _resolve(document, body)
        request_body = {
            "required": bool(body.get("required", False)),
            "schema": _json_schema(body.get("content"), doc),
        }
    responses = {}
    example_fields = {}
    for status, raw in op.get("responses", {}).items():
        response = _resolve(document, raw)
        responses[str(status)] = _reconciled(document, response.get("content"), doc, str(status))
        fields = _example_fields(_examples(response.get("content")))
        if fields:
            example_fields[str(status)] = fields
    return {
        "document": doc,
        "method": method.upper(),
        "path": path,
        "operationId": op.get("operationId"),
        "deprecated": bool(op.get("deprecated", False)),
        "parameters": parameters,
        "requestBody": request_body,
        "responses": responses,
        "exampleFields": example_fields,
    }


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def content_schemas(document: Mapping[str, Any]) -> dict[str, Any]:
    """A ``content`` schema per ``contentType``, DERIVED FROM THE DOCUMENT'S OWN CREATE
    MESSAGE REQUEST EXAMPLES (the document declares ``MessageContent`` as a bare object):
    required = the keys every example of that content type has; each key typed as in the
    examples; further keys allowed (the examples are not exhaustive). TEXT's ``text`` gets
    the length limit of the documented 400 example "size cannot be longer than N
    characters"."""
    method, path = _CREATE_MESSAGE
    op = document["paths"][path][method]
    media = op["requestBody"]["content"]["application/json"]
    seen: dict[str, list[Mapping[str, Any]]] = {}
    for example in media.get("examples", {}).values():
        value = example.get("value", {})
        content = value.get("content")
        if isinstance(content, Mapping) and isinstance(value.get("contentType"), str):
            seen.setdefault(value["contentType"], []).append(content)
    schemas: dict[str, Any] = {}
    for content_type, contents in sorted(seen.items()):
        keys = sorted({key for content in contents for key in content})
        required = [key for key in keys if all(key in content for content in contents)]
        properties = {}
        for key in keys:
            types = sorted({_json_type(c[key]) for c in contents if key in c})
            properties[key] = {"type": types[0] if len(types) == 1 else types}
        schemas[content_type] = {
            "type": "object",
            "required": required,
            "properties": properties,
            "x-derived-from-examples": len(contents),
        }
    limit = _text_limit(op)
    if limit is not None and "TEXT" in schemas:
        schemas["TEXT"]["properties"]["text"]["maxLength"] = limit
    return schemas


def _text_limit(op: Mapping[str, Any]) -> int | None:
    bad = op.get("responses", {}).get("400", {}).get("content", {}).get("application/json", {})
    for example in bad.get("examples", {}).values():
        match = _LIMIT.search(orjson.dumps(example.get("value")).decode())
        if match:
            return int(match.group(1))
    return None


def request_channels(document: Mapping[str, Any]) -> list[str]:
    """Create Message's ``channel`` enum plus the channels its own request examples use
    (FACEBOOK_POST and INSTAGRAM_POST appear only in the examples)."""
    method, path = _CREATE_MESSAGE
    media = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    ref = str(media["schema"]["$ref"]).rsplit("/", 1)[-1]
    declared = document["components"]["schemas"][ref]["properties"]["channel"]["enum"]
    used = [e["value"].get("channel") for e in media.get("examples", {}).values()]
    return list(dict.fromkeys([*declared, *(c for c in used if isinstance(c, str))]))


def _reachable(documents: Mapping[str, Mapping[str, Any]], roots: object) -> dict[str, set[str]]:
    """The component schemas (per document) that ``roots`` reach through ``$ref``."""
    found: dict[str, set[str]] = {doc: set() for doc in documents}
    pending = list(_walk_refs(roots))
    while pending:
        ref = pending.pop()
        doc, _, pointer = ref.removeprefix("urn:infobip:").partition("#")
        name = pointer.removeprefix("/components/schemas/")
        if name in found[doc]:
            continue
        found[doc].add(name)
        schema = _clean_schema_tree(documents[doc]["components"]["schemas"][name], doc)
        pending.extend(_walk_refs(schema))
    return found


def extract(documents: Mapping[str, Mapping[str, Any]], digests: Mapping[str, str]) -> Any:
    """The extract the simulator ships, from the parsed documents (keys of
    :data:`DOCUMENTS`) and their SHA-256 digests."""
    operations = []
    for doc, prefixes in _PATH_PREFIXES.items():
        document = documents[doc]
        for path, item in document["paths"].items():
            if path.startswith(prefixes):
                for method in _METHODS:
                    if method in item:
                        operations.append(_operation(document, doc, method, path))
    webhook_op = documents["common"]["webhooks"][WEBHOOK]["post"]
    webhook = _json_schema(webhook_op["requestBody"]["content"], "common")
    conversations = documents["conversations"]
    derived = {
        "contentSchemas": content_schemas(conversations),
        "createMessageChannels": request_channels(conversations),
    }
    reach = _reachable(documents, [operations, webhook])
    resources = {
        doc: {
            "$id": _urn(doc),
            "components": {
                "schemas": {
                    name: _clean_schema_tree(documents[doc]["components"]["schemas"][name], doc)
                    for name in sorted(reach[doc])
                }
            },
        }
        for doc in documents
    }
    return {
        "source": {
            "version": conversations["info"]["version"],
            "documents": {DOCUMENTS[doc]: digests[doc] for doc in DOCUMENTS},
        },
        "operations": operations,
        "webhooks": {WEBHOOK: webhook},
        "derived": derived,
        "resources": resources,
    }


def extract_from_files(folder: Any) -> Any:
    """:func:`extract` of the documents in ``folder`` (a ``pathlib.Path``)."""
    documents: dict[str, Mapping[str, Any]] = {}
    digests: dict[str, str] = {}
    for doc, name in DOCUMENTS.items():
        raw = (folder / name).read_bytes()
        documents[doc] = orjson.loads(raw)
        digests[doc] = hashlib.sha256(raw).hexdigest()
    return extract(documents, digests)


def dumps(extracted: object) -> bytes:
    """The extract's file bytes (stable: sorted keys, indented, final newline)."""
    return orjson.dumps(extracted, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


@functools.cache
def default_contract() -> Contract:
    """The contract of the vendored extract, built once per process."""
    return Contract()


def load_vendored() -> Any:
    """The extract shipped with the package."""
    files = importlib.resources.files("ccbridge.simulators.infobip") / "openapi" / EXTRACT_FILE
    return orjson.loads(files.read_bytes())


# -- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One documented operation and its compiled path pattern."""

    method: str
    path: str
    pattern: re.Pattern[str]
    spec: Mapping[str, Any]


def _compile(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def _field(path: Sequence[object]) -> str:
    return ".".join(str(part) for part in path)


class Contract:
    """Validates requests, answers and webhooks against an extract (the vendored one by
    default). Violations come back as Infobip-style ``validationErrors``: a field name
    (dotted path) to a list of messages."""

    def __init__(self, extracted: Any | None = None) -> None:
        self.extract = extracted if extracted is not None else load_vendored()
        resources = list(self.extract["resources"].values())
        bases = {ref for body in resources for ref in _allof_refs(body)}
        self._registry: Any = Registry().with_resources(
            (body["$id"], DRAFT202012.create_resource(body)) for body in resources
        )
        # Answers and webhooks are checked closed: a field the documents do not name is a
        # violation (the client must not come to rely on it); requests are checked open.
        self._closed_registry: Any = Registry().with_resources(
            (body["$id"], DRAFT202012.create_resource(_closed_resource(body, bases)))
            for body in resources
        )
        self._cache: dict[tuple[bool, str], Any] = {}
        self.operations = [
            Operation(op["method"], op["path"], _compile(op["path"]), op)
            for op in self.extract["operations"]
        ]
        # Literal paths first: /ccaas/1/tags/{tagName} must not shadow a fixed segment.
        self.operations.sort(key=lambda op: op.path.count("{"))
        derived = self.extract["derived"]
        self.content_schemas: Mapping[str, Any] = derived["contentSchemas"]
        self.create_message_channels: Sequence[str] = derived["createMessageChannels"]

    # -- helpers --------------------------------------------------------------------------

    def _validator(self, schema: Any, closed: bool) -> Any:
        key = (closed, orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
        validator = self._cache.get(key)
        if validator is None:
            if closed:
                validator = Draft202012Validator(
                    _close(schema, False), registry=self._closed_registry
                )
            else:
                validator = Draft202012Validator(schema, registry=self._registry)
            self._cache[key] = validator
        return validator

    def schema_errors(
        self, schema: Any, value: object, prefix: str = "", *, closed: bool = False
    ) -> dict[str, list[str]]:
        """Every violation of ``schema`` by ``value``, Infobip-style; ``closed``: also
        every property the schema does not name."""
        errors: dict[str, list[str]] = {}
        for error in self._validator(schema, closed).iter_errors(value):
            for name, message in _describe(error):
                key = ".".join(part for part in (prefix, name) if part) or "body"
                messages = errors.setdefault(key, [])
                if message not in messages:
                    messages.append(message)
        return errors

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The documented operation for ``method path`` and its path parameters."""
        for op in self.operations:
            if op.method == method.upper():
                found = op.pattern.match(path)
                if found:
                    return op, found.groupdict()
        return None

    # -- requests -------------------------------------------------------------------------

    def request_errors(
        self,
        op: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, Sequence[str]],
        body: object,
        *,
        has_body: bool,
    ) -> dict[str, list[str]]:
        """Parameters (path, query: required, type, enum, bounds) and the JSON body
        (the operation's schema; for Create Message also the content schema of its
        ``contentType`` and the channel list — see :func:`content_schemas`)."""
        errors: dict[str, list[str]] = {}
        for param in op.spec["parameters"]:
            name, where, schema = param["name"], param["in"], param["schema"]
            if where == "path":
                raw: list[str] = [path_params[name]] if name in path_params else []
            elif where == "query":
                raw = [*query.get(name, ()), *query.get(name + "[]", ())]
            else:
                continue  # header and cookie parameters: none on the operations used
            if not raw:
                if param["required"]:
                    errors[name] = ["must not be null"]
                continue
            value, problem = _coerce(raw, schema)
            if problem:
                errors[name] = [problem]
                continue
            errors.update(self.schema_errors(schema, value, name))
        request_body = op.spec["requestBody"]
        if request_body is not None and request_body["schema"] is not None:
            if not has_body:
                if request_body["required"]:
                    errors["body"] = ["must not be null"]
            else:
                schema = request_body["schema"]
                if op.path.startswith(_SUBSCRIPTION) and "channel" in path_params:
                    schema = self._channel_variant(schema, path_params["channel"])
                errors.update(self.schema_errors(schema, body))
                if (op.method.lower(), op.path) == _CREATE_MESSAGE:
                    errors = self._create_message_errors(body, errors)
        return errors

    def _channel_variant(self, schema: Mapping[str, Any], channel: str) -> Mapping[str, Any]:
        """A subscription request schema (``SubscriptionRequest``,
        ``NoIdSubscriptionRequest``) lists every channel's schema as an alternative; the
        one named after the path's channel applies (CUSTOMER_ENGAGEMENT ->
        ``CustomerEngagementNoIdSubscriptionRequest``)."""
        ref = str(schema.get("$ref", ""))
        prefix, _, name = ref.rpartition(".")
        camel = "".join(part.capitalize() for part in channel.split("_"))
        variant = f"{prefix}.{camel}{name}"
        if (
            prefix
            and variant.rpartition("/")[2]
            in self.extract["resources"]["subscriptions"]["components"]["schemas"]
        ):
            return {"$ref": variant}
        return schema

    def _create_message_errors(
        self, body: object, errors: dict[str, list[str]]
    ) -> dict[str, list[str]]:
        if not isinstance(body, Mapping):
            return errors
        if body.get("channel") in self.create_message_channels:
            # Used by the document's own examples although not in the schema's enum.
            errors.pop("channel", None)
        content_type, content = body.get("contentType"), body.get("content")
        schema = self.content_schemas.get(content_type) if isinstance(content_type, str) else None
        if schema is not None and isinstance(content, Mapping):
            for key, messages in self.schema_errors(schema, content, "content").items():
                # The documented 400 example names the field "content" for a too long text.
                too_long = key == "content.text" and messages[0].startswith("size cannot")
                errors.setdefault("content" if too_long else key, []).extend(messages)
        return errors

    def read_only_sent(self, op: Operation, body: object) -> list[str]:
        """Top-level fields of ``body`` that the request schema marks ``readOnly`` (e.g.
        ``id`` and ``createdAt`` of Update Conversation). The documents do not say what
        Infobip does with them, so the simulator accepts them; the recording check holds
        ccbridge to not sending them."""
        request_body = op.spec["requestBody"]
        if not isinstance(body, Mapping) or request_body is None or not request_body["schema"]:
            return []
        properties = self._resolve_ref(request_body["schema"]).get("properties", {})
        return sorted(name for name in body if (properties.get(name) or {}).get("readOnly") is True)

    # -- answers and webhooks -------------------------------------------------------------

    def response_errors(self, op: Operation, status: int, body: object) -> dict[str, list[str]]:
        """The answer against the schema documented for its status (a status the
        document does not list for the operation is itself a violation)."""
        responses = op.spec["responses"]
        key = str(status)
        if key not in responses:
            key = f"{str(status)[0]}XX" if f"{str(status)[0]}XX" in responses else "default"
        if key not in responses:
            return {"status": [f"{status} is not a documented answer of {op.spec['operationId']}"]}
        schema = responses[key]
        if schema is None:
            return {}
        errors = self.schema_errors(schema, body, closed=True)
        shown = set(op.spec["exampleFields"].get(key, ()))
        for name in list(errors):
            if re.sub(r"\.\d+(?=\.|$)", ".*", name) in shown:
                errors[name] = [m for m in errors[name] if m != _UNDOCUMENTED]
                if not errors[name]:
                    del errors[name]
        return errors

    def webhook_errors(self, body: object) -> dict[str, list[str]]:
        """A Subscriptions event against the conversation event webhook's schema; its
        ``discriminator`` (by ``type``) picks the report schema, as OpenAPI means it."""
        schema = self.extract["webhooks"][WEBHOOK]
        root = self._resolve_ref(schema)
        mapping = (root.get("discriminator") or {}).get("mapping") or {}
        event_type = body.get("type") if isinstance(body, Mapping) else None
        if mapping and event_type not in mapping:
            return {"type": [f"must be one of {', '.join(sorted(mapping))}"]}
        target = {"$ref": mapping[event_type]} if mapping else schema
        return self.schema_errors(target, body, closed=True)

    def message_errors(self, body: object) -> dict[str, list[str]]:
        """A message object (the legacy account webhook POSTs one per inbound message;
        the document does not describe that webhook, so Get Messages' message schema is
        used — unconfirmed)."""
        op = self.match("GET", "/ccaas/1/conversations/x/messages")
        assert op is not None
        schema = op[0].spec["responses"]["200"]
        props = self._resolve_ref(schema).get("properties", {})
        item = props.get("messages", {}).get("items")
        return self.schema_errors(item, body, closed=True) if item is not None else {}

    def _resolve_ref(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
        doc, _, pointer = ref.removeprefix("urn:infobip:").partition("#")
        name = pointer.removeprefix("/components/schemas/")
        resolved: Mapping[str, Any] = self.extract["resources"][doc]["components"]["schemas"][name]
        return resolved


def _allof_refs(node: object) -> Iterator[str]:
    """The component schemas used as ``allOf`` members (bases another schema extends)."""
    if isinstance(node, Mapping):
        for member in node.get("allOf") or ():
            if isinstance(member, Mapping) and isinstance(member.get("$ref"), str):
                yield str(member["$ref"]).partition("#")[2].removeprefix("/components/schemas/")
        for value in node.values():
            yield from _allof_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _allof_refs(value)


def _closed_resource(body: Mapping[str, Any], bases: set[str]) -> dict[str, Any]:
    schemas = body["components"]["schemas"]
    return {
        "$id": body["$id"],
        "components": {
            "schemas": {name: _close(schema, name in bases) for name, schema in schemas.items()}
        },
    }


def _close(node: Any, as_base: bool) -> Any:
    """``node`` with ``unevaluatedProperties: false`` on each object schema that names its
    properties or composes others (``allOf``), except where it is itself an ``allOf``
    member: a base is closed by the schema that extends it, which sees both."""
    if isinstance(node, list):
        return [_close(value, False) for value in node]
    if not isinstance(node, Mapping):
        return node
    closed: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, Mapping):
            closed[key] = {name: _close(sub, False) for name, sub in value.items()}
        elif key == "allOf" and isinstance(value, list):
            closed[key] = [_close(member, True) for member in value]
        else:
            closed[key] = _close(value, False)
    composes = "properties" in node or "allOf" in node
    if (
        composes
        and not as_base
        and "additionalProperties" not in node
        and "unevaluatedProperties" not in node
    ):
        closed["unevaluatedProperties"] = False
    return closed


def _coerce(raw: list[str], schema: Mapping[str, Any]) -> tuple[object, str]:
    """A query or path parameter's strings as the JSON value its schema describes."""
    kind = schema.get("type")
    if kind == "array":
        items = [part for value in raw for part in value.split(",") if part]
        item_schema = schema.get("items", {})
        coerced = []
        for item in items:
            value, problem = _coerce([item], item_schema)
            if problem:
                return None, problem
            coerced.append(value)
        return coerced, ""
    value = raw[-1]
    if kind == "integer":
        try:
            return int(value), ""
        except ValueError:
            return None, "must be an integer"
    if kind == "number":
        try:
            return float(value), ""
        except ValueError:
            return None, "must be a number"
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            return None, "must be true or false"
        return value.lower() == "true", ""
    return value, ""


def _describe(error: Any) -> Iterator[tuple[str, str]]:
    """Bean-Validation-like messages (Infobip's style) for a jsonschema error."""
    where = _field(error.absolute_path)
    validator = error.validator
    if validator in ("anyOf", "oneOf") and error.context:
        yield from _describe(best_match(error.context))
    elif validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        name = missing.group(1) if missing else "?"
        yield ".".join(part for part in (where, name) if part), "must not be null"
    elif validator == "enum":
        allowed = list(dict.fromkeys(str(v) for v in error.validator_value))
        if len(allowed) > 20:
            yield where, f"must be one of the {len(allowed)} documented values"
        else:
            yield where, f"must be one of {', '.join(allowed)}"
    elif validator == "maxLength":
        yield where, f"size cannot be longer than {error.validator_value} characters."
    elif validator == "minLength":
        yield where, f"size must be at least {error.validator_value} characters."
    elif validator == "maximum":
        yield where, f"must be less than or equal to {error.validator_value}"
    elif validator == "minimum":
        yield where, f"must be greater than or equal to {error.validator_value}"
    elif validator == "type":
        yield where, f"must be of type {error.validator_value}"
    elif validator == "unevaluatedProperties":
        for name in re.findall(r"'([^']+)'", str(error.message)):
            yield ".".join(part for part in (where, name) if part), _UNDOCUMENTED
    else:
        yield where, str(error.message)[:200]
