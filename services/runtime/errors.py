"""The exception tree shared by every service, and its mapping to gRPC status codes.

Servicers raise these; the error interceptor turns them into gRPC statuses. Anything
else becomes INTERNAL with a generic message (details go to the log, not to the caller).
"""

from __future__ import annotations

import grpc


class CcbridgeError(Exception):
    """Base of every ccbridge error. ``code`` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


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
