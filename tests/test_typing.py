"""The type check reaches through gRPC: mypy reads grpc's stubs (types-grpcio) instead of
treating grpc as ``Any``, and only generated code is exempt from it (`make check`)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATED = re.compile(r"(__init__\.py|.*\.proto|.*_pb2(_grpc)?\.pyi?)$")


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _overrides() -> list[dict[str, Any]]:
    overrides: list[dict[str, Any]] = _project()["tool"]["mypy"].get("overrides", [])
    return overrides


def _modules(override: dict[str, Any]) -> list[str]:
    module = override["module"]
    return [module] if isinstance(module, str) else list(module)


def test_grpc_is_type_checked() -> None:
    dev = [
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower()
        for r in _project()["project"]["optional-dependencies"]["dev"]
    ]
    assert "types-grpcio" in dev
    for override in _overrides():
        if override.get("ignore_missing_imports") or override.get("follow_imports") in (
            "skip",
            "silent",
        ):
            grpc = [m for m in _modules(override) if m.split(".")[0] == "grpc"]
            assert not grpc, f"mypy must read grpc's stubs, not ignore them: {grpc}"


def test_only_generated_modules_are_exempt() -> None:
    for override in _overrides():
        if not override.get("ignore_errors"):
            continue
        for module in _modules(override):
            assert module.startswith("ccbridge.") and module.endswith(".*"), module
            folder = ROOT / "protos" / Path(*module.removesuffix(".*").split("."))
            assert folder.is_dir(), f"{module}: no such package"
            # followlinks: ccbridge/services, gateway and simulators are symlinks.
            written = [
                os.path.relpath(os.path.join(where, name), ROOT)
                for where, _, files in os.walk(folder, followlinks=True)
                for name in files
                if "__pycache__" not in where and not GENERATED.match(name)
            ]
            assert not written, f"{module} is exempt from mypy but holds {written}"
