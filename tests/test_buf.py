"""The gRPC API stays compatible: ``buf lint`` and ``buf breaking`` against the protos of
the last release (scripts/buf-check.sh, docs/grpc.md "Compatibility"), run from a fresh
clone as CI runs them; without the release (tag or commit) the check fails instead of passing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "buf-check.sh"
HOW_TO = (
    "buf is not installed: npm install --prefix .tools @bufbuild/buf@1.75.0 "
    "(or put buf on PATH, or set BUF); .ci/run installs it"
)


def _buf() -> str:
    found = os.environ.get("BUF") or shutil.which("buf")
    local = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    if not found and local.exists():
        found = str(local)
    if not found:
        pytest.skip(HOW_TO)
    return found


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


def _clone(tmp_path: Path, *options: str) -> Path:
    """A fresh clone of this commit (the committed tree, as CI checks it out)."""
    head = _git("rev-parse", "HEAD")
    target = tmp_path / "clone"
    # file://: a local path clone ignores --depth.
    _git("clone", "-q", *options, f"file://{ROOT}", str(target), cwd=tmp_path)
    _git("checkout", "-q", head, cwd=target)
    return target


def _check(tree: Path, buf: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(tree / "scripts" / "buf-check.sh")],
        cwd=tree,
        env={**os.environ, "BUF": buf},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_protos_pass_lint_and_keep_compatibility_with_the_last_release() -> None:
    result = _check(ROOT, _buf())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking change against v" in result.stdout


def test_a_fresh_clone_checks_against_the_tag_and_catches_a_break(tmp_path: Path) -> None:
    buf = _buf()
    tree = _clone(tmp_path)
    assert _check(tree, buf).returncode == 0
    proto = tree / "protos" / "ccbridge" / "session" / "v1" / "session.proto"
    text = proto.read_text()
    assert "  string failure_reason = 14;" in text
    proto.write_text(text.replace("  string failure_reason = 14;", "  string last_error = 14;"))
    broken = _check(tree, buf)
    assert broken.returncode != 0
    assert 'changed name from "failure_reason" to "last_error"' in broken.stdout + broken.stderr


def test_a_clone_without_tags_checks_against_the_release_commit(tmp_path: Path) -> None:
    buf = _buf()
    tree = _clone(tmp_path, "--no-tags")
    assert not _git("tag", "-l", cwd=tree)
    result = _check(tree, buf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking change against v0.1.0 (commit 3c49abc98767" in result.stdout


def test_without_the_release_the_check_fails_loudly(tmp_path: Path) -> None:
    buf = _buf()
    tree = _clone(tmp_path, "--no-tags", "--depth", "1")
    result = _check(tree, buf)
    assert result.returncode == 2
    assert "FAILED: neither a release tag" in result.stderr and "--unshallow" in result.stderr
