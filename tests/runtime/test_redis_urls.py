"""REDIS_URL forms: a single server, Redis Sentinel (a real sentinel process) and Redis
Cluster (a real three-master cluster)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from ccbridge.services.runtime.redis import (
    ClusterBatch,
    create_batch,
    create_redis,
    parse_cluster_url,
    parse_sentinel_url,
)
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


def test_cluster_url_parsing() -> None:
    assert parse_cluster_url("redis+cluster://a:7000,b:7001") == (
        [("a", 7000), ("b", 7001)],
        {},
    )
    nodes, options = parse_cluster_url(
        "rediss+cluster://ccbridge-session:p%40ss@a:6380,b:6380/0"
        "?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    )
    assert nodes == [("a", 6380), ("b", 6380)]
    assert options == {
        "username": "ccbridge-session",
        "password": "p@ss",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
        "ssl_cert_reqs": "required",
    }
    assert parse_cluster_url("redis+cluster://:secret@[::1]:7000")[1] == {"password": "secret"}
    assert parse_cluster_url("redis+cluster://:secret@[::1]:7000")[0] == [("::1", 7000)]
    for bad in ("redis+cluster://a", "redis+cluster://a:7000/1", "redis://a:7000"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


@pytest.mark.cluster
async def test_cluster_url_gives_the_cluster_client_and_its_batch(redis_cluster_url: str) -> None:
    client = create_redis(redis_cluster_url)
    batch = create_batch(client)
    try:
        assert isinstance(client, RedisCluster) and isinstance(batch, ClusterBatch)
        script = batch.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        keys = [f"url-test:{{{i}}}" for i in range(20)]  # over every master
        await client.script_flush()
        replies = await batch.execute(
            [*(script.command([key], [2]) for key in keys), ("GET", keys[0])]
        )
        assert replies == [2] * 20 + [None]  # the GET ran before the reloaded scripts
        assert await batch.execute([script.command([keys[0]], [1])]) == [3]
        await client.delete(*keys)
    finally:
        await batch.aclose()
        await client.aclose()


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
