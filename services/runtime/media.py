"""Signed, expiring links to inbound media, served by the gateway's ``GET /media/{token}``.

Infobip media URLs may need the account's API key, which no CCaaS holds. With the media
proxy on (``CCBRIDGE_MEDIA_PROXY=true``), Session replaces every media URL of an inbound
message that points at Infobip (the host of ``INFOBIP_BASE_URL``) by
``<CCBRIDGE_PUBLIC_URL>/media/<token>``; the gateway checks the token and streams the file
from Infobip with the key. A URL on another host is left as it is (the key never goes
anywhere but Infobip).

A token is ``<payload>.<mac>``: the payload is base64url JSON ``{"u": url, "e": expiry}``
(unix seconds), the mac the base64url HMAC-SHA256 of the payload text with the first
``CCBRIDGE_MEDIA_SECRET``; any secret of the list verifies (rotation). Nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ccbridge.services.runtime.settings import EnvReader, Secret

DEFAULT_TTL_S = 7 * 86400
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
MAX_TOKEN_CHARS = 4096
MEDIA_TOKEN_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
"""What a token looks like (base64url payload, a dot, base64url MAC)."""
# A content nested deeper than this is not walked for URLs (Infobip's are 3 deep).
_MAX_DEPTH = 8


class MediaTokenError(Exception):
    """A token that cannot be served: ``reason`` is ``forged`` (malformed or a wrong
    signature) or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: Secret, payload: str) -> bytes:
    return hmac.new(secret.value.encode(), payload.encode(), hashlib.sha256).digest()


def sign(secret: Secret, url: str, expires_at: int) -> str:
    """A token for ``url`` valid until ``expires_at`` (unix seconds)."""
    payload = _b64(orjson.dumps({"u": url, "e": expires_at}))
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify(secrets: Sequence[Secret], token: str, *, now: float | None = None) -> str:
    """The URL of a valid token; raises :class:`MediaTokenError` otherwise. The signature
    is checked (in constant time, against every secret) before the payload is read."""
    payload, dot, mac_text = token.partition(".")
    if not dot or not payload or len(token) > MAX_TOKEN_CHARS:
        raise MediaTokenError("forged")
    try:
        offered = _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise MediaTokenError("forged") from None
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(_mac(secret, payload), offered)
    if not matched:
        raise MediaTokenError("forged")
    try:
        body = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise MediaTokenError("forged") from None
    url, expiry = (body.get("u"), body.get("e")) if isinstance(body, dict) else (None, None)
    if not isinstance(url, str) or not isinstance(expiry, int) or isinstance(expiry, bool):
        raise MediaTokenError("forged")
    if expiry < (time.time() if now is None else now):
        raise MediaTokenError("expired")
    return url


def origin(url: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of an http(s) URL, lower-cased; None for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass(frozen=True)
class MediaProxySettings:
    """The media proxy's settings, read the same way by Session (signs) and the gateway
    (verifies and serves). ``enabled`` False: media URLs are passed as they are."""

    enabled: bool
    public_url: str
    secrets: tuple[Secret, ...]
    ttl_s: int
    max_bytes: int

    @classmethod
    def read(cls, env: EnvReader, *, signer: bool) -> MediaProxySettings:
        """``signer``: this process writes links (Session), so it needs the public URL."""
        enabled = env.bool("CCBRIDGE_MEDIA_PROXY", False)
        public_url = env.str("CCBRIDGE_PUBLIC_URL", "").rstrip("/")
        secrets = env.secret_list("CCBRIDGE_MEDIA_SECRET", required=enabled)
        if enabled and signer and origin(public_url) is None:
            env.errors.append(
                "CCBRIDGE_PUBLIC_URL (the gateway's public http(s) URL) is required with "
                "CCBRIDGE_MEDIA_PROXY=true"
            )
        return cls(
            enabled=enabled,
            public_url=public_url,
            secrets=secrets,
            ttl_s=env.int("CCBRIDGE_MEDIA_URL_TTL_S", DEFAULT_TTL_S, minimum=60),
            max_bytes=env.int("CCBRIDGE_MEDIA_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1),
        )


class MediaLinks:
    """Rewrites the Infobip media URLs of a message's content into signed gateway links."""

    def __init__(self, settings: MediaProxySettings, infobip_base_url: str) -> None:
        self._settings = settings
        self._infobip = origin(infobip_base_url)

    @property
    def enabled(self) -> bool:
        return self._settings.enabled and self._infobip is not None

    def link(self, url: str, *, now: float | None = None) -> str:
        """The gateway link of ``url``, or ``url`` itself when it is not on Infobip."""
        if not self.enabled or origin(url) != self._infobip:
            return url
        expiry = int(time.time() if now is None else now) + self._settings.ttl_s
        token = sign(self._settings.secrets[0], url, expiry)
        if len(token) > MAX_TOKEN_CHARS:
            return url  # a URL of kilobytes: no gateway would take the link
        return f"{self._settings.public_url}/media/{token}"

    def rewrite(self, content: Any, *, now: float | None = None, depth: int = 0) -> Any:
        """``content`` with every ``url`` string (at any depth: RCS files, thumbnails)
        replaced by its link; the input is not changed."""
        if depth > _MAX_DEPTH:
            return content
        if isinstance(content, dict):
            return {
                key: self.link(value, now=now)
                if key == "url" and isinstance(value, str)
                else self.rewrite(value, now=now, depth=depth + 1)
                for key, value in content.items()
            }
        if isinstance(content, list):
            return [self.rewrite(item, now=now, depth=depth + 1) for item in content]
        return content
