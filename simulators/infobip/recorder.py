"""Records every API exchange and webhook of the Infobip simulator as JSON lines (the
simulator's ``--record PATH``), so a test can validate afterwards everything the mesh
sent and the simulator answered against Infobip's published documents
(tests/support/infobip_contract.py). A test tool: the lines hold message text."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson


class Recorder:
    """Appends one JSON object per line to ``path`` (flushed per line, thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "ab")  # open for the process's life

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record in ``path`` (none when the file does not exist)."""
    target = Path(path)
    if not target.exists():
        return []
    return [orjson.loads(line) for line in target.read_bytes().splitlines() if line.strip()]
