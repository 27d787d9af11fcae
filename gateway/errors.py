"""HTTP errors of the gateway and the mapping of gRPC status codes to HTTP.

Every error answers ``{"error": {"code": "<stable_snake_case>", "message": "..."}}``.
Routes raise :class:`HttpError`; the app's exception handler renders it. gRPC codes map
to HTTP per ``google/rpc/code.proto``; 5xx answers carry a generic message so that
internal details never leak to callers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import grpc
import orjson
from starlette.responses import Response

from ccbridge.services.runtime.errors import retry_after_from


class JsonResponse(Response):
    """A JSON response rendered with orjson (the gateway's only response body format)."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


class HttpError(Exception):
    """An error answer: HTTP status, stable snake_case ``code`` and a safe message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JsonResponse:
    """Builds the JSON error body every gateway error uses."""
    return JsonResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers=dict(headers) if headers else None,
    )


# The one table: gRPC code → (HTTP status, stable code, generic message for 5xx / None to
# pass the details), per google/rpc/code.proto. Codes not listed (INTERNAL, UNKNOWN,
# DATA_LOSS) answer 500 "internal".
GRPC_TO_HTTP: Mapping[grpc.StatusCode, tuple[int, str, str | None]] = MappingProxyType(
    {
        grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument", None),
        grpc.StatusCode.OUT_OF_RANGE: (400, "out_of_range", None),
        grpc.StatusCode.NOT_FOUND: (404, "not_found", None),
        grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists", None),
        grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition", None),
        grpc.StatusCode.ABORTED: (409, "aborted", None),
        grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated", None),
        grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied", None),
        grpc.StatusCode.RESOURCE_EXHAUSTED: (
            429,
            "resource_exhausted",
            "too many requests; retry later",
        ),
        grpc.StatusCode.UNAVAILABLE: (503, "unavailable", "a backend is unavailable; retry later"),
        grpc.StatusCode.DEADLINE_EXCEEDED: (504, "deadline_exceeded", "a backend timed out"),
        grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented", "not implemented"),
        grpc.StatusCode.CANCELLED: (499, "cancelled", "request cancelled"),
    }
)
INTERNAL = (500, "internal", "internal error")
# Transient codes: the answer carries Retry-After (the backend's ccbridge-retry-after,
# else 1 s).
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_MAX_DETAIL_CHARS = 300


def http_error_from_grpc(exc: grpc.aio.AioRpcError, *, webhook: bool = False) -> HttpError:
    """Maps a failed gRPC call to an :class:`HttpError` by :data:`GRPC_TO_HTTP`.

    ``webhook=True`` answers every transient failure (UNAVAILABLE, DEADLINE_EXCEEDED,
    RESOURCE_EXHAUSTED) with 503 and ``Retry-After`` so the sender retries instead of
    dropping the message.
    """
    code = exc.code()
    status, name, generic = GRPC_TO_HTTP.get(code, INTERNAL)
    headers: dict[str, str] = {}
    if code in TRANSIENT:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_from(exc) or 1)))
        if webhook:
            status, name, generic = GRPC_TO_HTTP[grpc.StatusCode.UNAVAILABLE]
    if generic is not None:
        return HttpError(status, name, generic, headers)
    details = (exc.details() or name.replace("_", " "))[:_MAX_DETAIL_CHARS]
    return HttpError(status, name, details, headers)
