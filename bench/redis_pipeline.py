"""``python -m bench.redis_pipeline [--rounds N] [--repeats R]``: the cost of one Session
hot-path round trip, 16 ``EVALSHA`` of Session's ingest script, on :class:`RawPipeline`
and on redis-py's public pipeline, in the same run against the same redis-server.

Starts its own redis-server (AOF on, as production) on a free loopback port, runs on
uvloop (as the services do), one round trip at a time, and prints for each way the
median over ``R`` repeats of ``N`` round trips: wall time per round trip (client, server
and loopback) and the client's CPU per round trip (``time.process_time``; the server is
another process). The calls are bot traffic (no handover: the script reads the state
and returns 0), so the figures are mostly client cost. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CALLS = 16  # EVALSHA per round trip, a typical ingest batch

Way = Callable[[int], Awaitable[None]]


def _calls(script_keys: Callable[[str], list[str]]) -> list[tuple[list[str], list[Any]]]:
    payload = b"\x0a\x24" + b"x" * 180  # about a serialized Message's size
    return [
        (script_keys(f"bench-{i}"), [f"m-{i}", payload, 604800, "WHATSAPP", "3859", "4470", 0])
        for i in range(CALLS)
    ]


async def _measure(name: str, way: Way, rounds: int, repeats: int) -> dict[str, float]:
    await way(50)  # warm-up: connections open, scripts loaded
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await way(rounds)
        walls.append((time.perf_counter() - wall0) / rounds * 1e6)
        cpus.append((time.process_time() - cpu0) / rounds * 1e6)
    result = {"wall_us": statistics.median(walls), "cpu_us": statistics.median(cpus)}
    print(
        f"{name:<44} {result['wall_us']:7.1f} µs wall  {result['cpu_us']:7.1f} µs client CPU"
        f"   (per round trip of {CALLS} EVALSHA; median of {repeats} × {rounds})",
        flush=True,
    )
    return result


async def run(url: str, rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    from ccbridge.services.runtime.redis import RawPipeline, create_redis
    from ccbridge.services.session.store import _INGEST, SessionStore

    client = create_redis(url)
    raw = RawPipeline(client)
    keys = SessionStore(client)  # only for the key names
    await keys.raw.aclose()
    calls = _calls(lambda cid: [keys.k_h(cid), keys.k_in(cid), keys.k_seen(cid)])
    raw_script = raw.register_script(_INGEST)
    script = client.register_script(_INGEST)
    results: dict[str, dict[str, float]] = {}
    try:

        async def raw_way(n: int) -> None:
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
            for _ in range(n):
                async with client.pipeline(transaction=False) as pipe:
                    for k, a in calls:
                        await script(keys=k, args=a, client=pipe)
                    assert await pipe.execute() == [0] * CALLS

        results["raw_pipeline"] = await _measure(
            "RawPipeline + RawScript", raw_way, rounds, repeats
        )
        results["redis_py_pipeline_evalsha"] = await _measure(
            "redis-py pipeline, evalsha", redis_py_evalsha, rounds, repeats
        )
        results["redis_py_pipeline_script"] = await _measure(
            "redis-py pipeline, Script (+SCRIPT EXISTS)", redis_py_script, rounds, repeats
        )
    finally:
        await raw.aclose()
        await client.aclose()
    ratio = results["redis_py_pipeline_evalsha"]["wall_us"] / results["raw_pipeline"]["wall_us"]
    print(f"RawPipeline is {ratio:.1f}× faster per round trip than redis-py's evalsha pipeline")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="round trips per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--redis-url", help="an existing Redis (it is not flushed)")
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
