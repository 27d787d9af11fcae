"""The one reader of pushed webhook bodies (services/connector/base.py ``webhook_json``)
that the webhook, Zendesk and Genesys adapters share."""

from __future__ import annotations

import pytest

from ccbridge.services.connector.base import webhook_json
from ccbridge.services.runtime.errors import InvalidArgument
from ccbridge.services.runtime.json_depth import MAX_JSON_DEPTH


def test_webhook_json_parses_any_json_document() -> None:
    assert webhook_json(b'{"events": [1]}') == {"events": [1]}
    assert webhook_json(b"[1, 2]") == [1, 2]
    assert webhook_json(b'"text"') == "text"


@pytest.mark.parametrize("body", [b"", b"{", b"<html>", b"\xff"])
def test_webhook_json_refuses_what_is_not_json(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match="body is not JSON"):
        webhook_json(body)


def test_webhook_json_refuses_deep_nesting() -> None:
    depth = MAX_JSON_DEPTH
    assert webhook_json(b"[" * depth + b"]" * depth) is not None
    with pytest.raises(InvalidArgument, match=f"deeper than {depth} levels"):
        webhook_json(b"[" * (depth + 1) + b"]" * (depth + 1))
