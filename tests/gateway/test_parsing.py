"""Unit tests of the Infobip parsing helpers (timestamps, content types, signatures)."""

from __future__ import annotations

import base64
import hashlib

from ccbridge.gateway.webhooks import _decode_signature, infer_content_type, parse_instant


def test_parse_instant_formats() -> None:
    expected = (1742562726, 495000000)
    for text in (
        "2025-03-21T13:12:06.495+00:00",
        "2025-03-21T13:12:06.495+0000",
        "2025-03-21T13:12:06.495Z",
        "2025-03-21T15:12:06.495+02:00",
        "2025-03-21 13:12:06.495",
        " 2025-03-21T13:12:06.495Z ",
    ):
        assert parse_instant(text) == expected, text
    assert parse_instant("2025-03-21T13:12:06Z") == (1742562726, 0)
    assert parse_instant(1742562726495) == expected  # epoch milliseconds
    assert parse_instant(1742562726) == (1742562726, 0)  # epoch seconds


def test_parse_instant_rejects_garbage() -> None:
    values: tuple[object, ...] = (
        None,
        "",
        "yesterday",
        "2025-13-01T00:00:00Z",
        True,
        [],
        {},
        1e300,
        -99999999999999999,
        "0001-01-01T00:00:00+01:00",
    )
    for value in values:
        assert parse_instant(value) is None, value


def test_infer_content_type() -> None:
    assert infer_content_type({"text": "hi", "url": "https://x/a.png"}) == "TEXT"
    assert infer_content_type({"url": "https://x/a.png"}) == "IMAGE"
    assert infer_content_type({"url": "https://x/a.mp4"}) == "VIDEO"
    assert infer_content_type({"url": "https://x.example.com/"}) == "MEDIA"
    assert infer_content_type({"url": "relative/file.docx"}) == "DOCUMENT"
    assert infer_content_type("text") == "UNKNOWN"
    assert infer_content_type(None) == "UNKNOWN"


def test_decode_signature() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert _decode_signature(digest.hex()) == digest
    assert _decode_signature("sha256=" + digest.hex().upper()) == digest
    assert _decode_signature(base64.b64encode(digest).decode()) == digest
    assert _decode_signature(base64.urlsafe_b64encode(digest).decode().rstrip("=")) == digest
    for bad in ("", "sha256=", "zz" * 32, "ünï", base64.b64encode(b"short").decode()):
        assert _decode_signature(bad) is None
