"""Shared fixtures: a real Redis (REDIS_URL when set — it is FLUSHED — else a redis-server
started for the test session), and a clean database for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_server import RedisServer, env_redis_url
from tests.support.rt import rt_peer

# One definition of the session's Request Tracker for every test module: a fixture
# imported into two modules would be two fixtures, each wanting the one RT.
__all__ = ["rt_peer"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = env_redis_url()
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A ``redis+cluster://`` URL of three local masters, started for the test session
    (the tests marked ``cluster``)."""
    cluster = RedisClusterServers().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
