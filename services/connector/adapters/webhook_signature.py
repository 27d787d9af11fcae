"""The signature of the generic webhook contract, both ways (docs/connectors/webhook.md):
``X-Ccbridge-Signature: v1=<hex HMAC-SHA256("<timestamp>.<raw body>")>`` with the unix
``X-Ccbridge-Timestamp``. Shared by the webhook connector (signs what it sends, verifies
what it receives), the gateway (refuses unsigned CCaaS webhooks before reading them, and
verifies them when it holds the secret) and the CCaaS simulator. Standard library only:
the gateway imports it without the connector's HTTP client.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence

from ccbridge.services.runtime.errors import Unauthenticated

TIMESTAMP_HEADER = "X-Ccbridge-Timestamp"
SIGNATURE_HEADER = "X-Ccbridge-Signature"
SIGNATURE_TOLERANCE_S = 300
_V1 = re.compile(r"v1=[0-9a-fA-F]{64}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Ccbridge-Signature`` value for ``body`` sent at ``timestamp``."""
    # hmac.digest: OpenSSL's one-shot HMAC, the value of hmac.new(...).hexdigest() for less.
    return "v1=" + hmac.digest(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hex()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Timestamp and signature headers for a request carrying ``body``."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def check_signature_headers(
    headers: Mapping[str, str], *, now: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> tuple[int, list[str]]:
    """What can be checked before the body is read: a fresh timestamp and at least one
    well-formed ``v1=`` signature. Returns (timestamp, candidate signatures); raises
    :class:`Unauthenticated` otherwise. ``headers`` must have lower-case names."""
    raw_ts = headers.get(TIMESTAMP_HEADER.lower(), "").strip()
    raw_sig = headers.get(SIGNATURE_HEADER.lower(), "")
    if not raw_ts or not raw_sig:
        raise Unauthenticated("missing signature or timestamp header")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise Unauthenticated("invalid timestamp header") from None
    if abs(now - timestamp) > tolerance_s:
        raise Unauthenticated("timestamp outside the accepted window")
    # The header may carry several signatures ("v1=a,v1=b") while the CCaaS rotates.
    candidates = [part.strip()[3:] for part in raw_sig.split(",") if _V1.fullmatch(part.strip())]
    if not candidates:
        raise Unauthenticated("no v1= signature in the signature header")
    return timestamp, candidates


def verify_signature(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> None:
    """Raises :class:`Unauthenticated` unless the timestamp is fresh and one ``v1=``
    signature of the header matches one of ``secrets`` (compared in constant time).

    ``headers`` must have lower-case names.
    """
    timestamp, candidates = check_signature_headers(headers, now=now, tolerance_s=tolerance_s)
    signed = f"{timestamp}.".encode() + body
    ok = False
    offered = [c.lower().encode() for c in candidates]  # hex only: see _V1
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        for candidate in offered:
            # No early exit: the work done does not depend on which secret matched.
            ok |= hmac.compare_digest(expected, candidate)
    if not ok:
        raise Unauthenticated("bad signature")
