"""Errors of the Session service (mapped to gRPC codes by the shared interceptor)."""

from __future__ import annotations

from ccbridge.services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound


class HandoverNotFound(NotFound):
    """No handover exists for the conversation (or case)."""


class InvalidHandoverRequest(InvalidArgument):
    """A request field is missing or malformed."""


class HandoverStateConflict(FailedPrecondition):
    """The handover's state does not allow the operation."""
