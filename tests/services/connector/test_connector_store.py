"""The connector's Redis keys (services/connector/store.py) next to pods of the release
before them (d3ac8b9): its poll lease, run from that release's own code, and RT's queue
lease as it wrote it (docs/deploy.md, "Upgrades")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.lease import Lease, Liveness, holder_of

ROOT = Path(__file__).resolve().parents[3]


def _old_store_module() -> dict[str, Any]:
    """services/connector/store.py of d3ac8b9, executed (it imports only redis)."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to read the old release")
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", "d3ac8b9:services/connector/store.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        pytest.skip("commit d3ac8b9 is not in this clone's history")
    namespace: dict[str, Any] = {"__name__": "old_connector_store"}
    exec(compile(shown.stdout, "d3ac8b9:services/connector/store.py", "exec"), namespace)
    return namespace


async def test_old_and_new_poll_leases_exclude_each_other(redis_client: aioredis.Redis) -> None:
    old = _old_store_module()["PollLease"](redis_client, "rt", "old-pod", 30)
    new = ConnectorStore(redis_client).poll_lease("rt", 30)

    assert await old.acquire()
    assert await new.hold() is None  # an old pod polls
    await old.release()
    assert await new.hold() is not None
    assert not await old.acquire()  # a new pod polls: the old key holds the guard
    assert await new.hold() is not None  # renewed
    await new.release()


async def test_old_and_new_rt_queue_leases_exclude_each_other(
    redis_client: aioredis.Redis,
) -> None:
    store = ConnectorStore(redis_client)
    lease = store.rt_lease("Chat Handover", 30_000)
    # The old adapter's lease: a random token on the same key, SET NX.
    assert await redis_client.set(lease.key, "0123456789abcdef01234567", nx=True, px=30_000)
    assert await lease.hold() is None
    await redis_client.delete(lease.key)
    assert await lease.hold() is not None
    assert not await redis_client.set(lease.key, "another-old-token", nx=True, px=30_000)


def test_every_key_under_the_prefix_and_old_rt_keys_found() -> None:
    default = ConnectorStore(None, "ccb")  # type: ignore[arg-type]  # names only
    assert default.rt_cursor("Q") == "ccb:rt:cursor:{Q}"
    assert default.rt_v1(default.rt_cursor("Q")) is None  # nothing moved
    other = ConnectorStore(None, "bridge2")  # type: ignore[arg-type]
    keys = [
        other.rt_cursor("Q"),
        other.rt_queues,
        other.rt_open_lock("c"),
        other.rt_message("c", "k"),
        other.rt_message_lock("c", "k"),
    ]
    assert all(key.startswith("bridge2:rt:") for key in keys)
    assert other.rt_v1(other.rt_message("c", "k")) == "ccb:rt:msg:{c}:k"


@pytest.mark.parametrize("which", ["poll", "rt"])
async def test_a_gone_connector_replicas_leases_are_taken_over_at_once(
    redis_client: aioredis.Redis, which: str
) -> None:
    """Poll leases name their replica: a successor takes them over as soon as the
    holder's liveness key is gone (crashed, frozen), not after their TTL (30 s here),
    and the dead holder's token is refused from then on."""
    first, second = (Liveness(redis_client, "ccb:connector") for _ in range(2))
    for live in (first, second):
        assert await live.beat()

    def lease(live: Liveness) -> Lease:
        store = ConnectorStore(redis_client, liveness=live)
        return store.poll_lease("rt", 30) if which == "poll" else store.rt_lease("Q", 30_000)

    held, successor = lease(first), lease(second)
    token = await held.hold()
    assert token is not None and holder_of(token) == first.replica
    assert await successor.hold() is None  # its holder is alive: it waits

    await redis_client.delete(first.key(first.replica))  # the holder died
    taken = await successor.hold()
    assert taken is not None and holder_of(taken) == second.replica
    assert await held.renew() is False  # fenced: the old token is refused
    assert await redis_client.pttl(successor.key) > 25_000  # a full TTL for the new holder
