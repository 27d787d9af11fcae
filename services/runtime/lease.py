"""The one lease implementation: who may work on a key family, fenced by a token.

A lease is a Redis string ``key`` holding its holder's fencing token, with a TTL. The
token is the Redis server's clock in microseconds when the lease was taken, so every
holder of one lease gets another number than the one before it (one ``SET NX`` per key
succeeds at a time, and a lease lives at least milliseconds), larger as long as the
primary's clock runs forward: a paused holder that wakes up after its lease expired
still has its old number, and every write guarded by the lease (in Lua, with
:data:`LEASE_LUA`'s ``lease_held``, which compares for equality, so even a failover to a
replica whose clock lags cannot let an old number pass) refuses it. The token needs no
key of its own: an idle key family (an idle handover) keeps nothing for its leases.
Whatever the far side can be told (an idempotency key, a "sending" mark) can carry the
number too.

Session's delivery lanes, the connector's poll lease and RT's queue leases all use it:
their scripts start with :data:`LEASE_LUA` and call its functions, and :class:`Lease` is
the Python handle for a single lease. Key names belong to each component's store module.

``guard`` keys keep a rolling upgrade safe where a lease was renamed: pods of the older
release take the old key with ``SET NX`` (or check its owner), so while a new-style lease
is held the old key holds :data:`GUARD` with at least the same TTL, and a new-style lease
is not taken while an old pod holds the old key (docs/deploy.md, "Upgrades").
"""

from __future__ import annotations

from ccbridge.services.runtime.redis import RedisClient

GUARD = "lease-v2"
"""The value a guarded old-style lease key holds while new-style leases are held."""

LEASE_LUA = f"""
local function lease_guard(guard, ttl)
  local owner = redis.call('GET', guard)
  if owner and owner ~= '{GUARD}' then return end
  if redis.call('PTTL', guard) < tonumber(ttl) then
    redis.call('SET', guard, '{GUARD}', 'PX', ttl)
  end
end
local function lease_acquire(key, ttl, guard)
  local owner = false
  if guard then
    owner = redis.call('GET', guard)
    if owner and owner ~= '{GUARD}' then return false end
  end
  local now = redis.call('TIME')
  local token = now[1] .. string.format('%06d', tonumber(now[2]))
  if not redis.call('SET', key, token, 'NX', 'PX', ttl) then return false end
  if guard and (not owner or redis.call('PTTL', guard) < tonumber(ttl)) then
    redis.call('SET', guard, '{GUARD}', 'PX', ttl)
  end
  return token
end
local function lease_held(key, token)
  return redis.call('GET', key) == token
end
local function lease_renew(key, token, ttl, guard)
  if redis.call('GET', key) ~= token then return 0 end
  redis.call('PEXPIRE', key, ttl)
  if guard then lease_guard(guard, ttl) end
  return 1
end
local function lease_release(key, token)
  if redis.call('GET', key) ~= token then return 0 end
  redis.call('DEL', key)
  return 1
end
"""
"""Lua functions for scripts guarded by a lease (prepend to the script):
``lease_acquire(key, ttl_ms, guard?)`` → token or false,
``lease_held(key, token)``, ``lease_renew(key, token, ttl_ms, guard?)`` → 1/0,
``lease_release(key, token)`` → 1/0. A guard, once taken, is never deleted: it expires
at most one TTL after the last new-style holder let go."""

_ACQUIRE = LEASE_LUA + "return lease_acquire(KEYS[1], ARGV[1], KEYS[2])"
_RENEW = LEASE_LUA + "return lease_renew(KEYS[1], ARGV[1], ARGV[2], KEYS[2])"
_RELEASE = LEASE_LUA + "return lease_release(KEYS[1], ARGV[1])"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def release_if_held(redis: RedisClient, key: str, token: str) -> bool:
    """Deletes ``key`` only while it still holds ``token``: the release of a lease, or of
    a plain lock taken with ``SET key token NX PX`` (whose holder needs no fencing)."""
    return bool(int(await redis.eval(_RELEASE, 1, key, token)))


class Lease:
    """One lease held by this process (e.g. a poller's). ``token`` is the fencing token
    while held, else None."""

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        ttl_ms: int,
        *,
        guard_key: str | None = None,
    ) -> None:
        self.key = key
        self.guard_key = guard_key
        self.ttl_ms = ttl_ms
        self.token: str | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _guard(self) -> list[str]:
        return [self.guard_key] if self.guard_key else []

    async def acquire(self) -> str | None:
        """Takes the lease when free; returns the new fencing token or None."""
        raw = await self._acquire(keys=[self.key, *self._guard()], args=[self.ttl_ms])
        self.token = _text(raw) if raw is not None else None
        return self.token

    async def renew(self) -> bool:
        """Extends the lease if still ours; False (and forgotten) when it was lost."""
        if self.token is None:
            return False
        held = await self._renew(keys=[self.key, *self._guard()], args=[self.token, self.ttl_ms])
        if not int(held):
            self.token = None
        return self.token is not None

    async def hold(self) -> str | None:
        """Renews the lease when held, else tries to take it: the token, or None when
        another holder has it."""
        if await self.renew():
            return self.token
        return await self.acquire()

    async def release(self) -> None:
        """Gives the lease up (only if still ours) so another holder can take it now."""
        token, self.token = self.token, None
        if token is not None:
            await self._release(keys=[self.key], args=[token])
