"""Redis connection helpers (one async client per process, created in the running loop).

``REDIS_URL`` forms:

- ``redis://[:password@]host:port/db`` and ``rediss://…`` (TLS): one server;
- ``redis+sentinel://[:password@]host1:26379,host2:26379/<master name>[/db]``: Redis
  Sentinel; the client asks the sentinels for the current master and follows failovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

SENTINEL_SCHEME = "redis+sentinel"
SOCKET_TIMEOUT_S = 5.0


def _client_options(max_connections: int) -> dict[str, Any]:
    return {
        "decode_responses": False,
        # RESP2 (redis-py 8 defaults to RESP3): no push messages can arrive between the
        # replies RawPipeline counts, and reply shapes are the same on every version.
        "protocol": 2,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 15,
        "max_connections": max_connections,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """Splits a ``redis+sentinel://`` URL into sentinels, master name, db and password."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} must be host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL needs the master name as its path")
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    password = unquote(parts.password) if parts.password else None
    return sentinels, path[0], db, password


class _SentinelRedis(aioredis.Redis):
    """A master client that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


class HiredisPackingConnection(aioredis.Connection):
    """A plain TCP connection whose commands are packed by hiredis's C packer.

    redis-py's asyncio client packs every command in Python (~22 µs for an ingest
    EVALSHA, 3 µs with hiredis): about 12% of Session's CPU on the relay path.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # Like redis-py: a multi-word command name ("SCRIPT LOAD") goes as separate words.
        first = args[0]
        if isinstance(first, str) and " " in first:
            args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # redis-py raises DataError for the same inputs
            raise DataError(str(exc)) from None


def create_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """Creates a client with timeouts and a short retry on connection errors."""
    options = _client_options(max_connections)
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        sentinels, master, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(
            sentinels,
            socket_timeout=options["socket_timeout"],
            sentinel_kwargs={"password": password} if password else None,
        )
        client: aioredis.Redis = sentinel.master_for(
            master, redis_class=_SentinelRedis, db=db, password=password, **options
        )
        return client
    # A blocking pool waits (up to the timeout) for a free connection under load instead
    # of failing the request with "Too many connections".
    if url.startswith("redis://"):  # TLS and unix sockets keep their own classes
        options["connection_class"] = HiredisPackingConnection
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=5.0, **options)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


def redis_ready(client: aioredis.Redis) -> Callable[[], Awaitable[bool]]:
    """Returns a readiness check: Redis answers PING."""

    async def check() -> bool:
        return bool(await client.ping())

    return check


# The raw pipeline's retries on a broken connection: as the client's own Retry policy.
RAW_RETRIES = 3
RAW_BACKOFF_S = (0.05, 0.1, 0.2)
RAW_IDLE_MAX = 4  # connections RawPipeline keeps between round trips
_DRAIN_ABOVE = 1 << 16


class RawPipeline:
    """Runs commands in one round trip on a pooled connection, with raw replies.

    For the hot paths (Session's ingest and relay): redis-py's ``Pipeline`` costs
    ~11 µs of CPU per command (command objects, a coroutine and a timeout context per
    reply, response callbacks); this sends the hiredis-packed commands in one write and
    parses every reply with one ``hiredis.Reader``: ~2 µs per command, measured with 16
    ``EVALSHA`` per round trip. The connection (TCP, TLS, unix socket or a Sentinel's
    master, authenticated, with its db selected) is redis-py's own, borrowed from the
    client's pool, so every ``REDIS_URL`` form works unchanged.

    Replies are as Redis sends them (``bytes``, ``int``, lists, ``None``); an error
    reply comes back as a ``ResponseError`` (``NoScriptError`` for NOSCRIPT) in its
    place, not raised. A broken or timed-out connection is dropped and the whole
    pipeline is sent again on a fresh one (3 retries, as the client's retry policy),
    so its commands must be safe to repeat, as with redis-py's pipeline.
    """

    def __init__(self, client: aioredis.Redis, *, timeout_s: float = SOCKET_TIMEOUT_S) -> None:
        self._pool = client.connection_pool
        self._timeout_s = timeout_s
        # Connections kept checked out between round trips: taking one from the pool
        # costs more than a round trip's own work (locks, a timeout, a liveness read).
        # They stay in the pool's in-use set, so closing the client closes them.
        self._idle: list[Any] = []

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if not commands:
            return []
        try:
            packed = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        except TypeError as exc:
            raise DataError(str(exc)) from None
        for attempt in range(RAW_RETRIES + 1):
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                replies = await self._round_trip(conn, packed, len(commands))
            except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
                await self._discard(conn)  # replies may be half read: never reuse it
                if attempt == RAW_RETRIES:
                    if isinstance(exc, TimeoutError | RedisTimeoutError):
                        raise RedisTimeoutError("Redis did not answer in time") from exc
                    raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
                await asyncio.sleep(RAW_BACKOFF_S[min(attempt, len(RAW_BACKOFF_S) - 1)])
                continue
            except BaseException:
                await self._discard(conn)
                raise
            if len(self._idle) < RAW_IDLE_MAX:
                self._idle.append(conn)
            else:
                await self._pool.release(conn)
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def _discard(self, conn: Any) -> None:
        await conn.disconnect()
        await self._pool.release(conn)

    async def _round_trip(self, conn: Any, packed: bytes, count: int) -> list[Any]:
        if not conn.is_connected:
            await conn.connect()
        # redis-py's asyncio connections keep their streams here (redis 5.3 to 8).
        reader: asyncio.StreamReader = conn._reader
        writer: asyncio.StreamWriter = conn._writer
        writer.write(packed)
        parser = hiredis.Reader(replyError=ResponseError)
        replies: list[Any] = []
        async with asyncio.timeout(self._timeout_s):
            if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                await writer.drain()
            while len(replies) < count:
                reply = parser.gets()
                if reply is False:
                    data = await reader.read(65536)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    parser.feed(data)
                    continue
                if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
                    reply = NoScriptError(str(reply))
                replies.append(reply)
        return replies
