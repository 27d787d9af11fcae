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

import asyncio
import logging
import time
import uuid

from ccbridge.services.runtime.metrics import RuntimeMetrics
from ccbridge.services.runtime.metrics import current as current_metrics
from ccbridge.services.runtime.redis import RedisClient, redis_text

log = logging.getLogger(__name__)

GUARD = "lease-v2"
"""The value a guarded old-style lease key holds while new-style leases are held."""

HOLDER_SEP = "@"
"""Separates a token's number from its holder's replica id (``<µs>@<replica>``)."""

LEASE_LUA = f"""
local function lease_guard(guard, ttl)
  local owner = redis.call('GET', guard)
  if owner and owner ~= '{GUARD}' then return end
  if redis.call('PTTL', guard) < tonumber(ttl) then
    redis.call('SET', guard, '{GUARD}', 'PX', ttl)
  end
end
local function lease_take(key, ttl, guard, holder, gone)
  local owner = false
  if guard then
    owner = redis.call('GET', guard)
    if owner and owner ~= '{GUARD}' then return false end
  end
  local now = redis.call('TIME')
  local token = now[1] .. string.format('%06d', tonumber(now[2]))
  if holder and holder ~= '' then token = token .. '{HOLDER_SEP}' .. holder end
  if gone and gone ~= '' then
    if redis.call('GET', key) ~= gone then return false end
    redis.call('SET', key, token, 'PX', ttl)
  elseif not redis.call('SET', key, token, 'NX', 'PX', ttl) then
    return false
  end
  if guard and (not owner or redis.call('PTTL', guard) < tonumber(ttl)) then
    redis.call('SET', guard, '{GUARD}', 'PX', ttl)
  end
  return token
end
local function lease_acquire(key, ttl, guard, holder)
  return lease_take(key, ttl, guard, holder, nil)
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
``lease_acquire(key, ttl_ms, guard?, holder?)`` → token or false (with a holder, the
token names it: ``<µs>@<replica>``), ``lease_take(key, ttl_ms, guard?, holder?, gone?)``
→ the same, but with ``gone`` it takes the lease only while it still holds exactly that
token (its holder is known dead: :class:`Liveness`),
``lease_held(key, token)``, ``lease_renew(key, token, ttl_ms, guard?)`` → 1/0,
``lease_release(key, token)`` → 1/0. A guard, once taken, is never deleted: it expires
at most one TTL after the last new-style holder let go."""

_ACQUIRE = LEASE_LUA + "return lease_acquire(KEYS[1], ARGV[1], KEYS[2], ARGV[2])"
_TAKE_OVER = LEASE_LUA + "return lease_take(KEYS[1], ARGV[1], KEYS[2], ARGV[2], ARGV[3])"
_RENEW = LEASE_LUA + "return lease_renew(KEYS[1], ARGV[1], ARGV[2], KEYS[2])"
_RELEASE = LEASE_LUA + "return lease_release(KEYS[1], ARGV[1])"


async def release_if_held(redis: RedisClient, key: str, token: str) -> bool:
    """Deletes ``key`` only while it still holds ``token``: the release of a lease, or of
    a plain lock taken with ``SET key token NX PX`` (whose holder needs no fencing)."""
    return bool(int(await redis.eval(_RELEASE, 1, key, token)))


class Lease:
    """One lease held by this process (e.g. a poller's). ``token`` is the fencing token
    while held, else None. With ``liveness``, tokens name this replica and a lease whose
    holder's liveness key is gone is taken over at once, not after its whole TTL."""

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        ttl_ms: int,
        *,
        guard_key: str | None = None,
        liveness: Liveness | None = None,
        kind: str = "lease",
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        """``kind`` names the lease in ``ccbridge_lease_takeovers_total``; ``metrics``:
        where takeovers are counted (default: those of the component being built)."""
        self.r = redis
        self.key = key
        self.kind = kind
        self._metrics = metrics if metrics is not None else current_metrics()
        if self._metrics is not None:
            self._metrics.lease_kind(kind)
        self.guard_key = guard_key
        self.ttl_ms = ttl_ms
        self.liveness = liveness
        self.token: str | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _guard(self) -> list[str]:
        return [self.guard_key] if self.guard_key else []

    async def acquire(self) -> str | None:
        """Takes the lease when free, or when its holder's replica is gone; returns the
        new fencing token or None."""
        holder = self.liveness.replica if self.liveness else ""
        keys = [self.key, *self._guard()]
        raw = await self._acquire(keys=keys, args=[self.ttl_ms, holder])
        if raw is None and self.liveness is not None:
            owner = await self.r.get(self.key)
            if owner and await self.liveness.gone(redis_text(owner)):
                # Replaces exactly the dead holder's token (fencing holds).
                raw = await self._take_over(
                    keys=keys, args=[self.ttl_ms, holder, redis_text(owner)]
                )
                if raw is not None:
                    log.info("took over lease %s from a replica that is gone", self.key)
                    if self._metrics is not None:
                        self._metrics.lease_taken_over(self.kind)
        self.token = redis_text(raw) if raw is not None else None
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


def holder_of(token: str) -> str | None:
    """The replica id a token names (``<µs>@<replica>``), None for a bare number."""
    _, sep, holder = token.partition(HOLDER_SEP)
    return holder if sep and holder else None


class Liveness:
    """This replica's heartbeat: ``<prefix>:live:<replica>``, renewed every
    ``interval_ms`` with a TTL of ``ttl_ms``. Leases taken with ``holder=replica`` name
    it, so a successor may take a lease whose holder's key is gone (crashed, frozen or cut
    off from Redis) at once, not after the lease's whole TTL; the fencing token still
    refuses every write of the old holder.

    :meth:`remaining_s` is how long this replica's key is certainly still there (the
    monotonic clock from before the last successful renewal): a holder starts no far-side
    call it cannot finish by then, since a successor may take over right after."""

    def __init__(
        self, redis: RedisClient, prefix: str, *, ttl_ms: int = 3000, interval_ms: int = 1000
    ) -> None:
        self.r = redis
        self.prefix = prefix
        self.replica = uuid.uuid4().hex[:16]
        self.ttl_ms = ttl_ms
        self.interval_ms = interval_ms
        self._valid_until = 0.0

    def key(self, replica: str) -> str:
        return f"{self.prefix}:live:{replica}"

    async def beat(self) -> bool:
        """Renews this replica's key; False when Redis did not answer."""
        started = time.monotonic()
        try:
            await self.r.set(self.key(self.replica), b"1", px=self.ttl_ms)
        except Exception:
            log.warning("cannot renew this replica's liveness key", exc_info=True)
            return False
        self._valid_until = started + self.ttl_ms / 1000
        return True

    def remaining_s(self) -> float:
        return self._valid_until - time.monotonic()

    async def run(self) -> None:
        """Renews the key until cancelled."""
        while True:
            await self.beat()
            await asyncio.sleep(self.interval_ms / 1000)

    async def alive(self, replica: str) -> bool:
        return bool(await self.r.exists(self.key(replica)))

    async def gone(self, token: str) -> bool:
        """Whether the holder a token names is known dead (its key expired). A token
        without a holder (an older release's) is never judged dead: it waits its TTL."""
        holder = holder_of(token)
        if holder is None or holder == self.replica:
            return False
        return not await self.alive(holder)

    async def stop(self) -> None:
        """Drops the key (after this replica let its leases go)."""
        self._valid_until = 0.0
        await self.r.delete(self.key(self.replica))
