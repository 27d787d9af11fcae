"""REDIS_URL forms: a single server and Redis Sentinel (a real sentinel process)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccbridge.services.runtime.redis import create_redis, parse_sentinel_url
from tests.support.redis_server import RedisServer, free_port, redis_binary


def test_sentinel_url_parsing() -> None:
    assert parse_sentinel_url("redis+sentinel://:p%40ss@a:26379,b:26380/mymaster/2") == (
        [("a", 26379), ("b", 26380)],
        "mymaster",
        2,
        "p@ss",
    )
    assert parse_sentinel_url("redis+sentinel://s1:26379/main") == (
        [("s1", 26379)],
        "main",
        0,
        None,
    )
    for bad in ("redis+sentinel://s1:26379", "redis+sentinel://s1/main"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[int, RedisServer]]:
    master = RedisServer(appendonly=False).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {master.port} 1\n"
    )
    proc = subprocess.Popen(
        [redis_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield port, master
    finally:
        proc.terminate()
        proc.wait(10)
        master.stop()


async def test_sentinel_client_reaches_the_master(sentinel: tuple[int, RedisServer]) -> None:
    port, _master = sentinel
    client = create_redis(f"redis+sentinel://127.0.0.1:{port}/main/0")
    try:
        await client.set("ccb:test", b"1")
        assert await client.get("ccb:test") == b"1"
        script = client.register_script("return redis.call('GET', KEYS[1])")
        assert await script(keys=["ccb:test"]) == b"1"
    finally:
        await client.aclose()


async def test_hiredis_packing_connection_speaks_redis(redis_url: str) -> None:
    """Plain redis:// clients pack with hiredis; every command shape Session uses works
    (multi-word names, ints, bytes, pipelines, scripts) and bad values still raise
    DataError like redis-py's own packer."""
    from redis.exceptions import DataError

    from ccbridge.services.runtime.redis import HiredisPackingConnection, create_redis

    client = create_redis(redis_url)
    try:
        assert client.connection_pool.connection_class is HiredisPackingConnection
        await client.set("ccb-test:pack", b"\x00\xffbytes", px=5000)
        assert await client.get("ccb-test:pack") == b"\x00\xffbytes"
        sha = await client.script_load("return {ARGV[1], ARGV[2]}")  # "SCRIPT LOAD"
        assert await client.evalsha(sha, 0, 7, "x") == [b"7", b"x"]
        async with client.pipeline(transaction=False) as pipe:
            pipe.zadd("ccb-test:z", {"a": 1})
            pipe.zscore("ccb-test:z", "a")
            assert await pipe.execute() == [1, 1.0]
        with pytest.raises(DataError):
            await client.set("ccb-test:pack", None)  # type: ignore[arg-type]
    finally:
        await client.delete("ccb-test:pack", "ccb-test:z")
        await client.aclose()


def test_services_run_on_uvloop_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    from ccbridge.services.runtime.entry import _loop_factory

    monkeypatch.delenv("CCBRIDGE_UVLOOP", raising=False)
    assert _loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("CCBRIDGE_UVLOOP", "false")
    assert _loop_factory() is None
