"""The one way a service process starts: settings from the environment (fail fast with one
line naming every bad key, exit 2), logging configured once, then ``serve`` until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from services._runtime.logging import configure_logging
from services._runtime.settings import CommonSettings, SettingsError


class _HasCommon(Protocol):
    @property
    def common(self) -> CommonSettings: ...


S = TypeVar("S", bound=_HasCommon)


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
    errors: tuple[type[Exception], ...] = (SettingsError, *fatal)
    try:
        asyncio.run(serve(settings))
    except errors as exc:
        print(f"ccbridge {component}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
