"""Signed, expiring links to inbound media, served by the gateway's ``GET /media/{token}``.

Infobip media URLs may need the account's API key, which no CCaaS holds. With the media
proxy on (``CCBRIDGE_MEDIA_PROXY=true``), Session replaces every media URL of an inbound
message that points at Infobip (the host of ``INFOBIP_BASE_URL``) by
``<CCBRIDGE_PUBLIC_URL>/media/<token>``; the gateway checks the token and streams the file
from Infobip with the key. A URL on another host is left as it is (the key never goes
anywhere but Infobip).

Outbound, the same links carry files an agent attached at a CCaaS that needs credentials
(RT): the connector service signs a link naming itself and its reference of the file, and
the gateway streams the file from the connector service (``FetchAgentFile``), which reads
it with the CCaaS's credentials.

A token is ``<payload>.<mac>``: the payload is base64url JSON, ``{"u": url, "e": expiry}``
(an Infobip file) or ``{"k": "f", "c": connector, "r": file ref, "e": expiry}`` (a
connector's file); ``e`` in unix seconds. The mac is the base64url HMAC-SHA256 of the
payload text with the first ``CCBRIDGE_MEDIA_SECRET``; any secret of the list verifies
(rotation). Nothing is stored.
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


@dataclass(frozen=True)
class InfobipFile:
    """A token's target: an Infobip media URL (fetched with the API key)."""

    url: str


@dataclass(frozen=True)
class ConnectorFile:
    """A token's target: a file an agent attached at a CCaaS, which the named connector
    reads by its reference (``FetchAgentFile``)."""

    connector: str
    ref: str


MediaTarget = InfobipFile | ConnectorFile


def _signed(secret: Secret, body: dict[str, object]) -> str:
    payload = _b64(orjson.dumps(body))
    return f"{payload}.{_b64(_mac(secret, payload))}"


def sign(secret: Secret, url: str, expires_at: int) -> str:
    """A token for the Infobip file ``url`` valid until ``expires_at`` (unix seconds)."""
    return _signed(secret, {"u": url, "e": expires_at})


def sign_file(secret: Secret, connector: str, ref: str, expires_at: int) -> str:
    """A token for the file ``ref`` of ``connector`` valid until ``expires_at``."""
    return _signed(secret, {"k": "f", "c": connector, "r": ref, "e": expires_at})


def verify(secrets: Sequence[Secret], token: str, *, now: float | None = None) -> MediaTarget:
    """The target of a valid token; raises :class:`MediaTokenError` otherwise. The
    signature is checked (in constant time, against every secret) before the payload is
    read."""
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
    if not isinstance(body, dict):
        raise MediaTokenError("forged")
    expiry = body.get("e")
    target: MediaTarget
    if body.get("k") == "f":
        connector, ref = body.get("c"), body.get("r")
        if not isinstance(connector, str) or not isinstance(ref, str) or not connector:
            raise MediaTokenError("forged")
        target = ConnectorFile(connector, ref)
    elif "k" in body or not isinstance(body.get("u"), str):
        raise MediaTokenError("forged")
    else:
        target = InfobipFile(str(body["u"]))
    if not isinstance(expiry, int) or isinstance(expiry, bool):
        raise MediaTokenError("forged")
    if expiry < (time.time() if now is None else now):
        raise MediaTokenError("expired")
    return target


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


class AgentFileLinks:
    """Signed gateway links to files agents attached at a CCaaS (the connector service
    signs them; the gateway serves them through ``FetchAgentFile``)."""

    def __init__(self, settings: MediaProxySettings) -> None:
        self._settings = settings

    @property
    def max_bytes(self) -> int:
        return self._settings.max_bytes

    def unavailable(self) -> str:
        """Why no link can be made ('' when links can be made)."""
        if not self._settings.enabled:
            return "the bridge's media proxy is off (CCBRIDGE_MEDIA_PROXY)"
        if origin(self._settings.public_url) is None:
            return "the bridge has no public URL (CCBRIDGE_PUBLIC_URL)"
        return ""

    def link(self, connector: str, ref: str, *, now: float | None = None) -> str:
        """The gateway link of file ``ref`` of ``connector`` (only when ``unavailable()``
        is empty)."""
        expiry = int(time.time() if now is None else now) + self._settings.ttl_s
        token = sign_file(self._settings.secrets[0], connector, ref, expiry)
        return f"{self._settings.public_url}/media/{token}"
