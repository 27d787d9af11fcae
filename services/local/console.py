"""What the ``ccbridge`` command prints for people: aligned tables, ages, a progress line.

Colour and cursor codes only go to a terminal, and never when ``NO_COLOR`` is set
(https://no-color.org): piped or redirected output is plain text, one line per row.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}


def styled(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal and the user has not asked for no colour."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, colour: str, on: bool) -> str:
    return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m" if on and colour else text


def age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    stream: TextIO,
    *,
    colours: Mapping[int, Mapping[str, str]] | None = None,
    max_width: int = 60,
) -> None:
    """Prints ``rows`` under ``headers``, columns aligned and cells cut at ``max_width``.
    ``colours``: column index → cell value → colour (only on a terminal)."""
    on = styled(stream)
    cut = [
        [cell if len(cell) <= max_width else cell[: max_width - 1] + "…" for cell in row]
        for row in rows
    ]
    widths = [len(h) for h in headers]
    for row in cut:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    last = len(headers) - 1

    def line(cells: Sequence[str], header: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell if i == last else cell.ljust(widths[i])
            colour = "bold" if header else (colours or {}).get(i, {}).get(cell, "")
            out.append(paint(padded, colour, on))
        return "  ".join(out).rstrip()

    stream.write(line(headers, True) + "\n")
    for row in cut:
        stream.write(line(row, False) + "\n")
    stream.flush()


def fields(pairs: Sequence[tuple[str, str]], stream: TextIO) -> None:
    """``key: value`` lines, keys aligned (one record)."""
    width = max((len(k) for k, _ in pairs), default=0)
    on = styled(stream)
    for key, value in pairs:
        stream.write(f"{paint(key.ljust(width), 'dim', on)}  {value}\n")
    stream.flush()


class Progress:
    """``done/total`` of a long operation on stderr: one line rewritten in place on a
    terminal (at most ten times a second); on anything else a plain line at every tenth
    of the way (logs stay readable); :meth:`end` prints the summary line."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = styled(self.stream)
        self.started = time.monotonic()
        self._shown = 0.0

    def step(self, detail: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if self.live and (now - self._shown >= 0.1 or self.done == self.total):
            self._shown = now
            share = self.done / self.total if self.total else 1.0
            bar = "#" * int(share * 20)
            self.stream.write(
                f"\r\x1b[K{self.what} [{bar:<20}] {self.done}/{self.total} {detail}"[:160]
            )
            self.stream.flush()
        elif not self.live and self.total >= 10 and self.done % (self.total // 10) == 0:
            self.stream.write(f"{self.what}: {self.done}/{self.total}\n")
            self.stream.flush()

    def end(self, summary: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"{summary} ({time.monotonic() - self.started:.1f}s)\n")
        self.stream.flush()
