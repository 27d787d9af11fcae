"""Redis access: the redis-py client every service uses (:func:`create_redis`) and, for
Session's hot paths, :class:`RawPipeline` with its Lua scripts (:class:`RawScript`).

``REDIS_URL`` forms:

- ``redis://[[user]:password@]host:port/db``, ``rediss://…`` (TLS; options such as
  ``?ssl_ca_certs=/path/ca.pem`` as redis-py reads them) and ``unix:///path?db=N``: one
  server;
- ``redis+sentinel://[:password@]host1:26379,host2:26379/<master name>[/db]``: Redis
  Sentinel; the client asks the sentinels for the current master and follows failovers;
- ``redis+cluster://[[user]:password@]host1:port[,host2:port...][?options]`` and
  ``rediss+cluster://…`` (TLS, the same ``ssl_…`` options): Redis Cluster, through
  redis-py's ``RedisCluster`` (any listed node is enough to find the others; db 0 only).

Hot paths send their commands as a :class:`Batch` (:func:`create_batch`): one round trip
per server, raw replies. :class:`RawPipeline` is the batch of one server (or a Sentinel's
master); :class:`ClusterBatch` the batch of a cluster (redis-py's cluster pipeline, which
sends each node its commands and follows MOVED/ASK).

A Lua script runs one way on each path, both recovering from a Redis that lost its
script cache (a restart, ``SCRIPT FLUSH``, a new cluster node): redis-py's
``register_script`` (``Script``) on the client, :meth:`Batch.register_script` on a batch.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    DataError,
    InvalidResponse,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ccbridge.services.runtime.metrics import current as current_metrics
from ccbridge.services.runtime.tracing import redis_batch_span

SENTINEL_SCHEME = "redis+sentinel"
# Cluster scheme → the scheme of one node's URL (its options are read as redis-py does).
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CLUSTER_NODE_MAX_CONNECTIONS = 1024
RedisClient = aioredis.Redis | RedisCluster
"""What :func:`create_redis` gives: one server (or a Sentinel's master), or a cluster."""
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0


def _client_options(max_connections: int) -> dict[str, Any]:
    return {
        "decode_responses": False,
        # RESP2 (redis-py 8 defaults to RESP3): no push messages can arrive between the
        # replies RawPipeline counts, and reply shapes are the same on every version.
        "protocol": 2,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
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

    redis-py's asyncio client packs every command in Python, several times slower than
    hiredis's packer (figures: bench/README.md, "Measured choices in the code").
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


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Splits a ``redis+cluster://`` / ``rediss+cluster://`` URL into its nodes and the
    connection options (user, password, TLS and query options, as redis-py reads them
    from a one-server URL)."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL: {parts.scheme}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node {item!r} must be host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only db 0")
    first = f"{credentials}@{hosts.split(',')[0]}" if credentials else hosts.split(",")[0]
    single = urlunsplit((CLUSTER_SCHEMES[parts.scheme], first, "", parts.query, ""))
    options: dict[str, Any] = dict(parse_url(single))
    for key in ("host", "port", "db"):
        options.pop(key, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return nodes, options


def redis_text(value: object) -> str:
    """A Redis reply as text: replies are bytes (``decode_responses=False``); some paths
    (scripts, cluster pipelines) give str or numbers."""
    return value.decode() if isinstance(value, bytes) else str(value)


def create_redis(url: str, *, max_connections: int = 64) -> RedisClient:
    """Creates a client with timeouts and a short retry on connection errors."""
    options = _client_options(max_connections)
    if urlsplit(url).scheme in CLUSTER_SCHEMES:
        nodes, connection = parse_cluster_url(url)
        # The cluster client cannot wait for a free connection (as the blocking pool
        # below does): at its limit a call fails. The limit per node is therefore far
        # above what one process runs at once; connections open only as needed.
        options["max_connections"] = max(max_connections, CLUSTER_NODE_MAX_CONNECTIONS)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            **{**options, **connection},
        )
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


def redis_ready(client: RedisClient) -> Callable[[], Awaitable[bool]]:
    """Returns a readiness check: Redis answers PING."""

    async def check() -> bool:
        return bool(await client.ping())

    return check


# The raw pipeline's retries on a broken connection: as the client's own Retry policy.
RAW_RETRIES = 3
RAW_BACKOFF_S = (0.05, 0.1, 0.2)
RAW_MAX_CONNECTIONS = 16  # RawPipeline's own connections, all kept between round trips
_DRAIN_ABOVE = 1 << 16
_READ_SIZE = 1 << 16
# The TLS options redis-py's SSLConnection takes (``rediss://…?ssl_…=``), as RawPipeline
# applies them; any other ``ssl_`` option is refused rather than silently ignored.
_TLS_OPTIONS = frozenset(
    {
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class RawScript:
    """A Lua script for a :class:`Batch` (from :meth:`Batch.register_script`).

    :meth:`command` gives the ``EVALSHA`` to put in a batch; when Redis has lost the
    script (NOSCRIPT: it did not run), the batch runs that call again as ``EVAL`` (which
    also loads it), as redis-py's ``Script`` loads and runs it again.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str | bytes) -> None:
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()

    def command(self, keys: Sequence[Any], args: Sequence[Any] = ()) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class Batch(abc.ABC):
    """Commands sent at once (one round trip per server), replies raw and in order.

    Replies are as Redis sends them (``bytes``, ``int``, lists, ``None``); an error reply
    comes back as a ``ResponseError`` (``NoScriptError`` for NOSCRIPT) in its place, not
    raised. A script call (:meth:`register_script`) that found its script missing runs
    again as ``EVAL``. A batch may be sent again after a connection failure, so its
    commands must be safe to repeat; it is no transaction.
    """

    def __init__(self) -> None:
        self._scripts: dict[str, bytes] = {}
        # Created while a component is built: each round trip is timed into its
        # ccbridge_redis_command_duration_seconds (services/runtime/metrics.py).
        metrics = current_metrics()
        self._observe = metrics.observe_redis if metrics is not None else None

    def register_script(self, source: str | bytes) -> RawScript:
        """A script whose calls (:meth:`RawScript.command`) run again as ``EVAL`` when
        Redis answers NOSCRIPT."""
        script = RawScript(source)
        self._scripts[script.sha] = script.source
        return script

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if not commands:
            return []
        observe = self._observe
        if observe is None:
            replies = await self._send_batch(commands)
        else:
            started = time.perf_counter()
            try:
                replies = await self._send_batch(commands)
            finally:
                observe(time.perf_counter() - started)
        missing = [
            i
            for i, reply in enumerate(replies)
            if isinstance(reply, NoScriptError)
            and len(commands[i]) > 1
            and commands[i][1] in self._scripts
        ]
        if missing:
            # NOSCRIPT means the call did not run: each runs again, in order, in one more
            # round trip (after the batch's other commands, which did run).
            again = [("EVAL", self._scripts[commands[i][1]], *commands[i][2:]) for i in missing]
            for index, reply in zip(missing, await self._send_batch(again), strict=True):
                replies[index] = reply
        return replies

    async def execute_in_turn(self, *groups: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Each group's commands run only after the previous group's have (e.g. a push
        before its schedule entry); replies per group. One round trip here: one
        connection runs its commands in order. (A script call that found its script
        missing runs again after every group, as in :meth:`execute`.)"""
        replies = await self.execute([command for group in groups for command in group])
        out: list[list[Any]] = []
        start = 0
        for group in groups:
            out.append(replies[start : start + len(group)])
            start += len(group)
        return out

    @abc.abstractmethod
    async def _send_batch(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Sends the commands; their replies in order, errors in place."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Closes what the batch opened itself (not the client it was given)."""


class ClusterBatch(Batch):
    """A batch on Redis Cluster: redis-py's cluster pipeline (not transactional) sends
    each node the commands of its slots in one round trip and follows MOVED/ASK and
    TRYAGAIN; a script call's keys must share a slot (one hash tag)."""

    def __init__(self, client: RedisCluster) -> None:
        super().__init__()
        self._client = client

    async def execute_in_turn(self, *groups: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """A round trip per group: each node keeps its own commands' order, not the
        batch's, so a group is sent once the previous one has run on every node."""
        return [await self.execute(group) for group in groups]

    async def _send_batch(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        pipe = self._client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        """Nothing of its own: the pipeline uses the client's connections."""


def create_batch(client: RedisClient) -> Batch:
    """The batch for ``client``: :class:`ClusterBatch` on a cluster, else
    :class:`RawPipeline`."""
    if isinstance(client, RedisCluster):
        return ClusterBatch(client)
    return RawPipeline(client)


class _Connection:
    """One of RawPipeline's connections: its streams and its reply parser."""

    __slots__ = ("parser", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # RESP2 (no HELLO is sent): replies only, no push messages between them.
        self.parser = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)

    def usable(self) -> bool:
        """False once the server closed it while it sat idle (CLIENT KILL, restart)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


def _tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py's SSLConnection would build from the same options."""
    unknown = {k for k in options if k.startswith("ssl_")} - _TLS_OPTIONS
    if unknown:
        raise ValueError(f"RawPipeline does not support the TLS options {sorted(unknown)}")
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str) and reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, not {reqs!r}")
    cert_reqs = _CERT_REQS[reqs] if isinstance(reqs, str) else ssl.VerifyMode(reqs)
    context = ssl.create_default_context()
    context.check_hostname = (
        bool(options.get("ssl_check_hostname", True)) and cert_reqs != ssl.CERT_NONE
    )
    context.verify_mode = cert_reqs
    for flag in options.get("ssl_include_verify_flags") or ():
        context.verify_flags |= flag
    for flag in options.get("ssl_exclude_verify_flags") or ():
        context.verify_flags &= ~flag
    if options.get("ssl_certfile") or options.get("ssl_keyfile"):
        context.load_cert_chain(
            options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password")
        )
    if options.get("ssl_ca_certs") or options.get("ssl_ca_data") or options.get("ssl_ca_path"):
        context.load_verify_locations(
            options.get("ssl_ca_certs"), options.get("ssl_ca_path"), options.get("ssl_ca_data")
        )
    if options.get("ssl_min_version") is not None:
        context.minimum_version = options["ssl_min_version"]
    if options.get("ssl_ciphers"):
        context.set_ciphers(options["ssl_ciphers"])
    return context


class RawPipeline(Batch):
    """The :class:`Batch` of one server: one round trip on its own connection.

    For the hot paths (Session's ingest and relay): redis-py's ``Pipeline`` pays per
    command for command objects, a coroutine and a timeout context per reply and
    response callbacks; this writes the commands packed by hiredis's ``pack_command`` at
    once and parses every reply with one ``hiredis.Reader``, about a quarter of the
    client CPU per round trip (bench/README.md, ``python -m bench.redis_pipeline``).

    It connects where the redis-py client it is given connects, with the same options:
    the client's documented ``get_connection_kwargs()`` (host and port or unix socket,
    TLS options, user and password or credential provider, db, client name, timeouts)
    and its pool (TLS for ``rediss://``; for Sentinel, the master the sentinels name,
    asked again after a connection failure or a READONLY reply). Up to
    ``max_connections`` connections are open at once, all kept between round trips;
    :meth:`aclose` closes them.

    Replies as :class:`Batch` says. A broken or timed-out connection is dropped (with
    the idle ones, likely broken too) and the whole pipeline is sent again on a fresh
    one (3 retries, as the client's retry policy), as with redis-py's pipeline.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout_s: float | None = None,
        max_connections: int = RAW_MAX_CONNECTIONS,
    ) -> None:
        super().__init__()
        pool = client.connection_pool
        options: dict[str, Any] = dict(client.get_connection_kwargs())  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._tls = (
            _tls_context(options) if issubclass(pool.connection_class, SSLConnection) else None
        )
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._credentials = options.get("credential_provider")
        self._db = int(options.get("db") or 0)
        self._client_name: str | None = options.get("client_name")
        self._timeout_s = timeout_s or options.get("socket_timeout") or SOCKET_TIMEOUT_S
        self._connect_timeout_s = (
            options.get("socket_connect_timeout")
            or options.get("socket_timeout")
            or CONNECT_TIMEOUT_S
        )
        self._sentinel = pool if isinstance(pool, SentinelConnectionPool) else None
        self._master: tuple[str, int] | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def _send_batch(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        with redis_batch_span(commands):  # redis-py's instrumentation does not see it
            return await self._send(self._pack(commands), len(commands))

    async def aclose(self) -> None:
        """Closes the idle connections now and the busy ones when their round trip ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except OSError:
                pass  # already broken: closed is all we want

    @staticmethod
    def _pack(commands: Sequence[Sequence[Any]]) -> bytes:
        try:
            return b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        except TypeError as exc:  # what redis-py raises for the same inputs
            raise DataError(str(exc)) from None

    async def _send(self, packed: bytes, count: int) -> list[Any]:
        if self._closed:
            raise RedisConnectionError("RawPipeline is closed")
        async with self._slots:
            for attempt in range(RAW_RETRIES + 1):
                conn: _Connection | None = None
                try:
                    conn = self._idle.pop() if self._idle else None
                    if conn is None or not conn.usable():
                        conn = await self._connection(conn)
                    result = await self._round_trip(conn, packed, count)
                except AuthenticationError:
                    if conn is not None:
                        conn.close()
                    raise
                except (OSError, TimeoutError, RedisConnectionError) as exc:
                    # Replies may be half read: never reuse it. The idle ones likely
                    # broke with it (a restart, a failover): fresh ones for the retry.
                    if conn is not None:
                        conn.close()
                    self._drop_idle()
                    if attempt == RAW_RETRIES:
                        if isinstance(exc, TimeoutError):
                            raise RedisTimeoutError("Redis did not answer in time") from exc
                        raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
                    await asyncio.sleep(RAW_BACKOFF_S[min(attempt, len(RAW_BACKOFF_S) - 1)])
                    continue
                except BaseException:
                    if conn is not None:
                        conn.close()
                    raise
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._master = None  # Sentinel: ask again which server is the master

    async def _connection(self, broken: _Connection | None) -> _Connection:
        """An idle connection still open, else a new one (``broken``: one found closed)."""
        if broken is not None:
            broken.close()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        async with asyncio.timeout(self._connect_timeout_s):
            if self._path is not None:
                reader, writer = await asyncio.open_unix_connection(self._path)
            else:
                host, port = await self._address()
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._tls, server_hostname=host if self._tls else None
                )
            conn = _Connection(reader, writer)
            try:
                await self._handshake(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _address(self) -> tuple[str, int]:
        if self._sentinel is None:
            return self._host, self._port
        if self._master is None:
            host, port = await self._sentinel.sentinel_manager.discover_master(
                self._sentinel.service_name
            )
            self._master = (str(host), int(port))
        return self._master

    async def _handshake(self, conn: _Connection) -> None:
        """AUTH, SELECT and CLIENT SETNAME as redis-py sends them, in one round trip."""
        commands: list[tuple[Any, ...]] = []
        username, password = self._username, self._password
        if self._credentials is not None:
            credentials = await self._credentials.get_credentials_async()
            username, password = (None, *credentials)[-2:]
        if password:
            commands.append(("AUTH", username, password) if username else ("AUTH", password))
        if self._db:
            commands.append(("SELECT", self._db))
        if self._client_name:
            commands.append(("CLIENT", "SETNAME", self._client_name))
        if not commands:
            return
        replies = await self._round_trip(conn, self._pack(commands), len(commands))
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, Exception):
                if command[0] == "AUTH":
                    raise AuthenticationError(str(reply))
                raise reply

    async def _round_trip(self, conn: _Connection, packed: bytes, count: int) -> list[Any]:
        writer = conn.writer
        writer.write(packed)
        reader = conn.reader
        parser = conn.parser
        replies: list[Any] = []
        async with asyncio.timeout(self._timeout_s):
            if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                await writer.drain()
            while len(replies) < count:
                reply = parser.gets()
                if reply is False:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    parser.feed(data)
                    continue
                if isinstance(reply, ResponseError):
                    message = str(reply)
                    if message.startswith("NOSCRIPT"):
                        reply = NoScriptError(message)
                    elif message.startswith("READONLY"):
                        if self._sentinel is not None:
                            # The master was demoted (a failover): find the new one.
                            raise RedisConnectionError(message)
                        reply = ReadOnlyError(message)
                replies.append(reply)
        return replies
