"""REDIS_URL forms: a single server and Redis Sentinel (a real sentinel process)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services._runtime.redis import create_redis, parse_sentinel_url
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
