"""Unit tests of the Infobip parsing helpers (timestamps, content types, signatures)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ccbridge.gateway.webhooks import parse_instant
from ccbridge.services.infobip.webhook_auth import HMAC_ALGORITHMS, HmacScheme
from ccbridge.services.runtime.settings import EnvReader, SettingsError


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


def test_decode_signature() -> None:
    digest = hashlib.sha256(b"x").digest()
    hexed, b64 = HmacScheme(encoding="hex"), HmacScheme(encoding="base64")
    assert hexed.decode(digest.hex()) == digest
    assert hexed.decode("sha256=" + digest.hex().upper()) == digest
    assert b64.decode(base64.b64encode(digest).decode()) == digest
    assert b64.decode("SHA256=" + base64.b64encode(digest).decode()) == digest
    assert b64.decode(base64.urlsafe_b64encode(digest).decode().rstrip("=")) == digest
    # The configured encoding only: base64 is not read as hex, nor hex as base64.
    assert hexed.decode(base64.b64encode(digest).decode()) is None
    assert b64.decode(digest.hex()) is None
    for bad in ("", "sha256=", "zz" * 32, "ünï", base64.b64encode(b"short").decode()):
        assert hexed.decode(bad) is None
        assert b64.decode(bad) is None


@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
def test_every_documented_algorithm_signs_and_verifies(algorithm: str) -> None:
    body, key = b'{"type":"INBOUND_MESSAGE"}', "k" * 16
    for encoding in ("hex", "base64"):
        scheme = HmacScheme(algorithm=algorithm, encoding=encoding)
        value = scheme.sign(key, body)
        expected = hmac.new(key.encode(), body, HMAC_ALGORITHMS[algorithm]).digest()
        assert scheme.decode(value) == expected
        assert scheme.verify([b"other" * 4, key.encode()], value, body)
        assert not scheme.verify([key.encode()], value, body + b" ")
        assert not scheme.verify([key.encode()], None, body)


def test_hmac_settings_are_checked() -> None:
    env = EnvReader(
        {
            "INFOBIP_WEBHOOK_HMAC_HEADER": "bad header:",
            "INFOBIP_WEBHOOK_HMAC_ALGORITHM": "SHA256",
            "INFOBIP_WEBHOOK_HMAC_ENCODING": "base32",
        }
    )
    HmacScheme.read(env)
    with pytest.raises(SettingsError) as caught:
        env.done("gateway")
    for key in ("HEADER", "ALGORITHM", "ENCODING"):
        assert f"INFOBIP_WEBHOOK_HMAC_{key}" in str(caught.value)
    assert HmacScheme.read(EnvReader({})) == HmacScheme(
        "X-Hub-Signature-256", "HMAC_SHA_256", "hex"
    )
