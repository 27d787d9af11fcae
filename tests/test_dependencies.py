"""The product imports only what it declares: every import (at any depth, lazy ones too)
of every module under ``ccbridge`` is the standard library, ``ccbridge`` itself, or a
distribution named in pyproject.toml's ``[project] dependencies`` (with the extras named
there, e.g. ``redis[hiredis]``). An optional extra is allowed only where the table below
says, behind a lazy import. So an install without the dev extra works, and httpx (the
tests' client) or stdlib ``json`` (orjson is the product's one JSON library) cannot creep
back into the product."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

import ccbridge

ROOT = Path(ccbridge.__path__[0])
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# Standard-library modules the product must not use: the one way is another library.
BANNED_STDLIB = {"json": "use orjson (the product's one JSON library)"}

# Optional extras the product may import, and where (paths relative to ccbridge/).
# The simulators run from `ccbridge up` / `ccbridge sim` (documented with the `local` extra;
# cli.py imports them lazily), never in the image.
OPTIONAL_EXTRAS = {"local": ("services/local/", "simulators/")}

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_EXTRAS = re.compile(r"\[([^\]]*)\]")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, list[str]]:
    """A requirement's distribution name and extras ("redis[hiredis]>=5" -> redis, [hiredis])."""
    name = _NAME.match(spec)
    assert name is not None, spec
    extras = _EXTRAS.match(spec, name.end())
    named = [extra.strip() for extra in extras.group(1).split(",")] if extras else []
    return _normalize(name.group()), named


def _with_extras(specs: list[str]) -> set[str]:
    """The distributions of ``specs``, plus those their extras pull in."""
    found: set[str] = set()
    for spec in specs:
        name, extras = _requirement(spec)
        found.add(name)
        for required in importlib.metadata.requires(name) or []:
            requirement, _, marker = required.partition(";")
            if any(re.search(rf"extra\s*==\s*['\"]{extra}['\"]", marker) for extra in extras):
                found.add(_requirement(requirement)[0])
    return found


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(PYPROJECT.read_text())["project"]
    return project


def _product_files() -> list[Path]:
    # followlinks: services/, gateway/ and simulators/ are symlinks under ccbridge/
    return sorted(
        Path(folder, file)
        for folder, _, files in os.walk(ROOT, followlinks=True)
        for file in files
        if file.endswith(".py")
    )


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_product_imports_only_declared_distributions() -> None:
    project = _project()
    declared = _with_extras(list(project["dependencies"]))  # type: ignore[call-overload]
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    optional = {extra: _with_extras(extras[extra]) for extra in OPTIONAL_EXTRAS}
    distributions = importlib.metadata.packages_distributions()
    problems: list[str] = []
    files = _product_files()
    assert len(files) > 50, "the walk found too few product modules"
    for path in files:
        where = path.relative_to(ROOT).as_posix()
        for name in sorted(_top_level_imports(path)):
            if name in BANNED_STDLIB:
                problems.append(f"{where}: imports {name}: {BANNED_STDLIB[name]}")
                continue
            if name == "ccbridge" or name in sys.stdlib_module_names:
                continue
            owners = {_normalize(dist) for dist in distributions.get(name, [])}
            if not owners:
                problems.append(f"{where}: imports {name}, which no installed distribution has")
            elif owners & declared:
                continue
            elif any(
                owners & optional[extra] and where.startswith(places)
                for extra, places in OPTIONAL_EXTRAS.items()
            ):
                continue
            else:
                problems.append(
                    f"{where}: imports {name} ({', '.join(sorted(owners))}), "
                    "not in [project] dependencies"
                )
    assert not problems, "\n".join(problems)


def test_the_check_catches_httpx_and_stdlib_json(tmp_path: Path) -> None:
    """The walk sees lazy imports and both import forms (a check that cannot fail is no
    check)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import httpx.x\n    from json import dumps\n")
    assert _top_level_imports(module) == {"httpx", "json"}
    declared = _with_extras(list(_project()["dependencies"]))  # type: ignore[call-overload]
    httpx_owners = {_normalize(d) for d in importlib.metadata.packages_distributions()["httpx"]}
    assert not httpx_owners & declared
    assert {"hiredis", "uvloop", "orjson", "aiohttp"} <= declared
