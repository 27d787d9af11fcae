"""How a Subscriptions webhook is signed with HMAC: the header, the algorithm and the
encoding of the signature, shared by the gateway (verifies), ``ccbridge infobip
subscribe`` (sets the profile's algorithm) and the Infobip simulator (signs).

Infobip's Subscriptions API documents an HMAC security profile (``secretKey`` and an
``algorithm`` from :data:`HMAC_ALGORITHMS`) but not the request header that carries the
signature nor its encoding; those are settings whose defaults are **unconfirmed**
(docs/infobip.md). The signature is taken over the raw request body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ccbridge.services.runtime.settings import EnvReader

# The profile's documented enum (HmacAlgorithm) → hashlib's name.
HMAC_ALGORITHMS: dict[str, str] = {
    "HMAC_MD5": "md5",
    "HMAC_SHA_1": "sha1",
    "HMAC_SHA_224": "sha224",
    "HMAC_SHA_256": "sha256",
    "HMAC_SHA_384": "sha384",
    "HMAC_SHA_512": "sha512",
}
ENCODINGS = ("hex", "base64")

DEFAULT_HEADER = "X-Hub-Signature-256"  # unconfirmed
DEFAULT_ALGORITHM = "HMAC_SHA_256"
DEFAULT_ENCODING = "hex"  # unconfirmed

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
# An optional "sha256=" style prefix (GitHub's convention) before the signature.
_PREFIX = re.compile(r"^(?:hmac[-_]?)?(?:md5|sha-?1|sha-?224|sha-?256|sha-?384|sha-?512)=", re.I)


@dataclass(frozen=True)
class HmacScheme:
    """Header, algorithm (an :data:`HMAC_ALGORITHMS` key) and encoding of the signature."""

    header: str = DEFAULT_HEADER
    algorithm: str = DEFAULT_ALGORITHM
    encoding: str = DEFAULT_ENCODING

    @classmethod
    def read(cls, env: EnvReader) -> HmacScheme:
        header = env.str("INFOBIP_WEBHOOK_HMAC_HEADER", DEFAULT_HEADER)
        if not _HEADER_NAME.match(header):
            env.errors.append(f"INFOBIP_WEBHOOK_HMAC_HEADER is not a header name: {header!r}")
            header = DEFAULT_HEADER
        return cls(
            header=header,
            algorithm=env.choice(
                "INFOBIP_WEBHOOK_HMAC_ALGORITHM", DEFAULT_ALGORITHM, tuple(HMAC_ALGORITHMS)
            ),
            encoding=env.choice("INFOBIP_WEBHOOK_HMAC_ENCODING", DEFAULT_ENCODING, ENCODINGS),
        )

    @property
    def digest_size(self) -> int:
        return hashlib.new(HMAC_ALGORITHMS[self.algorithm]).digest_size

    def digest(self, key: bytes, body: bytes) -> bytes:
        return hmac.new(key, body, HMAC_ALGORITHMS[self.algorithm]).digest()

    def sign(self, secret: str, body: bytes) -> str:
        """The header value for ``body`` (no prefix)."""
        raw = self.digest(secret.encode(), body)
        return raw.hex() if self.encoding == "hex" else base64.b64encode(raw).decode()

    def decode(self, value: str) -> bytes | None:
        """The signature bytes of a header value in this encoding (an optional
        ``sha256=``-style prefix is ignored; base64 standard or URL-safe, padding
        optional; hex in either case), None when it is not one."""
        text = _PREFIX.sub("", value.strip(), count=1).strip()
        try:
            if self.encoding == "hex":
                raw = bytes.fromhex(text)
            else:
                normalized = text.replace("-", "+").replace("_", "/")
                raw = base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw if len(raw) == self.digest_size else None

    def verify(self, keys: Iterable[bytes], value: str | None, body: bytes) -> bool:
        """Whether ``value`` (the header, None when absent) signs ``body`` with one of
        ``keys``; every comparison runs, so timing says nothing about which."""
        signature = self.decode(value) if value is not None else None
        if signature is None:
            return False
        ok = False
        for key in keys:
            ok |= hmac.compare_digest(self.digest(key, body), signature)
        return ok
