"""Regenerate the committed protobuf/gRPC code next to the protos.

Usage: python scripts/gen_protos.py [--out DIR]

With --out the code is written to DIR instead (the drift test uses that to compare).
Needs the pinned grpcio-tools and mypy-protobuf (see pyproject.toml [dev]).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    plugin_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None or plugin_grpc is None:
        raise SystemExit(
            "mypy-protobuf is not installed next to this Python (pip install '.[dev]')"
        )
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_grpc}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *[str(p.relative_to(PROTOS)) for p in proto_files()],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTOS)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
