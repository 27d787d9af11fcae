"""Redis keys of the connector service: the poll lease of each poll-mode adapter.

One replica polls a given CCaaS at a time: it holds ``ccbridge:connector:poll-lease:{name}``
(owner id, with a TTL) and renews it on every cycle; when it dies, another replica takes
over after the TTL. Adapters keep their own cursors (they get the Redis client).
"""

from __future__ import annotations

import redis.asyncio as aioredis

# Take the lease when free, renew it when ours; 1 = held by us.
_ACQUIRE = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def poll_lease_key(connector: str) -> str:
    return f"ccbridge:connector:poll-lease:{{{connector}}}"


class PollLease:
    """The right of one replica to poll one connector."""

    def __init__(self, redis: aioredis.Redis, connector: str, owner: str, ttl_s: float) -> None:
        self._redis = redis
        self.key = poll_lease_key(connector)
        self.owner = owner
        self.ttl_ms = max(int(ttl_s * 1000), 1000)

    async def acquire(self) -> bool:
        """Takes or renews the lease; False when another replica holds it."""
        held = await self._redis.eval(_ACQUIRE, 1, self.key, self.owner, str(self.ttl_ms))
        return bool(held)

    async def release(self) -> None:
        """Gives the lease up (only if still ours) so another replica can take over now."""
        await self._redis.eval(_RELEASE, 1, self.key, self.owner)
