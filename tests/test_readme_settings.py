"""The README's settings table names every environment variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# env.str("X"), env.secret("X", …), environ.get("X"), os.environ.get("X"), environ["X"]
READS = re.compile(
    r"""(?:env\.\w+\(\s*|environ\.get\(\s*|environ\[\s*)["']((?:CCBRIDGE|INFOBIP|REDIS|LOG|SESSION|HISTORY|ROUTING|CONNECTOR|FORWARDED)_?[A-Z0-9_]*)["']"""
)


def test_every_setting_is_documented() -> None:
    read: set[str] = set()
    for folder in ("services", "gateway", "simulators"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(READS.findall(path.read_text()))
    assert len(read) > 40, "the scan found the settings"
    readme = (ROOT / "README.md").read_text()
    table = {m for m in re.findall(r"`([A-Z][A-Z0-9_]+)`", readme)}
    missing = sorted(read - table)
    assert not missing, f"settings missing from the README table: {missing}"
