"""``python -m bench.redis_pipeline [--rounds N] [--repeats R]``: the cost of one Session
hot-path round trip, 16 ``EVALSHA`` of Session's ingest script, on :class:`RawPipeline`
and on redis-py's public pipeline, in the same run against the same redis-server.

Starts its own redis-server (AOF on, as production) on a free loopback port, runs on
uvloop (as the services do), one round trip at a time. Each repeat runs every way for
``N`` round trips, in turn, so a noisy moment on a shared machine hits them all alike;
it prints, per way, the median and the best of the ``R`` repeats: wall time per round
trip (client, loopback and server) and the client's CPU per round trip
(``time.process_time``; the server is another process). The calls are bot traffic (no
handover: the script reads the state and returns 0), so the figures are mostly client
cost. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

CALLS = 16  # EVALSHA per round trip, a typical ingest batch

Way = Callable[[int], Awaitable[None]]


class Figures(NamedTuple):
    """µs per round trip: median and best over the repeats."""

    wall_us: float
    best_wall_us: float
    cpu_us: float
    best_cpu_us: float


def _calls(script_keys: Callable[[str], list[str]]) -> list[tuple[list[str], list[Any]]]:
    payload = b"\x0a\x24" + b"x" * 180  # about a serialized Message's size
    return [
        (script_keys(f"bench-{i}"), [f"m-{i}", payload, 604800, "WHATSAPP", "3859", "4470", 0])
        for i in range(CALLS)
    ]


async def _measure(ways: dict[str, Way], rounds: int, repeats: int) -> dict[str, Figures]:
    for way in ways.values():
        await way(50)  # warm-up: connections open, scripts loaded
    walls: dict[str, list[float]] = {name: [] for name in ways}
    cpus: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            await way(rounds)
            walls[name].append((time.perf_counter() - wall0) / rounds * 1e6)
            cpus[name].append((time.process_time() - cpu0) / rounds * 1e6)
    return {
        name: Figures(
            statistics.median(walls[name]),
            min(walls[name]),
            statistics.median(cpus[name]),
            min(cpus[name]),
        )
        for name in ways
    }


async def run(url: str, rounds: int, repeats: int) -> dict[str, Figures]:
    from ccbridge.services.runtime.redis import RawPipeline, create_redis
    from ccbridge.services.session.store import _INGEST, SessionStore

    client = create_redis(url)
    raw = RawPipeline(client)
    names = SessionStore(client)  # only for its key names
    await names.raw.aclose()
    calls = _calls(lambda cid: [names.k_h(cid), names.k_in(cid), names.k_seen(cid)])
    raw_script = raw.register_script(_INGEST)
    script = client.register_script(_INGEST)

    async def raw_pipeline(n: int) -> None:
        for _ in range(n):
            replies = await raw.execute([raw_script.command(k, a) for k, a in calls])
            assert replies == [0] * CALLS, replies

    async def redis_py_evalsha(n: int) -> None:
        for _ in range(n):
            async with client.pipeline(transaction=False) as pipe:
                for k, a in calls:
                    pipe.evalsha(script.sha, len(k), *k, *a)
                assert await pipe.execute() == [0] * CALLS

    async def redis_py_script(n: int) -> None:
        # The NOSCRIPT-safe way: Pipeline.execute() sends SCRIPT EXISTS first.
        for _ in range(n):
            async with client.pipeline(transaction=False) as pipe:
                for k, a in calls:
                    await script(keys=k, args=a, client=pipe)
                assert await pipe.execute() == [0] * CALLS

    try:
        results = await _measure(
            {
                "RawPipeline + RawScript": raw_pipeline,
                "redis-py pipeline, evalsha": redis_py_evalsha,
                "redis-py pipeline, Script": redis_py_script,
            },
            rounds,
            repeats,
        )
    finally:
        await raw.aclose()
        await client.aclose()
    print(f"µs per round trip of {CALLS} EVALSHA, median (best) of {repeats} × {rounds}:")
    print(f"{'':<28} {'wall':>14} {'client CPU':>14}")
    for name, f in results.items():
        wall = f"{f.wall_us:.0f} ({f.best_wall_us:.0f})"
        cpu = f"{f.cpu_us:.0f} ({f.best_cpu_us:.0f})"
        print(f"{name:<28} {wall:>14} {cpu:>14}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000, help="round trips per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--redis-url", help="an existing Redis (the calls write nothing)")
    options = parser.parse_args()

    import uvloop

    from ccbridge.services.local.supervisor import EmbeddedRedis, free_port

    if options.redis_url:
        uvloop.run(run(options.redis_url, options.rounds, options.repeats))
        return
    with tempfile.TemporaryDirectory(prefix="ccbridge-bench-redis-") as tmp:
        server = EmbeddedRedis(Path(tmp), free_port()).start()
        try:
            uvloop.run(run(server.url, options.rounds, options.repeats))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
