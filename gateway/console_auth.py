"""The operator console's login, session cookie and CSRF tokens (gateway/console.py).

- **Login**: the operator types ``CCBRIDGE_ADMIN_TOKEN``; it is compared in constant time
  (:func:`token_matches`). The login form itself carries a CSRF token: a random nonce in
  a ``SameSite=Strict`` cookie that the form must echo (a page of another site cannot
  read the cookie, so it cannot log a victim's browser into a session of its choosing).
- **Session**: a signed cookie ``ccb_console`` (HttpOnly, ``SameSite=Strict``, ``Secure``
  unless ``CCBRIDGE_ADMIN_COOKIE_SECURE=false``, path ``/``) holding its expiry and the
  session's CSRF token, signed with HMAC-SHA256 under a key derived from the admin token:
  rotating the token ends every session. Nothing is kept on the server.
- **Guessing**: wrong tokens are throttled (:class:`LoginThrottle`): after
  ``LOGIN_FAILURES_BURST`` failures, one more try per ``LOGIN_FAILURE_REFILL_S`` seconds;
  beyond that a login is answered 429 without comparing anything. The budget is the
  process's, not a client's (behind ``kubectl port-forward`` every client is 127.0.0.1).
- **CSRF**: every POST carries the session's CSRF token in a hidden ``csrf`` field,
  compared in constant time with the one in the signed cookie; a POST whose ``Origin``
  header names another origin is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ccbridge.services.runtime.settings import Secret

SESSION_COOKIE = "ccb_console"
LOGIN_COOKIE = "ccb_console_login"
# How long a login lasts (one on-call shift).
SESSION_TTL_S = 8 * 3600
_KEY_LABEL = b"ccbridge console session v1"
# Failed logins allowed at once, and the seconds that give one more back.
LOGIN_FAILURES_BURST = 10
LOGIN_FAILURE_REFILL_S = 6.0


class LoginThrottle:
    """A token bucket of failed logins: ``allowed()`` says whether a login may be
    checked at all, ``failed()`` spends one token. Successful logins spend nothing."""

    def __init__(
        self,
        burst: int = LOGIN_FAILURES_BURST,
        refill_s: float = LOGIN_FAILURE_REFILL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._refill_s = refill_s
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / self._refill_s)
        self._at = now

    def allowed(self) -> bool:
        self._refill()
        return self._tokens >= 1.0

    def retry_after_s(self) -> int:
        """Whole seconds until the next login may be checked (at least 1)."""
        self._refill()
        return max(1, math.ceil((1.0 - self._tokens) * self._refill_s))

    def failed(self) -> None:
        self._refill()
        self._tokens = max(0.0, self._tokens - 1.0)


def token_matches(given: str, token: Secret) -> bool:
    """Whether the typed token is the admin token (constant time in its content)."""
    return hmac.compare_digest(given.encode("utf-8"), token.value.encode("utf-8"))


def same(a: str, b: str) -> bool:
    """Constant-time equality of two tokens (False when either is empty)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Session:
    """A verified console session: its CSRF token and expiry (epoch seconds)."""

    csrf: str
    expires_at: int


class SessionSigner:
    """Issues and verifies the signed session cookie (see the module docstring)."""

    def __init__(self, token: Secret, *, ttl_s: int = SESSION_TTL_S) -> None:
        self._key = hmac.new(token.value.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()
        self._ttl_s = ttl_s

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session: the cookie value and what it holds."""
        expires_at = int(now if now is not None else time.time()) + self._ttl_s
        session = Session(new_nonce(), expires_at)
        payload = f"{expires_at}.{session.csrf}"
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, value: str, now: float | None = None) -> Session | None:
        """The session of a cookie value; None when forged, malformed or expired."""
        payload, _, signature = value.rpartition(".")
        if not payload or not value.isascii() or not same(signature, self._sign(payload)):
            return None
        expires, _, csrf = payload.partition(".")
        try:
            expires_at = int(expires)
        except ValueError:
            return None
        if expires_at <= int(now if now is not None else time.time()) or not csrf:
            return None
        return Session(csrf, expires_at)

    @property
    def ttl_s(self) -> int:
        return self._ttl_s
