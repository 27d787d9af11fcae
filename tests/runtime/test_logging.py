"""The JSON log formatter (orjson): one JSON object per record, context variables
included, secrets shown as their ``str`` and a record never lost to an encoding error."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from ccbridge.services.runtime.logging import JsonFormatter, conversation_id_var
from ccbridge.services.runtime.settings import Secret


@dataclass
class Target:
    name: str
    token: Secret


def _format(msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("ccbridge.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    line = JsonFormatter("session").format(record)
    assert isinstance(line, str) and "\n" not in line
    doc = json.loads(line)
    assert isinstance(doc, dict)
    return doc


def test_a_record_is_one_json_object_with_its_context() -> None:
    token = conversation_id_var.set("c-1")
    try:
        doc = _format("sent %d to %s", 3, "Zürich", attempts=2, ratio=0.5)
    finally:
        conversation_id_var.reset(token)
    assert doc["msg"] == "sent 3 to Zürich"
    assert (doc["level"], doc["component"], doc["logger"]) == (
        "WARNING",
        "session",
        "ccbridge.test",
    )
    assert (doc["conversation_id"], doc["attempts"], doc["ratio"]) == ("c-1", 2, 0.5)
    assert str(doc["ts"]).endswith("Z")


def test_secrets_and_objects_are_written_as_their_str() -> None:
    # orjson would write a dataclass's fields (the secret inside); the formatter uses str.
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = _format("x", target=Target("rt", Secret("s3cret")), key=Secret("k3y"), when=when)
    assert "s3cret" not in json.dumps(doc) and "k3y" not in json.dumps(doc)
    assert doc["key"] == "Secret('***')"
    assert doc["when"] == str(when)
    assert _format("x", counts={1: "a"})["counts"] == {"1": "a"}


def test_a_value_orjson_refuses_still_gives_a_record() -> None:
    doc = _format("bad \udcff byte", big=2**70)
    assert doc["msg"] == "bad \\udcff byte"
    assert doc["big"] == str(2**70)
    assert doc["level"] == "WARNING"
