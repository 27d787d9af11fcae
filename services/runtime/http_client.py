"""The one HTTP client of every far-side call: Infobip (Session, History, the CLI), the
webhook and RT connectors, and every connector to come.

It is aiohttp under a small typed surface. The design card named httpx, but on the relay
path the client's CPU per request bounds the sustained rate, and aiohttp costs a fraction
of httpx's (``python -m bench.http_clients``; figures and the decision in
bench/README.md, "HTTP client"). So aiohttp is the only far-side client, and the tests
run it against real loopback servers, as production does.

What this module owns: one keep-alive pool per :class:`HttpClient` (an aiohttp session
belongs to an event loop, so it is created on first use inside the running loop); one
total timeout per request (connecting, sending and reading the whole answer); the answer
read in full up to ``max_answer_bytes`` (or streamed, :meth:`HttpClient.stream`); no
redirects followed; no cookies kept; and its failures as the exceptions below. What a
status or a failure *means* — retry or not, after how long — is
:mod:`ccbridge.services.runtime.farside`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from ccbridge.services.runtime.metrics import current as current_metrics


class HttpFailure(Exception):
    """The request got no usable answer. The text names the failure, never the URL (its
    query may carry data) nor a header."""


class RequestTimeout(HttpFailure):
    """No complete answer within the timeout. The far side may have acted on the request."""


class ConnectFailed(HttpFailure):
    """The connection could not be made (refused, unresolvable name, connect timeout):
    the request was not sent."""


class TlsFailed(ConnectFailed):
    """The TLS handshake or the certificate check failed: the request was not sent."""


class ConnectionLost(HttpFailure):
    """The connection broke, or the answer was not HTTP, after the request went out. The
    far side may have acted on the request."""


class AnswerTooLarge(HttpFailure):
    """The answer's body is longer than the client's ``max_answer_bytes`` (reading stopped
    there). ``status`` and ``headers`` are the answer's."""

    def __init__(self, message: str, *, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


_HEADER_BREAK = re.compile(r"[\r\n\x00]")


class InvalidRequest(HttpFailure):
    """The request cannot be sent at all (e.g. an invalid URL): no retry can help."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete answer. ``headers`` look names up case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return orjson.loads(self.body)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; ``{}`` when it is empty, not JSON or not an object
        (for answers whose content is optional: the caller checks what it needs)."""
        if not self.body.strip():
            return {}
        try:
            doc = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}


Params = Mapping[str, "str | int | Sequence[str]"]


class HttpStream:
    """An answer whose body is still to be read (see :meth:`HttpClient.stream`)."""

    def __init__(self, response: aiohttp.ClientResponse, client: HttpClient) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content_length = response.content_length
        self._response = response
        self._client = client

    async def chunks(self, size: int = 65536) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives."""
        try:
            async for chunk in self._response.content.iter_chunked(size):
                yield chunk
        except Exception as exc:
            raise self._client._failure(exc) from None


class HttpClient:
    """Requests to one far side over a keep-alive pool.

    ``base_url`` is prefixed to every request's ``url`` ('' to pass whole URLs);
    ``headers`` go with every request; ``timeout_s`` bounds each request from its start
    to the end of its answer. Close it with :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        max_answer_bytes: int,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        system: str = "",
    ) -> None:
        self.timeout_s = timeout_s
        # ``system``: the far side's name in ccbridge_farside_* ("infobip", a connector's
        # name). A client created while a component is built, with a system, counts and
        # times each request there (services/runtime/metrics.py).
        metrics = current_metrics() if system else None
        self._system = system
        self._observe = metrics.observe_farside if metrics is not None else None
        self.max_answer_bytes = max_answer_bytes
        self._base_url = base_url
        # sock_connect: a connect timeout raises its own error (ConnectFailed: not sent).
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
        self._headers = dict(headers or {})
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # The answers' cookies mean nothing to us; no jar to keep them.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        operation: str = "",
    ) -> HttpAnswer:
        """Sends one request and reads its whole answer, whatever its status.

        ``operation``: what the request does, for the far-side metrics (a fixed name such
        as "create message", never data of the request); the HTTP method when empty.

        ``timeout_s`` bounds this request instead of the client's (e.g. a caller whose
        right to send ends sooner).

        ``params`` are encoded into the query string (a list value repeats the name);
        ``json_body`` (when not None) is sent as JSON with its Content-Type, otherwise
        ``body`` as it is (give its Content-Type in ``headers``). Raises an
        :class:`HttpFailure` (InvalidRequest for a ``json_body`` that is not JSON: orjson
        refuses lone surrogates, integers beyond 64 bits and non-string keys).
        """
        target = self._target(url, params)
        all_headers = dict(headers or {})
        for name, value in all_headers.items():
            # aiohttp raises ValueError on CR/LF (header splitting); one bad value (e.g.
            # a message id in Idempotency-Key) must fail this request only, as a failure
            # no retry can fix.
            if _HEADER_BREAK.search(name) or _HEADER_BREAK.search(value):
                raise InvalidRequest(f"header {name!r} holds a CR, LF or NUL character")
        if json_body is not None:
            try:
                body = orjson.dumps(json_body)
            except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate, an int > 64 bits
                raise InvalidRequest(f"the body cannot be written as JSON ({exc})") from None
            all_headers["Content-Type"] = "application/json"
        limit = self.timeout_s if timeout_s is None else timeout_s
        timeout = (
            self._timeout
            if timeout_s is None
            else aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
        )
        observe = self._observe
        started = time.perf_counter() if observe is not None else 0.0
        status = "error"
        try:
            async with self._client().request(
                method,
                target,
                data=body,
                headers=all_headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                status = str(response.status)
                return HttpAnswer(response.status, response.headers, await self._read(response))
        # AnswerTooLarge (from _read) is none of these and passes through.
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = self._failure(exc, limit)
            status = "timeout" if isinstance(failure, RequestTimeout) else "error"
            raise failure from None
        finally:
            if observe is not None:
                observe(self._system, operation or method, status, time.perf_counter() - started)

    def _target(self, url: str, params: Params | None) -> str:
        target = self._base_url + url
        if params:
            query = {
                key: [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
                for key, value in params.items()
            }
            target += "?" + urlencode(query, doseq=True)
        return target

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[HttpStream]:
        """Sends one request and yields its answer before the body is read: the body
        comes chunk by chunk from :meth:`HttpStream.chunks`, never whole in memory.

        ``timeout_s`` bounds connecting and each wait for data (not the whole transfer,
        which may be long). The same failures as :meth:`request`; a failure while the body
        is read raises from ``chunks``.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
        )
        try:
            response = await self._client().request(
                method,
                self._target(url, None),
                headers=dict(headers or {}),
                allow_redirects=False,
                timeout=timeout,
            )
        except Exception as exc:
            raise self._failure(exc) from None
        try:
            yield HttpStream(response, self)
        finally:
            response.release()

    def _failure(self, exc: BaseException, limit: float | None = None) -> BaseException:
        """The HttpFailure an aiohttp or timeout error means (others are returned as
        they are); ``limit``: the request's timeout when not the client's."""
        limit = self.timeout_s if limit is None else limit
        # The order matters: the connect timeout is a TimeoutError and a connector error too.
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ConnectFailed(f"connect timed out after {limit:g}s")
        if isinstance(exc, TimeoutError):
            return RequestTimeout(f"timed out after {limit:g}s")
        if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
            return TlsFailed(f"TLS failed ({type(exc).__name__})")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ConnectFailed(f"could not connect ({type(exc).__name__})")
        if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            return InvalidRequest(f"invalid request ({type(exc).__name__})")
        if isinstance(exc, aiohttp.ClientError):
            return ConnectionLost(f"connection lost ({type(exc).__name__})")
        return exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_answer_bytes
        too_large = f"answer larger than {limit} bytes"
        if response.content_length is not None:
            if response.content_length > limit:
                raise AnswerTooLarge(too_large, status=response.status, headers=response.headers)
            return await response.read()  # bounded by its Content-Length
        chunks: list[bytes] = []  # chunked or until close: counted as it comes
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(too_large, status=response.status, headers=response.headers)
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Lets the transports close before the loop goes (aiohttp's advice).
            await asyncio.sleep(0)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
