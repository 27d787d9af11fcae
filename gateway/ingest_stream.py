"""The gateway's way to Session.Ingest: batches over long-lived ``IngestStream`` calls.

A unary call costs the gateway and Session far more than a message on an open stream:
for a 16-message batch on the 2-core development machine, ~215 µs of client and ~350 µs
of server CPU and ~560 µs of wall time as a call, against ~110 µs, ~150 µs and ~240 µs
on a stream (README, Performance).

- ``STREAMS`` calls are open at once and used in turn; Session answers the batches of one
  stream in order, matched here by batch id.
- A stream older than ``MAX_AGE_S`` takes no new batch and is half-closed, so new
  streams spread over Session replicas (the channel balances calls round-robin).
- A batch is answered only once Session stored it, so "durable before 200" holds as
  with one call per batch. A batch without an answer by its deadline fails with
  DEADLINE_EXCEEDED and its stream is dropped.
- A stream that ends or breaks with batches unanswered (Session restarting or shutting
  down) costs nothing: those batches are sent again on a fresh stream until their
  deadline, with a short back-off, as the channel's retry policy does for unary calls.
  A batch that was stored before the break is stored once: Session's dedupe answers its
  messages DUPLICATE.
- A Session without ``IngestStream`` (an older version during a rolling upgrade) answers
  UNIMPLEMENTED: unary ``Ingest`` calls are used for ``UNARY_FALLBACK_S``.

Failures are raised as ``grpc.aio.AioRpcError`` with the batch's status, as a unary call
would raise them, so the webhook routes map them the same way (503 when transient).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

STREAMS = 2
MAX_AGE_S = 30.0
UNARY_FALLBACK_S = 60.0
RESEND_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)

Results = Sequence[session_pb2.IngestResult]
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An error shaped like a failed call's, for the callers' one error path."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _StreamEnded(Exception):
    """The stream ended before answering; ``error`` is its failure, if any."""

    def __init__(self, error: grpc.aio.AioRpcError | None) -> None:
        super().__init__(error.code().name if error else "ended")
        self.error = error


class _Unsupported(Exception):
    """Session answered UNIMPLEMENTED: it predates IngestStream."""


class _Stream:
    """One IngestStream call: writes batches, resolves their answers by batch id."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.opened = time.monotonic()
        self.taking = True  # False: retired or ended, no new batch
        self.pending: dict[int, asyncio.Future[session_pb2.IngestStreamResponse]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def submit(
        self, batch_id: int, messages: Sequence[common_pb2.Message]
    ) -> asyncio.Future[session_pb2.IngestStreamResponse]:
        future: asyncio.Future[session_pb2.IngestStreamResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[batch_id] = future
        try:
            await self.call.write(
                session_pb2.IngestStreamRequest(batch_id=batch_id, messages=messages)
            )
        except grpc.aio.AioRpcError as exc:
            self._end(exc)
        except (asyncio.InvalidStateError, grpc.aio.UsageError):  # the call already ended
            self._end(None)
        return future

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    break
                future = self.pending.pop(response.batch_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = exc
        finally:
            self._end(error)

    def _end(self, error: grpc.aio.AioRpcError | None) -> None:
        self.taking = False
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_StreamEnded(error))

    def retire(self) -> None:
        """No new batches; Session ends the call once it answered those it has."""
        if self.taking:
            self.taking = False
            task = asyncio.get_running_loop().create_task(self.call.done_writing())
            task.add_done_callback(_ignore_result)

    def drop(self) -> None:
        """Ends the call now (its unanswered batches see the stream end)."""
        self.taking = False
        self.call.cancel()

    async def aclose(self) -> None:
        self.drop()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("half-closing an ingest stream failed: %s", task.exception())


class IngestStreams:
    """Sends Ingest batches over long-lived streams; see the module docstring."""

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
        self._stub = stub
        self._unary = unary
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._size = streams
        self._max_age_s = max_age_s
        self._streams: list[_Stream] = []
        self._turn = itertools.count()
        self._batch_ids = itertools.count(1)
        self._unary_until = 0.0

    async def send(self, messages: list[common_pb2.Message]) -> Results:
        """Session's results for ``messages``, in order, once stored; raises
        ``grpc.aio.AioRpcError`` when the batch failed."""
        if time.monotonic() >= self._unary_until:
            try:
                return await self._send_on_stream(messages)
            except _Unsupported:
                log.warning("Session has no IngestStream; using unary Ingest for a while")
                self._unary_until = time.monotonic() + UNARY_FALLBACK_S
            except grpc.aio.AioRpcError as exc:
                self._on_error(exc.code())
                log.warning("IngestStream batch failed: %s", exc.code().name)
                raise
        return await self._unary(messages)

    async def _send_on_stream(self, messages: list[common_pb2.Message]) -> Results:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        batch_id = next(self._batch_ids)
        for attempt in itertools.count():
            stream = self._pick()
            future = await stream.submit(batch_id, messages)
            try:
                response = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except TimeoutError:
                stream.drop()  # stuck: whatever it still holds goes elsewhere
                raise rpc_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "Session did not answer in time"
                ) from None
            except _StreamEnded as ended:
                error = ended.error
                if error is not None and error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise _Unsupported from None
                pause = RESEND_BACKOFF_S[min(attempt, len(RESEND_BACKOFF_S) - 1)]
                if loop.time() + pause >= deadline:
                    code = error.code() if error is not None else grpc.StatusCode.UNAVAILABLE
                    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.OK):
                        code = grpc.StatusCode.UNAVAILABLE
                    raise rpc_error(code, "Session's ingest stream ended") from None
                await asyncio.sleep(pause)
                continue
            if response.error_code:
                code = _CODES.get(response.error_code, grpc.StatusCode.UNKNOWN)
                raise rpc_error(code, response.error_message)
            return response.results
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick(self) -> _Stream:
        """The next stream in turn, retiring old ones and opening new ones as needed."""
        now = time.monotonic()
        for stream in self._streams:
            if stream.taking and now - stream.opened > self._max_age_s:
                stream.retire()
        self._streams = [s for s in self._streams if s.taking or s.pending]
        taking = [s for s in self._streams if s.taking]
        if len(taking) < self._size:
            stream = _Stream(
                self._stub().IngestStream(
                    metadata=(("x-request-id", f"ingest-stream-{uuid.uuid4().hex[:12]}"),)
                )
            )
            self._streams.append(stream)
            return stream
        return taking[next(self._turn) % len(taking)]

    async def aclose(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()
