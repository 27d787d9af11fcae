"""Garbage-collector settings for long-running processes.

CPython's cycle collector runs a young-generation pass every 700 container allocations
and, every so often, a full pass over every tracked object. In a service most objects
are created at start-up (modules, classes, protobuf descriptors, gRPC stubs) and live as
long as the process, and request garbage is freed by reference counting, so those passes
find next to nothing, yet every request in flight waits for a full pass (measured:
bench/README.md, "Measured choices in the code").

- :func:`settle_after_startup` freezes what start-up created (no pass looks at it
  again) and makes young-generation passes rarer.
- :func:`freeze_periodically` is for the simulators, whose recorded state only grows:
  their full passes grew with it.
"""

from __future__ import annotations

import gc
import threading

# Container allocations between young-generation passes (CPython's default: 700).
GEN0_THRESHOLD = 20_000


def settle_after_startup() -> None:
    """Collects once, then freezes every object alive now and raises the first threshold."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def freeze_periodically(interval_s: float = 1.0) -> None:
    """Freezes every ``interval_s`` (a daemon thread): state that only grows is never
    scanned again; cycles among frozen objects are then never collected, which a process
    that keeps all its state anyway does not mind."""
    settle_after_startup()

    def run() -> None:
        while True:
            threading.Event().wait(interval_s)
            gc.freeze()

    threading.Thread(target=run, name="gc-freeze", daemon=True).start()
