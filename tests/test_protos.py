"""Generated protobuf code must match the protos (regenerate: make protos)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )

    def listing(root: Path) -> list[Path]:
        return sorted(
            p.relative_to(root)
            for p in root.rglob("*_pb2*")
            if p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
        )

    generated = listing(tmp_path)
    committed = listing(ROOT / "protos")
    assert generated == committed, "generated file set differs: run `make protos`"
    drift = [
        str(rel)
        for rel in generated
        if (tmp_path / rel).read_bytes() != (ROOT / "protos" / rel).read_bytes()
    ]
    assert not drift, f"generated code is stale: {drift}; run `make protos`"
