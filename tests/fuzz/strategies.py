"""Hypothesis strategies shared by the fuzz suites: JSON values, and documents shaped
like what each parser reads, where every field may also be any JSON value (or missing),
so that both the happy paths and every wrong type are reached."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# Strings with every kind of character: control characters, CR/LF, non-ASCII, lone
# surrogates (encoded as \\udXXX escapes in the JSON text, as a sender could).
ANY_TEXT = st.text(max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)

IDS = st.sampled_from(["m1", "m-2", "conv-1", "conv-2", "a" * 200, "x" * 300, "", " ", ".", ".."])
ID_LIKE = IDS | st.from_regex(r"\A[A-Za-z0-9._:-]{1,40}\Z") | ANY_TEXT | st.integers()
TIMESTAMPS = st.sampled_from(
    [
        "2026-01-02T03:04:05.678+00:00",
        "2026-01-02T03:04:05.678+0000",
        "2026-01-02T03:04:05Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999+00:00",
        "2026-13-40T99:99:99Z",
        "",
    ]
) | st.one_of(
    ANY_TEXT,
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
)
CONTENT = st.fixed_dictionaries(
    {},
    optional={
        "text": ANY_TEXT | JSON,
        "url": st.sampled_from(["https://x.test/a.jpg", "a.pdf", "https://x.test/", "://", ""])
        | ANY_TEXT
        | JSON,
        "latitude": JSON,
        "longitude": JSON,
        "caption": JSON,
    },
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's plausible values, or any JSON value."""
    return strategy | JSON


def infobip_message(conversation_ids: st.SearchStrategy[Any] = ID_LIKE) -> st.SearchStrategy[Any]:
    """An Infobip message as Get Messages returns it (the legacy webhook's item)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "id": maybe(ID_LIKE),
            "conversationId": maybe(conversation_ids),
            "channel": maybe(st.sampled_from(["WHATSAPP", "SMS", "LIVE_CHAT"])),
            "from": maybe(st.sampled_from(["447700900000", "user"]) | st.integers()),
            "to": maybe(st.sampled_from(["447700900001", "bot"])),
            "direction": maybe(st.sampled_from(["INBOUND", "OUTBOUND", "outbound", ""])),
            "authorType": maybe(st.sampled_from(["CUSTOMER", "BOT", "AGENT"])),
            "createdAt": maybe(TIMESTAMPS),
            "contentType": maybe(st.sampled_from(["TEXT", "IMAGE", "", "LOCATION"])),
            "content": maybe(CONTENT),
        },
    )


def legacy_body(conversation_ids: st.SearchStrategy[Any] = ID_LIKE) -> st.SearchStrategy[Any]:
    """A legacy webhook body: one message, an array, ``{messages|results: [...]}``, or junk."""
    item = infobip_message(conversation_ids) | JSON
    items = st.lists(item, max_size=5)
    return st.one_of(
        item,
        items,
        st.fixed_dictionaries({"messages": items | JSON}),
        st.fixed_dictionaries({"results": items | JSON}),
        JSON,
    )


def infobip_event(conversation_ids: st.SearchStrategy[Any] = ID_LIKE) -> st.SearchStrategy[Any]:
    """A Subscriptions (Conversations webhook) event."""
    payload = st.fixed_dictionaries(
        {},
        optional={
            "id": maybe(conversation_ids),
            "status": maybe(st.sampled_from(["CLOSED", "closed", "OPEN", "WAITING"])),
            "channel": maybe(st.sampled_from(["WHATSAPP", "SMS"])),
            "message": maybe(infobip_message(conversation_ids)),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "type": maybe(
                st.sampled_from(
                    ["INBOUND_MESSAGE", "CONVERSATION_STATUS_UPDATED", "OUTBOUND_MESSAGE", ""]
                )
            ),
            "timestamp": maybe(TIMESTAMPS),
            "payload": maybe(payload),
        },
    )


def events_body(conversation_ids: st.SearchStrategy[Any] = ID_LIKE) -> st.SearchStrategy[Any]:
    event = infobip_event(conversation_ids)
    return st.one_of(event, st.lists(event | JSON, max_size=5), JSON)


# Numbers around the coordinate ranges, and what JSON makes of odd ones.
DEGREES = st.one_of(
    st.floats(min_value=-200, max_value=200),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([90, -90, 180, -180, 90.0000001, True, "45.1", None]),
)
URLS = st.one_of(
    st.sampled_from(
        [
            "https://cdn.example.com/a.png",
            "http://h/x",
            "ftp://h/x",
            "javascript:alert(1)",
            "https://",
            "https://h/a b",
            "//h/x",
            "https://h/" + "x" * 3000,
        ]
    ),
    ANY_TEXT,
)


def ccaas_event() -> st.SearchStrategy[Any]:
    """An event of the webhook connector's contract (``agent.message`` with attachments
    and a location, ``agent.typing``, ``case.closed``)."""
    attachment = st.fixed_dictionaries(
        {},
        optional={
            "url": maybe(URLS),
            "contentType": maybe(st.sampled_from(["IMAGE", "DOCUMENT", "VIDEO", "AUDIO", "X"])),
            "caption": maybe(ANY_TEXT),
            "name": maybe(ANY_TEXT),
            "size": maybe(st.integers(min_value=-5, max_value=2**60) | st.booleans()),
        },
    )
    location = st.fixed_dictionaries(
        {},
        optional={
            "latitude": DEGREES,
            "longitude": DEGREES,
            "name": maybe(ANY_TEXT),
            "address": maybe(ANY_TEXT),
        },
    )
    message = st.fixed_dictionaries(
        {},
        optional={
            "id": maybe(ID_LIKE),
            "text": maybe(ANY_TEXT),
            "agentName": maybe(ANY_TEXT),
            "attachments": maybe(st.lists(attachment | JSON, max_size=12) | JSON),
            "location": maybe(location | JSON),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "type": maybe(
                st.sampled_from(["agent.message", "agent.typing", "case.closed", "case.other", ""])
            ),
            "id": maybe(ID_LIKE),
            "caseId": maybe(ID_LIKE),
            "reason": maybe(ANY_TEXT),
            "message": maybe(message),
            "typing": maybe(st.booleans() | JSON),
            "timestamp": maybe(TIMESTAMPS | ANY_TEXT),
        },
    )


def ccaas_body() -> st.SearchStrategy[Any]:
    event = ccaas_event()
    return st.one_of(event, st.lists(event | JSON, max_size=5), JSON)


def json_bytes(doc: Any) -> bytes:
    """``doc`` as a sender could write it: stdlib json, ASCII-escaped (lone surrogates
    become ``\\udXXX`` escapes), integers of any size."""
    return json.dumps(doc, allow_nan=False).encode()


RAW_BODIES = st.binary(max_size=64) | st.sampled_from(
    [b"", b" ", b"null", b"[]", b"{}", b'"\\ud800"', b"[" * 2000 + b"]" * 2000, b"\xef\xbb\xbf{}"]
)


# --- protobuf messages ----------------------------------------------------------------

# Mostly values that pass validation (so calls reach the state they act on), else odd.
SANE_TEXT = st.sampled_from(["conv-1", "conv-2", "m1", "m2", "webhook", "case-1", "TEXT"])
PROTO_TEXT = st.one_of(
    SANE_TEXT,
    SANE_TEXT,
    st.sampled_from(["", ".", "..", "a/b", "x" * 300, "\r\n", "conv\x00"]),
    st.text(max_size=30),
)
KEY_FIELDS = frozenset(
    {"conversation_id", "id", "connector", "external_id", "state", "messages", "events"}
)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return PROTO_TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=30)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-(2**31), 2**31 - 1)
    low, high = _INT_RANGES[kind]
    small = st.integers(max(low, -3), min(high, 200))
    return small | st.integers(low, high)


def proto_message(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``'s type: each field unset or any value of its type
    (unknown enum numbers, extreme integers and timestamps, odd strings included)."""
    cls = message_factory.GetMessageClass(descriptor)

    def field_value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
                if value.type == FieldDescriptor.TYPE_MESSAGE:
                    return st.just({})
                return st.dictionaries(_scalar(key), _scalar(value), max_size=4)
            if depth <= 0:
                return st.just(None)
            sub = proto_message(entry, depth - 1)
            return st.lists(sub, max_size=3) if _repeated(field) else sub
        return st.lists(_scalar(field), max_size=4) if _repeated(field) else _scalar(field)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            target = getattr(message, name)
            if value is None:
                continue
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE
            if is_message and field.message_type.GetOptions().map_entry:
                target.update(value)
            elif is_message and _repeated(field):
                for item in value:
                    target.add().CopyFrom(item)
            elif is_message:
                target.CopyFrom(value)
            elif _repeated(field):
                target.extend(value)
            else:
                setattr(message, name, value)
        return message

    # Keys always set (any value), so that calls get past "x is required" to the state.
    required = {f.name: field_value(f) for f in descriptor.fields if f.name in KEY_FIELDS}
    optional = {f.name: field_value(f) for f in descriptor.fields if f.name not in KEY_FIELDS}
    return st.fixed_dictionaries(required, optional=optional).map(build)


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
