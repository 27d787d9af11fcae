"""The benchmark's progress: a live line on a terminal, one plain line per phase
elsewhere, both naming the stage of the run."""

from __future__ import annotations

import io

from bench.harness import Status


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_one_plain_line_per_phase_with_its_stage() -> None:
    out = io.StringIO()
    status = Status(out)
    status.stage = "5/9"
    status.phase("relay end user → CCaaS at 100 webhooks/s")
    status.show("1,000 answers")  # live detail: terminals only
    status.finish("done")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("] stage 5/9: relay end user → CCaaS at 100 webhooks/s")
    assert lines[1:] == ["done"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    out = Terminal()
    status = Status(out)
    status.stage = "2/9"
    status.phase("opening 100 handovers")
    status.show("40 handovers not ACTIVE yet")
    assert out.getvalue().count("\r\x1b[K") == 2
    assert "stage 2/9: opening 100 handovers" in out.getvalue()
    assert out.getvalue().rstrip().endswith("40 handovers not ACTIVE yet")
