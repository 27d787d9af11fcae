"""RawPipeline (Session's hot-path Redis round trips) against a real Redis: raw replies,
error replies in place, a dropped connection retried on a fresh one, a silent server
timing out, and Sentinel. The other REDIS_URL forms and scripts:
test_raw_pipeline_connections.py."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ccbridge.services.runtime.redis import RawPipeline, create_redis
from tests.runtime.test_redis_urls import sentinel
from tests.support.redis_server import RedisServer

__all__ = ["sentinel"]


async def test_replies_come_raw_and_in_order(redis_url: str) -> None:
    client = create_redis(redis_url)
    raw = RawPipeline(client)
    try:
        sha = await client.script_load("return {ARGV[1], tonumber(ARGV[2])}")
        replies = await raw.execute(
            [
                ("DEL", "ccb-raw:l", "ccb-raw:z", "ccb-raw:h"),
                ("RPUSH", "ccb-raw:l", b"\x00\xff", "b"),
                ("LRANGE", "ccb-raw:l", 0, -1),
                ("ZADD", "ccb-raw:z", "NX", 5, "m1", 7, "m2"),
                ("ZRANGEBYSCORE", "ccb-raw:z", "-inf", 6, "LIMIT", 0, 10),
                ("HMGET", "ccb-raw:h", "missing"),
                ("EVALSHA", sha, 0, "x", 42),
            ]
        )
        assert replies[1:] == [2, [b"\x00\xff", b"b"], 2, [b"m1"], [None], [b"x", 42]]
        assert await raw.execute([]) == []
    finally:
        await client.delete("ccb-raw:l", "ccb-raw:z", "ccb-raw:h")
        await raw.aclose()
        await client.aclose()


async def test_error_replies_stay_in_place_and_the_connection_stays_usable(
    redis_url: str,
) -> None:
    client = create_redis(redis_url)
    raw = RawPipeline(client)
    try:
        replies = await raw.execute(
            [
                ("CLIENT", "SETNAME", "ccb-raw-errors"),
                ("SET", "ccb-raw:s", "v"),
                ("LPUSH", "ccb-raw:s", "x"),  # WRONGTYPE
                ("EVALSHA", "0" * 40, 0),  # NOSCRIPT
                ("GET", "ccb-raw:s"),
            ]
        )
        assert replies[:2] == [b"OK", b"OK"]
        assert isinstance(replies[2], ResponseError) and "WRONGTYPE" in str(replies[2])
        assert isinstance(replies[3], NoScriptError)
        assert replies[4] == b"v"
        # The same connection, kept for the next round trip, is still in step.
        assert await raw.execute([("CLIENT", "GETNAME"), ("GET", "ccb-raw:s")]) == [
            b"ccb-raw-errors",
            b"v",
        ]
        with pytest.raises(DataError):
            await raw.execute([("SET", "ccb-raw:s", None)])
    finally:
        await client.delete("ccb-raw:s")
        await raw.aclose()
        await client.aclose()


async def test_a_killed_connection_is_replaced_and_the_pipeline_sent_again(
    redis_url: str,
) -> None:
    client = create_redis(redis_url, max_connections=1)
    admin = create_redis(redis_url)
    raw = RawPipeline(client)
    try:
        await raw.execute([("CLIENT", "SETNAME", "ccb-raw-victim")])
        listing = (await admin.execute_command("CLIENT", "LIST")).decode()
        victim = next(line for line in listing.splitlines() if "name=ccb-raw-victim" in line)
        victim_id = victim.split("id=", 1)[1].split()[0]
        await admin.execute_command("CLIENT", "KILL", "ID", victim_id)
        assert await raw.execute([("INCR", "ccb-raw:n"), ("GET", "ccb-raw:n")]) == [1, b"1"]
    finally:
        await admin.delete("ccb-raw:n")
        await admin.aclose()
        await raw.aclose()
        await client.aclose()


async def test_a_server_that_stops_answering_times_out_after_the_retries() -> None:
    """The server accepts connections but never answers a GET: each try times out, its
    connection is dropped, and after the third retry the caller gets a TimeoutError."""
    gets = 0
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal gets
        writers.append(writer)
        while data := await reader.read(65536):
            writer.write(b"+OK\r\n" * data.count(b"CLIENT") + b"+PONG\r\n" * data.count(b"PING"))
            gets += data.count(b"GET")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = create_redis(f"redis://127.0.0.1:{port}/0")
    raw = RawPipeline(client, timeout_s=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await raw.execute([("GET", "ccb-raw:k")])
        assert gets == 4  # the first try and three retries
        assert len(writers) == 4  # each on a fresh connection
    finally:
        await raw.aclose()
        await client.aclose()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_works_through_sentinel(sentinel: tuple[int, RedisServer]) -> None:
    port, _master = sentinel
    client = create_redis(f"redis+sentinel://127.0.0.1:{port}/main/0")
    raw = RawPipeline(client)
    try:
        assert await raw.execute([("SET", "ccb-raw:t", "1"), ("GET", "ccb-raw:t")]) == [
            b"OK",
            b"1",
        ]
    finally:
        await raw.aclose()
        await client.aclose()
