"""What the ``ccbridge`` command prints: plain text in a pipe, styled on a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ccbridge.services.local.console import Progress, age, table
from ccbridge.services.local.run import fresh_logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_align_and_style_only_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    rows = [["a-long-id", "FAILED", "boom"], ["b", "ACTIVE", ""]]
    piped = io.StringIO()
    table(("ID", "STATE", "LAST ERROR"), rows, piped, colours={1: {"FAILED": "red"}})
    lines = piped.getvalue().splitlines()
    assert lines == [
        "ID         STATE   LAST ERROR",
        "a-long-id  FAILED  boom",
        "b          ACTIVE",
    ]
    tty = Terminal()
    table(("ID", "STATE", "LAST ERROR"), rows, tty, colours={1: {"FAILED": "red"}})
    assert "\x1b[31mFAILED" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    table(("ID", "STATE", "LAST ERROR"), rows, plain)
    assert "\x1b[" not in plain.getvalue()


def test_progress_is_a_live_line_on_a_terminal_and_tenths_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    piped = io.StringIO()
    progress = Progress("replaying", 20, piped)
    for _ in range(20):
        progress.step()
    progress.end("replayed 20 of 20")
    lines = piped.getvalue().splitlines()
    assert "\x1b[" not in piped.getvalue() and "\r" not in piped.getvalue()
    assert lines[0] == "replaying: 2/20" and lines[-2] == "replaying: 20/20"
    assert lines[-1].startswith("replayed 20 of 20 (")
    tty = Terminal()
    live = Progress("replaying", 3, tty)
    for _ in range(3):
        live.step("x")
    live.end("done")
    assert "\r\x1b[K" in tty.getvalue() and "3/3" in tty.getvalue()


def test_age_reads_like_a_person_says_it() -> None:
    assert [age(s) for s in (None, 5, 125, 7200, 200000)] == ["-", "5s", "2m", "2h", "2d"]


def test_each_run_starts_with_fresh_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "previous").mkdir(parents=True)
    (logs / "previous" / "old.log").write_text("two runs ago")
    (logs / "session.log").write_text("last run's error")
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.log").write_text("last run")
    fresh_logs(tmp_path)
    assert not (logs / "session.log").exists()
    assert (logs / "previous" / "session.log").read_text() == "last run's error"
    assert not (logs / "previous" / "old.log").exists()
    assert not (tmp_path / "redis" / "redis.log").exists()
    fresh_logs(tmp_path / "never-ran")  # nothing to move: fine
