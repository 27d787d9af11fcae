"""RawPipeline's own connections against real redis-servers: every way REDIS_URL says to
connect (TLS, an ACL user and password, a db other than 0, a client name, a unix socket,
Sentinel across a failover), next to the redis-py client on the same URL, and its
scripts when Redis has lost them (NOSCRIPT)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from ccbridge.services.runtime.redis import RawPipeline, create_redis
from tests.support.redis_server import free_port, redis_binary


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_process(workdir: Path, *args: str) -> Iterator[int]:
    """A redis-server with extra arguments; yields its plain TCP port once it answers."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [
            *(redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            *("--logfile", str(log), *args),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if proc.poll() is not None:
                output = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server {' '.join(args)} exited:\n{output}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _both_paths_work(url: str, key: str = "ccb-raw:k") -> None:
    """The raw pipeline and the redis-py client (commands and a Script) on ``url``."""
    client = create_redis(url)
    raw = RawPipeline(client)
    try:
        assert await raw.execute([("SET", key, "raw"), ("GET", key)]) == [b"OK", b"raw"]
        await client.set(key, "redis-py")
        assert await raw.execute([("GET", key)]) == [b"redis-py"]
        script = client.register_script("return redis.call('GET', KEYS[1])")
        assert await script(keys=[key]) == b"redis-py"
    finally:
        await client.delete(key)
        await raw.aclose()
        await client.aclose()


# -- TLS -----------------------------------------------------------------------------------
def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server with a TLS port and a certificate for 127.0.0.1 signed by a
    throw-away CA; yields the TLS port and the CA file."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throw-away certificate")
    d = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = d / "ca.crt", d / "ca.key"
    cert, cert_key, csr, ext = d / "server.crt", d / "server.key", d / "server.csr", d / "ext"
    _openssl(
        "req", "-x509", *key, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=ccbridge test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-new", *key, "-keyout", str(cert_key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip
    tls_port = free_port()
    tls = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert)]
    tls += ["--tls-key-file", str(cert_key), "--tls-ca-cert-file", str(ca)]
    tls += ["--tls-auth-clients", "no"]
    with ExitStack() as stack:
        try:
            stack.enter_context(redis_process(d / "redis", *tls))
        except RuntimeError as exc:
            if "tls" in str(exc).lower():
                pytest.skip(f"this redis-server ({redis_binary()}) has no TLS: {exc}")
            raise
        yield tls_port, ca


async def test_tls_with_a_ca_from_the_url(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    await _both_paths_work(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")


async def test_tls_refuses_a_server_it_cannot_verify(tls_server: tuple[int, Path]) -> None:
    """Without the CA the certificate does not verify: both paths refuse to talk."""
    port, _ca = tls_server
    client = create_redis(f"rediss://127.0.0.1:{port}/0")
    raw = RawPipeline(client)
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await raw.execute([("PING",)])
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await raw.aclose()
        await client.aclose()


# -- AUTH, SELECT, client name, unix socket ---------------------------------------------------
async def test_acl_user_and_password(redis_url: str, redis_client: aioredis.Redis) -> None:
    """The ACL user can only touch ``ccb-acl:*``: a reply proves who the pipeline is."""
    await redis_client.acl_setuser(
        "ccb-raw-user", enabled=True, passwords=["+s3cret"], keys=["ccb-acl:*"],
        commands=["+@all"], reset=True,
    )  # fmt: skip
    address = urlsplit(redis_url).netloc.rsplit("@", 1)[-1]
    try:
        await _both_paths_work(f"redis://ccb-raw-user:s3cret@{address}/0", "ccb-acl:k")
        client = create_redis(f"redis://ccb-raw-user:s3cret@{address}/0")
        raw = RawPipeline(client)
        try:
            (who, denied) = await raw.execute([("ACL", "WHOAMI"), ("GET", "other")])
            assert who == b"ccb-raw-user"
            assert isinstance(denied, ResponseError) and "NOPERM" in str(denied)
        finally:
            await raw.aclose()
            await client.aclose()
        wrong = create_redis(f"redis://ccb-raw-user:wrong@{address}/0")
        raw = RawPipeline(wrong)
        try:
            with pytest.raises(AuthenticationError):
                await raw.execute([("PING",)])
        finally:
            await raw.aclose()
            await wrong.aclose()
    finally:
        await redis_client.acl_deluser("ccb-raw-user")


async def test_the_db_of_the_url_is_selected(redis_url: str, redis_client: aioredis.Redis) -> None:
    base = redis_url.rsplit("/", 1)[0]
    client = create_redis(f"{base}/5?client_name=ccb-raw-db5")
    raw = RawPipeline(client)
    try:
        assert await raw.execute([("SET", "ccb-raw:db", "five"), ("CLIENT", "GETNAME")]) == [
            b"OK",
            b"ccb-raw-db5",
        ]
        assert await client.get("ccb-raw:db") == b"five"  # redis-py on the same db
        assert await redis_client.get("ccb-raw:db") is None  # not in db 0
        listing = (await redis_client.execute_command("CLIENT", "LIST")).decode()
        assert any("name=ccb-raw-db5" in line and " db=5 " in line for line in listing.splitlines())
    finally:
        await client.delete("ccb-raw:db")
        await raw.aclose()
        await client.aclose()


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    with redis_process(tmp_path / "redis", "--unixsocket", str(path), "--unixsocketperm", "700"):
        await _both_paths_work(f"unix://{path}?db=2")


# -- Sentinel -------------------------------------------------------------------------------
async def test_sentinel_failover_is_followed(tmp_path: Path) -> None:
    """The sentinel promotes the replica and demotes the old master: the pipeline's
    connection to the old master breaks or answers READONLY, and the round trip is sent
    again to the master the sentinel names now."""
    with (
        redis_process(tmp_path / "a") as a,
        redis_process(tmp_path / "b", "--replicaof", "127.0.0.1", str(a)) as b,
    ):
        port = free_port()
        with sentinel_process(tmp_path, port, a):
            sentinel = aioredis.Redis(port=port)
            client = create_redis(f"redis+sentinel://127.0.0.1:{port}/main/0")
            raw = RawPipeline(client)
            try:
                replies = await raw.execute([("SET", "ccb-raw:f", "1"), ("CONFIG", "GET", "port")])
                assert replies == [b"OK", [b"port", str(a).encode()]]
                await _eventually(lambda: _failover(sentinel))
                await _eventually(lambda: _master_port_is(sentinel, b))
                # Until the old master is turned into a replica it still takes writes
                # (Sentinel's own window, for redis-py's connections as for these): do
                # now what the sentinel does on its next look at it.
                old_master = aioredis.Redis(port=a)
                await old_master.replicaof("127.0.0.1", b)
                await old_master.aclose()
                replies = await raw.execute([("INCR", "ccb-raw:n"), ("CONFIG", "GET", "port")])
                assert replies == [1, [b"port", str(b).encode()]]
            finally:
                await raw.aclose()
                await client.aclose()
                await sentinel.aclose()


@contextmanager
def sentinel_process(workdir: Path, port: int, master_port: int) -> Iterator[None]:
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor main 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds main 1000\n"
        "sentinel failover-timeout main 5000\n"
    )
    proc = subprocess.Popen(
        [redis_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def _failover(sentinel: aioredis.Redis) -> bool:
    """Asks for a failover; False while the sentinel does not know a good replica yet."""
    try:
        return bool(await sentinel.execute_command("SENTINEL", "FAILOVER", "main"))
    except RedisConnectionError:
        return False  # the sentinel is still starting
    except ResponseError as exc:
        if "NOGOODSLAVE" in str(exc):
            return False
        raise


async def _master_port_is(sentinel: aioredis.Redis, port: int) -> bool:
    address = await sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main")
    return bool(address) and int(address[1]) == port


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


# -- scripts ----------------------------------------------------------------------------------
async def test_a_script_redis_lost_is_loaded_and_runs_once(redis_url: str) -> None:
    """NOSCRIPT (never loaded, or SCRIPT FLUSH): the pipeline loads the script and runs
    each lost call once, in order; the other commands' replies stay as they were."""
    client = create_redis(redis_url)
    raw = RawPipeline(client)
    counter = raw.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        await client.script_flush()
        replies = await raw.execute(
            [
                counter.command(["ccb-raw:c"], [1]),
                ("GET", "ccb-raw:c"),  # ran before the script was loaded
                counter.command(["ccb-raw:c"], [10]),
            ]
        )
        assert replies == [1, None, 11]
        assert await raw.execute([counter.command(["ccb-raw:c"], [100])]) == [111]
        await client.script_flush()
        assert await raw.execute([counter.command(["ccb-raw:c"], [1000])]) == [1111]
        assert await client.get("ccb-raw:c") == b"1111"  # every call ran exactly once
    finally:
        await client.delete("ccb-raw:c")
        await raw.aclose()
        await client.aclose()


async def test_a_script_that_does_not_load_leaves_its_error_in_place(redis_url: str) -> None:
    client = create_redis(redis_url)
    raw = RawPipeline(client)
    broken = raw.register_script("this is not lua")
    try:
        error, pong = await raw.execute([broken.command([]), ("PING",)])
        assert isinstance(error, ResponseError) and "compil" in str(error).lower()
        assert pong == b"PONG"
    finally:
        await raw.aclose()
        await client.aclose()


# -- its pool -------------------------------------------------------------------------------
async def test_at_most_max_connections_all_kept_until_closed(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Twenty concurrent round trips share two connections, which stay open between
    round trips (no reconnect per call) and close with aclose()."""
    base = redis_url.rsplit("/", 1)[0]
    client = create_redis(f"{base}/0?client_name=ccb-raw-pool")
    raw = RawPipeline(client, max_connections=2)

    async def named() -> list[str]:
        listing = (await redis_client.execute_command("CLIENT", "LIST")).decode()
        return [line for line in listing.splitlines() if "name=ccb-raw-pool" in line]

    try:
        replies = await asyncio.gather(
            *(raw.execute([("INCR", "ccb-raw:p"), ("CLIENT", "ID")]) for _ in range(20))
        )
        assert sorted(r[0] for r in replies) == list(range(1, 21))
        ids = {r[1] for r in replies}
        assert len(ids) == 2
        assert len(await named()) == 2
        again = await raw.execute([("CLIENT", "ID")])
        assert again[0] in ids  # kept, not reopened
        await raw.aclose()
        await _eventually(lambda: _none_left(named))
    finally:
        await raw.aclose()
        await client.delete("ccb-raw:p")
        await client.aclose()


async def _none_left(named: Callable[[], Awaitable[list[str]]]) -> bool:
    return not await named()
