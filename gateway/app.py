"""Assembles the gateway's Starlette app: routes, the request-context middleware, JSON
error handlers and the lifespan that opens the gRPC channels inside the running loop
(and closes them on shutdown)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from ccbridge.gateway.backends import Backends
from ccbridge.gateway.errors import HttpError, error_response
from ccbridge.gateway.media import MediaRoutes
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.gateway.middleware import RequestContextMiddleware
from ccbridge.gateway.routes import ApiRoutes
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.gateway.webhooks import WebhookRoutes
from ccbridge.services.runtime.metrics import collecting
from ccbridge.services.runtime.tracing import asgi_middleware

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    if exc.status >= 500:
        log.warning("answered %s %s", exc.status, exc.code)
    else:
        # Bad input is logged (code only: never the body, the path or a token).
        log.info("rejected %s %s", exc.status, exc.code)
    return exc.response()


async def _on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def create_app(settings: GatewaySettings, *, ready_cache_s: float = 1.0) -> Starlette:
    """Builds the app. gRPC channels open in the lifespan, so run it under a server (or
    ``app.router.lifespan_context``) before sending requests.

    ``app.state.backends`` exposes the :class:`Backends` (readiness, draining flag) and
    ``app.state.metrics`` the app's own Prometheus registry.
    """
    metrics = GatewayMetrics()
    backends = Backends(settings, metrics, ready_cache_s=ready_cache_s)
    media = MediaRoutes(settings, metrics, backends)
    if not settings.events_hmac_enabled and not settings.events_basic_enabled:
        log.warning(
            "no Infobip events webhook authentication configured: "
            "/webhooks/infobip/events refuses every request"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with collecting(metrics.runtime):
            await backends.open()
        log.info(
            "gateway backends open (session=%s, connector=%s)",
            settings.session_addr,
            settings.connector_addr,
        )
        try:
            yield
        finally:
            await media.aclose()
            await backends.close()

    app = Starlette(
        routes=[
            *ApiRoutes(settings, backends, metrics).routes(),
            *WebhookRoutes(settings, backends, metrics).routes(),
            *media.routes(),
        ],
        middleware=[
            # Outermost, when tracing is on: the request's span covers everything below.
            *((traced,) if (traced := asgi_middleware()) is not None else ()),
            Middleware(
                RequestContextMiddleware,
                metrics=metrics,
                max_concurrent=settings.max_concurrent_requests,
            ),
        ],
        exception_handlers={HttpError: _on_http_error, HTTPException: _on_starlette_error},
        lifespan=lifespan,
    )
    # A trailing slash is a different (unknown) URL; no redirects that echo the token.
    app.router.redirect_slashes = False
    app.state.backends = backends
    app.state.metrics = metrics
    return app
