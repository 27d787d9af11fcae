"""``GET /media/{token}``: inbound media a CCaaS can open, and files agents attached at a
CCaaS that Infobip can open (services/runtime/media.py).

The token is the credential: signed, expiring, naming one Infobip URL (signed by Session)
or one connector's file (signed by the connector service). An Infobip file is fetched with
the API key; a connector's file comes from the connector service (``FetchAgentFile``),
which reads it with the CCaaS's credentials. Either is streamed through chunk by chunk:
nothing is written to disk, nothing is held whole in memory. Upstream's ``Content-Type``
(and ``Content-Disposition``, ``Content-Length``) pass through.

Answers: a forged token 403, an expired one 404, the proxy off 404, a file Infobip (or the
CCaaS, or a connector no longer configured) does not have 404, a file above
``CCBRIDGE_MEDIA_MAX_BYTES`` 413 (when its length is announced; otherwise the transfer is
cut at the limit), Infobip or the CCaaS or the connector service failing or unreachable
502, more than
``CCBRIDGE_MEDIA_MAX_STREAMS`` downloads at once 503 with ``Retry-After``. Never a
5xx of our own, and never the token, the URL or the key in a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ccbridge.connector.v1 import connector_pb2
from ccbridge.gateway.backends import Backends
from ccbridge.gateway.errors import HttpError
from ccbridge.gateway.metrics import GatewayMetrics
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure, HttpStream
from ccbridge.services.runtime.media import (
    ConnectorFile,
    InfobipFile,
    MediaTokenError,
    origin,
    verify,
)

log = logging.getLogger(__name__)

AGENT_FILE_DEADLINE_S = 900.0
"""Bounds one transfer of an agent's file from the connector service (the whole stream)."""

_PASSED_HEADERS = ("content-type", "content-length", "content-disposition", "last-modified")


class MediaRoutes:
    """The media proxy route; its HTTP client (with the Infobip API key) opens on first use."""

    def __init__(
        self, settings: GatewaySettings, metrics: GatewayMetrics, backends: Backends
    ) -> None:
        self._media = settings.media
        self._metrics = metrics
        self._backends = backends
        self._grpc_timeout_s = settings.grpc_timeout_s
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
            target = verify(self._media.secrets, request.path_params["token"])
        except MediaTokenError as exc:
            self._metrics.count_auth_failure("media", exc.reason)
            if exc.reason == "expired":
                raise HttpError(404, "media_link_expired", "this media link has expired") from None
            raise HttpError(403, "invalid_media_token", "invalid media link") from None
        if isinstance(target, InfobipFile) and origin(target.url) != self._infobip:
            # Signed under another INFOBIP_BASE_URL: the key goes to Infobip only.
            raise HttpError(403, "invalid_media_token", "the media link is not for Infobip")
        if self._streams >= self._max_streams:
            raise HttpError(
                503, "media_busy", "too many media downloads in progress", {"Retry-After": "1"}
            )
        if isinstance(target, ConnectorFile):
            return await self._agent_file(target)
        url = target.url
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

    async def _agent_file(self, target: ConnectorFile) -> Response:
        """Streams a connector's file from the connector service (``FetchAgentFile``)."""
        self._streams += 1
        call = self._backends.connector.FetchAgentFile(
            connector_pb2.FetchAgentFileRequest(connector=target.connector, file_ref=target.ref),
            timeout=AGENT_FILE_DEADLINE_S,
        )
        try:
            head = await self._head(call)
        except BaseException:
            call.cancel()
            self._stream_ended()
            raise
        headers = {
            "content-type": head.content_type or "application/octet-stream",
            "cache-control": "private, no-store",
            "x-content-type-options": "nosniff",
        }
        if head.content_length > 0:
            headers["content-length"] = str(head.content_length)
        if head.file_name:
            headers["content-disposition"] = (
                f"inline; filename*=UTF-8''{quote(head.file_name, safe='')}"
            )
        return StreamingResponse(self._agent_file_body(call), headers=headers)

    async def _head(
        self, call: grpc.aio.UnaryStreamCall[Any, connector_pb2.FetchAgentFileResponse]
    ) -> connector_pb2.AgentFileHead:
        try:
            async with asyncio.timeout(self._grpc_timeout_s):
                first = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._fetch_error(exc) from None
        except TimeoutError:
            log.warning("media proxy: the connector service did not answer in time")
            raise HttpError(
                502, "media_upstream_failed", "the contact center could not be reached"
            ) from None
        if first is grpc.aio.EOF or not isinstance(first, connector_pb2.FetchAgentFileResponse):
            raise HttpError(502, "media_upstream_failed", "the connector sent no file")
        if first.WhichOneof("part") != "head":
            raise HttpError(502, "media_upstream_failed", "the connector sent no file head")
        if first.head.content_length > self._media.max_bytes:
            raise HttpError(
                413, "media_too_large", "the file is larger than CCBRIDGE_MEDIA_MAX_BYTES"
            )
        return first.head

    @staticmethod
    def _fetch_error(exc: grpc.aio.AioRpcError) -> HttpError:
        code = exc.code()
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            # INVALID_ARGUMENT: a connector the service no longer has.
            return HttpError(404, "media_not_found", "the contact center has no such file")
        if code == grpc.StatusCode.OUT_OF_RANGE:
            return HttpError(
                413, "media_too_large", "the file is larger than CCBRIDGE_MEDIA_MAX_BYTES"
            )
        log.warning("media proxy: connector file fetch failed (%s)", code.name)
        return HttpError(502, "media_upstream_failed", "the contact center could not be reached")

    async def _agent_file_body(
        self, call: grpc.aio.UnaryStreamCall[Any, connector_pb2.FetchAgentFileResponse]
    ) -> AsyncIterator[bytes]:
        size = 0
        try:
            while True:
                try:
                    part = await call.read()
                except grpc.aio.AioRpcError as exc:
                    # The status is sent: the only way left to say "incomplete" is to cut.
                    log.warning("media proxy: connector file cut off (%s)", exc.code().name)
                    raise HttpFailure("the connector's file stream failed") from None
                if part is grpc.aio.EOF or not isinstance(
                    part, connector_pb2.FetchAgentFileResponse
                ):
                    return
                size += len(part.chunk)
                if size > self._media.max_bytes:
                    log.warning("media proxy: file above CCBRIDGE_MEDIA_MAX_BYTES; cut off")
                    raise HttpFailure("media larger than the limit")
                yield part.chunk
        finally:
            call.cancel()
            self._stream_ended()

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
