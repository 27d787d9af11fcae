"""One lock file pins every dependency (requirements.lock, `make lock`), and every install
path (Makefile, Dockerfile) installs from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.strip().split("==", 1)
            pins[_name(name)] = version
    return pins


def test_every_dependency_and_extra_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = list(project["project"]["dependencies"]) + list(project["build-system"]["requires"])
    for extra in project["project"]["optional-dependencies"].values():
        wanted += extra
    pins = _pins()
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert not missing, f"not in requirements.lock (run `make lock`): {missing}"


def test_every_install_path_uses_the_lock() -> None:
    for path in ("Makefile", "Dockerfile"):
        installs = [
            line
            for line in (ROOT / path).read_text().splitlines()
            if re.search(r"pip install (?!.*-c)", line) and "$(PIN)" not in line
        ]
        assert not installs, f"{path} installs without the lock: {installs}"
