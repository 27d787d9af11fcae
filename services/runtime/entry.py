"""The one way a service process starts: settings from the environment (fail fast with one
line naming every bad key, exit 2), logging and tracing configured once, then ``serve``
until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from ccbridge.services.runtime.gc_tuning import settle_after_startup
from ccbridge.services.runtime.logging import configure_logging
from ccbridge.services.runtime.settings import CommonSettings, SettingsError
from ccbridge.services.runtime.tracing import setup_tracing


class _HasCommon(Protocol):
    @property
    def common(self) -> CommonSettings: ...


S = TypeVar("S", bound=_HasCommon)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard]): its event loop and socket
    transports cost less CPU per callback and per syscall than asyncio's own.
    CCBRIDGE_UVLOOP=false keeps the standard loop."""
    if os.environ.get("CCBRIDGE_UVLOOP", "true").lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_component(
    component: str,
    load: Callable[[Mapping[str, str]], S],
    serve: Callable[[S], Coroutine[Any, Any, None]],
    *,
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """Runs one component; ``fatal`` errors raised while starting (e.g. an invalid
    routing rules file) end the process with exit code 2 and a one-line message."""
    try:
        settings = load(os.environ)
    except SettingsError as exc:
        print(f"ccbridge {component}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(component, settings.common.log_level, settings.common.log_format)
    # Before anything opens a channel, a server or a client: the instrumentation wraps
    # their constructors. Off: nothing installed.
    tracing = setup_tracing(component, settings.common.tracing)
    errors: tuple[type[Exception], ...] = (SettingsError, *fatal)
    settle_after_startup()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings))
    except errors as exc:
        print(f"ccbridge {component}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if tracing is not None:
            tracing.shutdown()  # exports what is still batched
