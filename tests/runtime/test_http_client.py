"""The far-side HTTP client (services/runtime/http_client.py) against real loopback
servers: the request it sends, the answer it reads, and each of its failures."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from ccbridge.services.runtime.http_client import (
    AnswerTooLarge,
    ConnectFailed,
    ConnectionLost,
    HttpAnswer,
    HttpClient,
    InvalidRequest,
    RequestTimeout,
    TlsFailed,
)
from tests.support.far_side import Reply, Seen, closed_port, far_side, garbage_server


async def test_request_and_answer() -> None:
    async with far_side(lambda _: Reply.json({"ok": True}, 201, {"X-Far": "yes"})) as far:
        async with HttpClient(
            base_url=far.url, headers={"User-Agent": "t/1"}, timeout_s=5, max_answer_bytes=1024
        ) as client:
            answer = await client.request(
                "PUT",
                "/a%2Fb/c",
                params={"q": "x = 'y' [z]", "n": 3},
                json_body={"text": "žuta 😀", "n": 1},
                headers={"X-Call": "1"},
            )
            raw = await client.request(
                "POST", "/raw", body=b"\x00bytes", headers={"Content-Type": "x/y"}
            )
    assert (answer.status, answer.ok, answer.json()) == (201, True, {"ok": True})
    assert answer.headers["x-far"] == "yes" and answer.headers["X-FAR"] == "yes"
    put, post = far.requests
    assert (put.method, put.raw_path) == ("PUT", "/a%2Fb/c")
    assert parse_qs(put.query) == {"q": ["x = 'y' [z]"], "n": ["3"]}
    assert put.headers["content-type"] == "application/json"
    assert (put.headers["user-agent"], put.headers["x-call"]) == ("t/1", "1")
    assert put.json() == {"text": "žuta 😀", "n": 1}
    assert (post.body, post.headers["content-type"], raw.ok) == (b"\x00bytes", "x/y", True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": [1]}', {"a": [1]}),
        (b"", {}),
        (b"  \n", {}),
        (b"<html>", {}),
        (b"[1, 2]", {}),
        (b'"text"', {}),
    ],
)
def test_json_object_is_the_body_object_or_empty(body: bytes, expected: object) -> None:
    assert HttpAnswer(200, {}, body).json_object() == expected


async def test_failure_answers_are_answers_and_redirects_are_not_followed() -> None:
    script = {
        "/busy": Reply(503, b"busy", {"Retry-After": "3"}),
        "/moved": Reply(302, b"", {"Location": "/elsewhere"}),
    }
    async with far_side(lambda seen: script[seen.path]) as far:
        async with HttpClient(base_url=far.url, timeout_s=5, max_answer_bytes=1024) as client:
            busy = await client.request("GET", "/busy")
            moved = await client.request("GET", "/moved")
    assert (busy.status, busy.ok, busy.body, busy.headers["retry-after"]) == (
        503,
        False,
        b"busy",
        "3",
    )
    assert moved.status == 302
    assert [r.path for r in far.requests] == ["/busy", "/moved"]


@pytest.mark.parametrize("chunked", [False, True])
async def test_answer_size_limit(chunked: bool) -> None:
    """With a Content-Length (refused before reading) and chunked (counted as it comes)."""

    def script(seen: Seen) -> Reply:
        return Reply(200 if seen.path == "/ok" else 500, b"x" * 4096, chunked=chunked)

    async with far_side(script) as far:
        async with HttpClient(base_url=far.url, timeout_s=5, max_answer_bytes=4096) as client:
            assert (await client.request("GET", "/ok")).body == b"x" * 4096
        async with HttpClient(base_url=far.url, timeout_s=5, max_answer_bytes=4095) as client:
            with pytest.raises(AnswerTooLarge) as caught:
                await client.request("GET", "/ok")
            assert caught.value.status == 200
            with pytest.raises(AnswerTooLarge) as caught:
                await client.request("GET", "/failed")
            assert caught.value.status == 500
            # The connection pool still works after an answer left unread.
            far.script = lambda _: Reply(200, b"small", chunked=chunked)
            assert (await client.request("GET", "/ok")).body == b"small"


async def test_timeout_bounds_the_whole_request() -> None:
    async with far_side(lambda _: Reply(200, b"late", delay_s=10.0)) as far:
        async with HttpClient(base_url=far.url, timeout_s=0.3, max_answer_bytes=64) as client:
            with pytest.raises(RequestTimeout, match=r"timed out after 0\.3s"):
                await client.request("POST", "/slow", body=b"{}")


async def test_refused_and_unresolvable_and_invalid() -> None:
    async with HttpClient(timeout_s=5, max_answer_bytes=64) as client:
        with pytest.raises(ConnectFailed, match="could not connect"):
            await client.request("GET", f"http://127.0.0.1:{closed_port()}/x")
        with pytest.raises(ConnectFailed):
            await client.request("GET", "http://nowhere.invalid/x")
        with pytest.raises(InvalidRequest):
            await client.request("GET", "not a url")
        with pytest.raises(InvalidRequest, match="cannot be written as JSON"):
            await client.request("POST", "http://127.0.0.1:9/x", json_body={"t": "\ud800"})


async def test_an_answer_that_is_not_http() -> None:
    async with garbage_server() as url:
        async with HttpClient(base_url=url, timeout_s=5, max_answer_bytes=64) as client:
            with pytest.raises(ConnectionLost):
                await client.request("POST", "/x", body=b"{}")


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate (which no client trusts)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[str]:
    """An HTTPS server on loopback answering 200 to whoever completes the handshake."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up during the handshake
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_an_untrusted_certificate_is_a_tls_failure(self_signed: ssl.SSLContext) -> None:
    async with tls_server(self_signed) as url:
        async with HttpClient(base_url=url, timeout_s=5, max_answer_bytes=64) as client:
            with pytest.raises(TlsFailed, match="TLS failed"):
                await client.request("GET", "/x")


async def test_stream_reads_the_body_chunk_by_chunk() -> None:
    body = bytes(range(256)) * 64  # 16 KiB, sent in 1 KiB chunks without a length
    script = lambda _: Reply(200, body, {"Content-Type": "image/png"}, chunked=True)  # noqa: E731
    async with far_side(script) as far:
        # The limit of whole answers does not apply to a stream: the caller counts.
        async with HttpClient(timeout_s=5, max_answer_bytes=10) as client:
            async with client.stream("GET", f"{far.url}/f", headers={"X-Key": "k"}) as answer:
                assert answer.status == 200 and answer.content_length is None
                assert answer.headers["content-type"] == "image/png"
                chunks = [chunk async for chunk in answer.chunks(4096)]
            assert b"".join(chunks) == body and len(chunks) > 1
            assert far.requests[0].headers["x-key"] == "k"
            async with client.stream("GET", f"{far.url}/g") as again:  # the pool is reused
                assert len(b"".join([c async for c in again.chunks()])) == len(body)


async def test_stream_failures_are_http_failures() -> None:
    async with HttpClient(timeout_s=5, max_answer_bytes=10) as client:
        with pytest.raises(ConnectFailed):
            async with client.stream("GET", f"http://127.0.0.1:{closed_port()}/x"):
                pass
        async with garbage_server() as url:
            with pytest.raises(ConnectionLost):
                async with client.stream("GET", f"{url}/x"):
                    pass
