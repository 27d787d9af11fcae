"""The one gRPC → HTTP table of the gateway (google/rpc/code.proto), and Retry-After."""

from __future__ import annotations

import grpc
import pytest

from ccbridge.gateway.errors import http_error_from_grpc


def _error(
    code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details="the detail"
    )


@pytest.mark.parametrize(
    ("code", "status", "name"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503, "unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found"),
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"),
        (grpc.StatusCode.FAILED_PRECONDITION, 409, "failed_precondition"),
        (grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "resource_exhausted"),
        (grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"),
        (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied"),
        (grpc.StatusCode.UNIMPLEMENTED, 501, "not_implemented"),
        (grpc.StatusCode.INTERNAL, 500, "internal"),
        (grpc.StatusCode.UNKNOWN, 500, "internal"),
        (grpc.StatusCode.DATA_LOSS, 500, "internal"),
    ],
)
def test_grpc_codes_map_to_http(code: grpc.StatusCode, status: int, name: str) -> None:
    error = http_error_from_grpc(_error(code))
    assert (error.status, error.code) == (status, name)
    if status >= 500 or status == 429:
        assert error.message != "the detail"  # a generic message: no backend detail leaks
    else:
        assert error.message == "the detail"
    transient = code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert ("Retry-After" in error.headers) is transient


def test_retry_after_follows_the_backend_trailer_rounded_up() -> None:
    error = http_error_from_grpc(
        _error(grpc.StatusCode.UNAVAILABLE, (("ccbridge-retry-after", "2.5"),))
    )
    assert error.headers["Retry-After"] == "3"
    assert http_error_from_grpc(_error(grpc.StatusCode.UNAVAILABLE)).headers["Retry-After"] == "1"


def test_webhooks_answer_every_transient_failure_503() -> None:
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        error = http_error_from_grpc(_error(code), webhook=True)
        assert (error.status, error.code, error.headers["Retry-After"]) == (503, "unavailable", "1")
    assert http_error_from_grpc(_error(grpc.StatusCode.NOT_FOUND), webhook=True).status == 404
