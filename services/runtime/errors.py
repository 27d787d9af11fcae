"""The exception tree shared by every service, its gRPC status codes, and the client
side of the gRPC error policy.

Servicers raise these; the server's interceptor (services/runtime/server.py) turns them
into gRPC statuses, infrastructure failures (Redis down, a peer timing out) into
UNAVAILABLE, and anything else into INTERNAL with a generic message (a bug: details go to
the log, not to the caller).

Retry information: an UNAVAILABLE answer carries the trailing metadata
``ccbridge-retry-after`` (:data:`RETRY_AFTER_METADATA`), the delay in seconds (decimal) the
caller should wait; :func:`retry_after_from` reads it. :data:`RETRYABLE_CODES` is the one
list of codes after which a caller's retry can help; INTERNAL is not in it (a bug does
not heal by retrying).
"""

from __future__ import annotations

import grpc


class CcbridgeError(Exception):
    """Base of every ccbridge error. ``code`` is the gRPC status it maps to."""

    # Read-only, so that a subclass may set it as a class attribute or compute it
    # (FarSideError).
    @property
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INTERNAL


class InvalidArgument(CcbridgeError):
    """The request is malformed or a value is out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CcbridgeError):
    """The named entity does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CcbridgeError):
    """The entity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CcbridgeError):
    """The entity is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(CcbridgeError):
    """The caller could not be authenticated (bad token or signature)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(CcbridgeError):
    """A bound is reached (e.g. a conversation's inbox is full); retry after
    ``retry_after`` seconds, once it has drained."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutOfRange(CcbridgeError):
    """A size bound is passed for good (e.g. a file above CCBRIDGE_MEDIA_MAX_BYTES); no
    retry helps."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(CcbridgeError):
    """A dependency (Redis, a peer service, the far side) is unavailable; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class FarSideError(CcbridgeError):
    """The far side (Infobip, a CCaaS) refused or failed a call.

    ``retryable`` says whether retrying can help (5xx, 429, timeouts); ``retry_after``
    is the delay in seconds the far side asked for, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status

    @property
    def code(self) -> grpc.StatusCode:
        return (
            grpc.StatusCode.UNAVAILABLE if self.retryable else grpc.StatusCode.FAILED_PRECONDITION
        )


RETRY_AFTER_METADATA = "ccbridge-retry-after"

# gRPC codes after which a retry can help (the Session worker and relay use them).
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def retry_after_from(error: grpc.aio.AioRpcError) -> float | None:
    """The delay (seconds) a failed call's ``ccbridge-retry-after`` trailer asks for."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA:
            try:
                delay = float(value)
            except (TypeError, ValueError):
                return None
            return delay if delay >= 0 else None
    return None
