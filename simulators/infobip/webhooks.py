"""How the Infobip simulator POSTs webhooks: the legacy account webhook (one message
object per POST, no authentication) and Subscriptions events (``{type, timestamp,
payload}``), signed per the subscription's security profile.

HMAC: the subscription's profile gives the secret and the algorithm (the documented
enum); the header and the encoding are the sender's ``hmac_header`` / ``hmac_encoding``
(default ``X-Hub-Signature-256: sha256=<hex>``, the defaults of ccbridge's settings).
Infobip does not document the header nor the encoding: both are unconfirmed — see
docs/infobip.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ccbridge.services.infobip.webhook_auth import DEFAULT_ENCODING, DEFAULT_HEADER, HmacScheme
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure

log = logging.getLogger(__name__)

SIGNATURE_HEADER = DEFAULT_HEADER


def sign(secret: str, body: bytes, scheme: HmacScheme | None = None) -> str:
    """The signature header's value for ``body`` (HMAC-SHA256 hex by default), with the
    ``sha256=``-style prefix of the algorithm."""
    scheme = scheme or HmacScheme()
    prefix = scheme.algorithm.removeprefix("HMAC_").replace("_", "").lower()
    return f"{prefix}={scheme.sign(secret, body)}"


class Security(Protocol):
    """How a subscription's webhook is authenticated (state.Subscription has these)."""

    @property
    def security_type(self) -> str: ...  # "HMAC", "BASIC" or ""
    @property
    def secret(self) -> str: ...
    @property
    def algorithm(self) -> str: ...  # an HmacAlgorithm of the documented enum
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


@dataclass(frozen=True)
class Delivery:
    """A webhook to POST after an operation (built under the state lock, sent outside)."""

    kind: str  # "legacy" (account webhook) or "event" (subscription)
    url: str
    body: dict[str, Any]
    subscription: Security | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one webhook POST (``status`` None: no HTTP answer)."""

    kind: str
    url: str
    status: int | None
    error: str = ""

    def to_api(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "url": self.url,
            "status": self.status,
            "error": self.error or None,
        }


class WebhookSender:
    """POSTs deliveries with one shared :class:`HttpClient` (closed by :meth:`aclose`,
    reopened on next use), each bounded by ``timeout_s``; failures are reported, not
    raised."""

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        # The gateway answers a few bytes of JSON; the body is not read by anyone.
        self._http = HttpClient(timeout_s=timeout_s, max_answer_bytes=1 << 20)
        self._background: set[asyncio.Task[list[DeliveryResult]]] = set()
        # Where and how HMAC signatures go (Infobip does not document either).
        self.hmac_header = DEFAULT_HEADER
        self.hmac_encoding = DEFAULT_ENCODING
        # Checks a delivery against the published contract first; False: not sent.
        self.inspect: Callable[[Delivery], bool] | None = None

    async def post(self, delivery: Delivery) -> DeliveryResult:
        if self.inspect is not None and not self.inspect(delivery):
            return DeliveryResult(delivery.kind, delivery.url, None, "ContractViolation")
        body = orjson.dumps(delivery.body)
        headers = {"Content-Type": "application/json", "User-Agent": "infobip-simulator"}
        subscription = delivery.subscription
        if subscription is not None:
            if subscription.security_type == "HMAC":
                scheme = HmacScheme(
                    self.hmac_header, subscription.algorithm or "HMAC_SHA_256", self.hmac_encoding
                )
                headers[self.hmac_header] = sign(subscription.secret, body, scheme)
            elif subscription.security_type == "BASIC":
                pair = f"{subscription.username}:{subscription.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        try:
            answer = await self._http.request("POST", delivery.url, body=body, headers=headers)
        except HttpFailure as exc:
            # The URL is not logged: the legacy webhook path carries a secret token.
            log.warning("%s webhook POST failed: %s", delivery.kind, type(exc).__name__)
            return DeliveryResult(delivery.kind, delivery.url, None, type(exc).__name__)
        return DeliveryResult(delivery.kind, delivery.url, answer.status)

    async def post_all(self, deliveries: Iterable[Delivery]) -> list[DeliveryResult]:
        """POSTs in order (the legacy webhook first), one after the other."""
        return [await self.post(delivery) for delivery in deliveries]

    def post_in_background(self, deliveries: list[Delivery]) -> None:
        """Fire and forget (events caused by API calls must not delay the API answer)."""
        if not deliveries:
            return
        task = asyncio.get_running_loop().create_task(self.post_all(deliveries))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Waits briefly for background deliveries, then closes the client."""
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=self._timeout_s)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._http.aclose()
