"""Redis connection helpers (one async client per process, created in the running loop)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """Creates a client with timeouts and a short retry on connection errors."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=5.0,
        socket_connect_timeout=3.0,
        health_check_interval=15,
        max_connections=max_connections,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def redis_ready(client: aioredis.Redis) -> object:
    """Returns a readiness check: Redis answers PING."""

    async def check() -> bool:
        return bool(await client.ping())

    return check
