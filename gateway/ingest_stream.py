"""The gateway's way to Session.Ingest: batches over long-lived ``IngestStream`` calls
(services/runtime/batch_stream.py has the how and the measured why).

Each batch is answered only once Session stored it, so "durable before 200" holds as with
one call per batch; a batch whose stream broke is sent again (Session's dedupe answers an
already stored message DUPLICATE). A Session without ``IngestStream`` (an older version
during a rolling upgrade) gets unary ``Ingest`` calls for ``UNARY_FALLBACK_S``. Failures
are raised as ``grpc.aio.AioRpcError``, as a unary call would raise them, so the webhook
routes map them the same way (503 when transient).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.batch_stream import (
    MAX_AGE_S,
    STREAMS,
    BatchStreams,
    StreamUnsupported,
    stream_metadata,
)
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

UNARY_FALLBACK_S = 60.0

Results = Sequence[session_pb2.IngestResult]


class IngestStreams:
    """Sends Ingest batches over long-lived streams, or unary calls to an older Session."""

    def __init__(
        self,
        stub: Callable[[], session_pb2_grpc.SessionServiceAsyncStub],
        unary: Callable[[list[common_pb2.Message]], Awaitable[Results]],
        *,
        timeout_s: float,
        on_error: Callable[[grpc.StatusCode], None] = lambda code: None,
        streams: int = STREAMS,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._streams: BatchStreams[
            session_pb2.IngestStreamRequest, session_pb2.IngestStreamResponse
        ] = BatchStreams(
            lambda: stub().IngestStream(metadata=stream_metadata("ingest-stream")),
            name="Session.IngestStream",
            streams=streams,
            max_age_s=max_age_s,
        )
        self._unary = unary
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._unary_until = 0.0

    async def send(self, messages: list[common_pb2.Message]) -> Results:
        """Session's results for ``messages``, in order, once stored; raises
        ``grpc.aio.AioRpcError`` when the batch failed."""
        if time.monotonic() >= self._unary_until:
            try:
                answer = await self._streams.send(
                    lambda batch_id: session_pb2.IngestStreamRequest(
                        batch_id=batch_id, messages=messages
                    ),
                    self._timeout_s,
                )
                return answer.results
            except StreamUnsupported:
                log.warning("Session has no IngestStream; using unary Ingest for a while")
                self._unary_until = time.monotonic() + UNARY_FALLBACK_S
            except grpc.aio.AioRpcError as exc:
                self._on_error(exc.code())
                log.warning("IngestStream batch failed: %s", exc.code().name)
                raise
        return await self._unary(messages)

    async def aclose(self) -> None:
        await self._streams.aclose()
