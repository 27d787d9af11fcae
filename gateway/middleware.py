"""The gateway's one ASGI middleware: request id, metrics, load shedding and the
last-resort 500.

It sets ``request_id_var`` (from a well-formed ``X-Request-Id`` or a new one) for logs
and gRPC metadata, echoes ``X-Request-Id`` on the answer, records request count and
latency by *route template* (never the raw path: it may hold the webhook token), and
turns any unhandled exception into a generic JSON 500 so that no detail leaks. A client
that disconnects mid-body is counted as 499 and logged at DEBUG only. Beyond
``CCBRIDGE_MAX_CONCURRENT_REQUESTS`` requests in progress it answers 503 + Retry-After
at once, before any body is read.
Written as plain ASGI (not BaseHTTPMiddleware) to keep the hot path lean.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccbridge.gateway.errors import error_response
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.services.runtime.logging import conversation_id_var, request_id_var

log = logging.getLogger(__name__)

# Recorded in the request metrics when the caller left before its answer (nginx's 499).
CLIENT_CLOSED_REQUEST = 499
_NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# New request ids: a random per-process prefix and a counter (unique, and a fraction of
# uuid4's cost: bench/README.md, "Measured choices in the code").
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> bytes:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}".encode()  # 32 hex digits, as uuid4().hex


def _route_label(scope: Scope) -> str:
    route: BaseRoute | None = scope.get("route")
    if isinstance(route, Route):
        return route.path
    return "unmatched"


class RequestContextMiddleware:
    """Request id, metrics and the generic 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, max_concurrent: int) -> None:
        self.app = app
        self.metrics = metrics
        # Load shedding: beyond this many requests in progress, answer 503 + Retry-After
        # before reading anything (Infobip and the CCaaS retry), so a flood of slow
        # bodies cannot hold unbounded memory. Probes and metrics are never shed.
        self.max_concurrent = max_concurrent
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID_RE.match(value):
                    request_id = value
                break
        if not request_id:
            request_id = new_request_id()
        rid_token = request_id_var.set(request_id.decode())
        cid_token = conversation_id_var.set("")
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        shed = self.in_flight >= self.max_concurrent and scope["path"] not in _NEVER_SHED
        if not shed:
            self.in_flight += 1
        try:
            if shed:
                response = error_response(
                    503,
                    "overloaded",
                    "too many requests in progress; retry",
                    {"Retry-After": "1"},
                )
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            # The caller went away mid-body: nobody to answer, nothing to fix. Not an
            # ERROR with a traceback (a flood of those would be cheap to cause).
            log.debug("client disconnected on %s", _route_label(scope))
            status = CLIENT_CLOSED_REQUEST
        except Exception:
            log.exception("unhandled error on %s", _route_label(scope))
            status = 500
            if not response_started:
                response = error_response(
                    500, "internal", "internal error", {"X-Request-Id": request_id.decode()}
                )
                await response(scope, receive, send)
        finally:
            if not shed:
                self.in_flight -= 1
            self.metrics.observe_request(
                _route_label(scope), scope["method"], status, time.perf_counter() - started
            )
            conversation_id_var.reset(cid_token)
            request_id_var.reset(rid_token)
