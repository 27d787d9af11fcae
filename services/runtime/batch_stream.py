"""Batches over long-lived bidirectional gRPC streams: the mesh's hottest hop, gateway →
Session (``IngestStream``).

A unary call costs both sides far more than a message on an open stream: about twice
the CPU on each side and twice the wall time for a 16-message batch (figures:
bench/README.md, "Measured choices in the code").

Client (:class:`BatchStreams`):

- ``streams`` calls are open at once and used in turn; the server answers the batches of
  one stream in order, matched here by batch id.
- A stream older than ``max_age_s`` takes no new batch and is half-closed, so new
  streams spread over the server's replicas (channels balance calls round-robin).
- A batch without an answer by its deadline fails with DEADLINE_EXCEEDED and its stream
  is dropped.
- A stream that ends or breaks with batches unanswered (the server restarting or
  shutting down) costs nothing: they are sent again on a fresh stream until their
  deadline, with a short back-off, as the channels' retry policy does for unary calls.
  The receiver must make a batch handled twice have one effect (Session dedupes message
  ids).
- A server without the stream method answers UNIMPLEMENTED: :class:`StreamUnsupported`
  tells the caller to use the unary method.
- A batch the server answered with an error is raised as ``grpc.aio.AioRpcError`` with
  that status, as a failed unary call would be.

Server (:class:`StreamServer`): answers batches in order, each failure as its own
answer; when shutting down it ends idle streams at once and busy ones after their batch.

The same for Session → connector (one ``PostCustomerMessages`` call per relay sweep) was
tried: at ~35 messages per sweep it made no difference within the noise, so that hop
stays a unary call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar, cast

import grpc

from ccbridge.services.runtime.tracing import detached

log = logging.getLogger(__name__)

STREAMS = 2
MAX_AGE_S = 30.0
RESEND_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Answer(Protocol):
    """What every stream answer carries (the stream messages in the protos)."""

    @property
    def batch_id(self) -> int: ...
    @property
    def error_code(self) -> int: ...
    @property
    def error_message(self) -> str: ...


Req = TypeVar("Req")
Ans = TypeVar("Ans", bound=Answer)


class StreamUnsupported(Exception):
    """The server answered UNIMPLEMENTED: it predates the stream method."""


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An error shaped like a failed call's, for the callers' one error path."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _StreamEnded(Exception):
    """The stream ended before answering; ``error`` is its failure, if any."""

    def __init__(self, error: grpc.aio.AioRpcError | None) -> None:
        super().__init__(error.code().name if error else "ended")
        self.error = error


class _Stream(Generic[Req, Ans]):
    """One stream call: writes batches, resolves their answers by batch id."""

    def __init__(self, call: grpc.aio.StreamStreamCall[Req, Ans]) -> None:
        self.call = call
        self.opened = time.monotonic()
        self.taking = True  # False: retired or ended, no new batch
        self.pending: dict[int, asyncio.Future[Ans]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def expect(self, batch_id: int) -> asyncio.Future[Ans]:
        """The future of ``batch_id``'s answer (set before the batch is written)."""
        future: asyncio.Future[Ans] = asyncio.get_running_loop().create_future()
        self.pending[batch_id] = future
        return future

    async def write(self, request: Req) -> None:
        """Writes a batch; a stream that already ended fails its pending futures."""
        try:
            await self.call.write(request)
        except grpc.aio.AioRpcError as exc:
            self._end(exc)
        except (asyncio.InvalidStateError, grpc.aio.UsageError):  # the call already ended
            self._end(None)

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            while True:
                read = await self.call.read()
                if read is grpc.aio.EOF:
                    break
                # The stubs type read() as ``object`` (EOF's class is private).
                answer = cast(Ans, read)
                future = self.pending.pop(answer.batch_id, None)
                if future is not None and not future.done():
                    future.set_result(answer)
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
        """No new batches; the server ends the call once it answered those it has."""
        if self.taking:
            self.taking = False
            task = asyncio.get_running_loop().create_task(self.call.done_writing())
            task.add_done_callback(_log_failure)

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


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("half-closing a batch stream failed: %s", task.exception())


class BatchStreams(Generic[Req, Ans]):
    """Sends batches over long-lived streams; see the module docstring."""

    def __init__(
        self,
        open_call: Callable[[], grpc.aio.StreamStreamCall[Req, Ans]],
        *,
        name: str,
        streams: int = STREAMS,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._open_call = open_call
        self._name = name
        self._size = streams
        self._max_age_s = max_age_s
        self._streams: list[_Stream[Req, Ans]] = []
        self._turn = itertools.count()
        self._batch_ids = itertools.count(1)

    async def send(self, build: Callable[[int], Req], timeout_s: float) -> Ans:
        """The answer to the batch ``build(batch_id)``; raises ``grpc.aio.AioRpcError``
        when it failed and :class:`StreamUnsupported` when the server has no stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        batch_id = next(self._batch_ids)
        request = build(batch_id)
        for attempt in itertools.count():
            stream = self._pick()
            future = stream.expect(batch_id)
            try:
                # The write too: a server that stopped reading blocks it (flow control).
                await asyncio.wait_for(stream.write(request), max(0.0, deadline - loop.time()))
                answer = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except TimeoutError:
                future.cancel()
                stream.drop()  # stuck: whatever it still holds goes elsewhere
                raise rpc_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"{self._name}: no answer in time"
                ) from None
            except _StreamEnded as ended:
                error = ended.error
                if error is not None and error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise StreamUnsupported(self._name) from None
                pause = RESEND_BACKOFF_S[min(attempt, len(RESEND_BACKOFF_S) - 1)]
                if loop.time() + pause >= deadline:
                    code = error.code() if error is not None else grpc.StatusCode.UNAVAILABLE
                    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.OK):
                        code = grpc.StatusCode.UNAVAILABLE
                    raise rpc_error(code, f"{self._name}: the stream ended") from None
                await asyncio.sleep(pause)
                continue
            if answer.error_code:
                code = _CODES.get(answer.error_code, grpc.StatusCode.UNKNOWN)
                raise rpc_error(code, answer.error_message)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick(self) -> _Stream[Req, Ans]:
        """The next stream in turn, retiring old ones and opening new ones as needed."""
        now = time.monotonic()
        for stream in self._streams:
            if stream.taking and now - stream.opened > self._max_age_s:
                stream.retire()
        self._streams = [s for s in self._streams if s.taking or s.pending]
        taking = [s for s in self._streams if s.taking]
        if len(taking) < self._size:
            # Not a child of the request that happens to open it (it outlives it).
            with detached():
                fresh: _Stream[Req, Ans] = _Stream(self._open_call())
            self._streams.append(fresh)
            return fresh
        return taking[next(self._turn) % len(taking)]

    async def aclose(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()


def stream_metadata(name: str) -> tuple[tuple[str, str]]:
    """The metadata of a new stream call: its own request id for the logs."""
    return (("x-request-id", f"{name}-{uuid.uuid4().hex[:12]}"),)


class StreamServer:
    """The server side: each stream's batches in order; shutdown ends the streams."""

    def __init__(self) -> None:
        # Set when shutting down: a stream ends after the batch in hand, so senders move
        # to another replica before the server stops.
        self.draining = False
        self._idle: set[asyncio.Task[object]] = set()  # waiting for their next batch

    async def serve(
        self, requests: AsyncIterator[Req], handle: Callable[[Req], Awaitable[Ans]]
    ) -> AsyncIterator[Ans]:
        """Yields ``handle``'s answer to each request, in order (``handle`` answers a
        failure itself)."""
        me = asyncio.current_task()
        assert me is not None
        self._idle.add(me)
        try:
            async for request in requests:
                self._idle.discard(me)
                yield await handle(request)
                if self.draining:
                    return  # the sender sends what follows on another stream
                self._idle.add(me)
        except asyncio.CancelledError:
            if not self.draining or me not in self._idle:
                raise
            # Woken by start_draining while waiting for a batch: end the stream with OK
            # (a cancelled handler would leave the call without a status).
            me.uncancel()
        finally:
            self._idle.discard(me)

    def start_draining(self) -> None:
        """Ends every stream: idle ones now, busy ones after their batch."""
        self.draining = True
        for task in list(self._idle):
            task.cancel()
