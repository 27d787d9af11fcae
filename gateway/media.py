"""``GET /media/{token}``: inbound media a CCaaS can open (services/runtime/media.py).

The token is the credential: signed by Session, expiring, naming one Infobip URL. The file
is fetched from Infobip with the API key and streamed through chunk by chunk: nothing is
written to disk, nothing is held whole in memory. Upstream's ``Content-Type`` (and
``Content-Disposition``, ``Content-Length``) pass through.

Answers: a forged token 403, an expired one 404, the proxy off 404, a file Infobip does
not have 404, a file above ``CCBRIDGE_MEDIA_MAX_BYTES`` 413 (when its length is announced;
otherwise the transfer is cut at the limit), Infobip failing or unreachable 502, more than
``CCBRIDGE_MEDIA_MAX_STREAMS`` downloads at once 503 with ``Retry-After``. Never a
5xx of our own, and never the token, the URL or the key in a log line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ccbridge.gateway.errors import HttpError
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure, HttpStream
from ccbridge.services.runtime.media import MediaTokenError, origin, verify

log = logging.getLogger(__name__)

_PASSED_HEADERS = ("content-type", "content-length", "content-disposition", "last-modified")


class MediaRoutes:
    """The media proxy route; its HTTP client (with the Infobip API key) opens on first use."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self._media = settings.media
        self._metrics = metrics
        self._infobip = origin(settings.infobip_base_url)
        # Streams take long: capped apart, so that downloads never crowd out webhooks.
        self._max_streams = settings.media_max_streams
        self._streams = 0
        self._client: HttpClient | None = None
        if self._media.enabled:
            self._client = HttpClient(
                timeout_s=settings.infobip_timeout_s,
                max_answer_bytes=self._media.max_bytes,
                headers={
                    "Authorization": f"App {settings.infobip_api_key.value}",
                    "User-Agent": "ccbridge",
                },
            )

    def routes(self) -> list[Route]:
        return [Route("/media/{token}", self.media, methods=["GET"])]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def media(self, request: Request) -> Response:
        if self._client is None:
            raise HttpError(404, "media_proxy_off", "the media proxy is not enabled")
        try:
            url = verify(self._media.secrets, request.path_params["token"])
        except MediaTokenError as exc:
            self._metrics.count_auth_failure("media", exc.reason)
            if exc.reason == "expired":
                raise HttpError(404, "media_link_expired", "this media link has expired") from None
            raise HttpError(403, "invalid_media_token", "invalid media link") from None
        if origin(url) != self._infobip:
            # Signed under another INFOBIP_BASE_URL: the key goes to Infobip only.
            raise HttpError(403, "invalid_media_token", "the media link is not for Infobip")
        if self._streams >= self._max_streams:
            raise HttpError(
                503, "media_busy", "too many media downloads in progress", {"Retry-After": "1"}
            )
        self._streams += 1
        stack = contextlib.AsyncExitStack()
        stack.callback(self._stream_ended)
        try:
            upstream = await stack.enter_async_context(self._client.stream("GET", url))
            self._check(upstream)
        except HttpFailure as exc:
            await stack.aclose()
            log.warning("media proxy: Infobip unreachable (%s)", exc)
            raise HttpError(502, "media_upstream_failed", "Infobip could not be reached") from None
        except BaseException:
            await stack.aclose()
            raise
        headers = {
            name: upstream.headers[name] for name in _PASSED_HEADERS if name in upstream.headers
        }
        headers.setdefault("content-type", "application/octet-stream")
        headers["cache-control"] = "private, no-store"
        headers["x-content-type-options"] = "nosniff"
        return StreamingResponse(self._body(upstream, stack), headers=headers)

    def _stream_ended(self) -> None:
        self._streams -= 1

    def _check(self, upstream: HttpStream) -> None:
        status = upstream.status
        if status in (400, 404, 410):  # Infobip answers a missing entity 400 NOT_FOUND too
            raise HttpError(404, "media_not_found", "Infobip has no such media file")
        if status >= 300 or status < 200:
            log.warning("media proxy: Infobip answered %d", status)
            raise HttpError(502, "media_upstream_failed", f"Infobip answered {status}")
        length = upstream.content_length
        if length is not None and length > self._media.max_bytes:
            raise HttpError(
                413, "media_too_large", "the file is larger than CCBRIDGE_MEDIA_MAX_BYTES"
            )

    async def _body(
        self, upstream: HttpStream, stack: contextlib.AsyncExitStack
    ) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in upstream.chunks():
                size += len(chunk)
                if size > self._media.max_bytes:
                    # The status is sent: the only way left to say "incomplete" is to cut.
                    log.warning("media proxy: file above CCBRIDGE_MEDIA_MAX_BYTES; cut off")
                    raise HttpFailure("media larger than the limit")
                yield chunk
        finally:
            await stack.aclose()
