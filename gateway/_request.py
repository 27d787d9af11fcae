"""Request-body helpers shared by every route: the streaming size limit, the JSON
content-type check and JSON parsing, each failing with a JSON :class:`HttpError`."""

from __future__ import annotations

import asyncio
import hmac

import orjson
from starlette.requests import Request

from ccbridge.gateway.errors import HttpError
from ccbridge.services.runtime.json_depth import MAX_JSON_DEPTH, too_deep


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """Reads the whole body, answering 413 as soon as it exceeds ``limit`` bytes and 408
    when it has not all arrived within ``timeout_s``.

    A declared Content-Length over the limit is refused before reading anything; a
    chunked or lying body is cut off while it streams, so memory stays bounded; a body
    that trickles in (a slow-body flood) holds its slot for ``timeout_s`` at most.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HttpError(
                400, "invalid_content_length", "Content-Length is not a number"
            ) from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                if chunk:
                    chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408, "request_timeout", f"request body not received within {timeout_s:g}s"
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "payload_too_large", f"request body exceeds {limit} bytes")


def require_json(request: Request) -> None:
    """Answers 415 unless Content-Type is ``application/json`` or ``application/*+json``."""
    raw = request.headers.get("content-type", "")
    media = raw.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise HttpError(415, "unsupported_media_type", "Content-Type must be application/json")


def parse_json(body: bytes) -> object:
    """Parses JSON (UTF-8); anything unparsable or nested too deep is a 400, never a 5xx."""
    if not body.strip():
        raise HttpError(400, "invalid_json", "request body is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(400, "invalid_json", "request body is not valid JSON") from None
    if too_deep(body, doc):
        raise HttpError(
            400, "invalid_json", f"request body nests deeper than {MAX_JSON_DEPTH} levels"
        )
    return doc


def consteq(given: str, expected: str) -> bool:
    """Constant-time string comparison that tolerates any characters."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )
