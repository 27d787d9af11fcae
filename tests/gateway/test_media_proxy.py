"""``GET /media/{token}`` (gateway/media.py) against the Infobip simulator served on loopback:
valid, forged, expired, too large, Infobip's 404 and 500, unreachable, off, and a real
uvicorn gateway streaming a file before Infobip has finished sending it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.media import MediaLinks, MediaProxySettings, sign
from ccbridge.services.runtime.settings import EnvReader, Secret
from ccbridge.simulators.infobip import Failure
from tests.gateway.conftest import Peers, running_gateway
from tests.simulators.ccaas.support import serve_app
from tests.simulators.infobip.harness import API_KEY, Sim, served_sim
from tests.support.far_side import closed_port

SECRET = "media-secret-0123456789abcdef"
PUBLIC = "https://bridge.example.com"
PHOTO = bytes(range(256)) * 1024  # 256 KiB: several chunks


def media_env(peers: Peers, infobip_url: str, **overrides: str) -> dict[str, str]:
    return peers.env(
        CCBRIDGE_MEDIA_PROXY="true",
        CCBRIDGE_PUBLIC_URL=PUBLIC,
        CCBRIDGE_MEDIA_SECRET=SECRET,
        INFOBIP_BASE_URL=infobip_url,
        INFOBIP_API_KEY=API_KEY,
        **overrides,
    )


def path_of(link: str) -> str:
    assert link.startswith(PUBLIC + "/media/")
    return link[len(PUBLIC) :]


def links_for(infobip_url: str) -> MediaLinks:
    env = EnvReader(
        {
            "CCBRIDGE_MEDIA_PROXY": "true",
            "CCBRIDGE_PUBLIC_URL": PUBLIC,
            "CCBRIDGE_MEDIA_SECRET": SECRET,
        }
    )
    settings = MediaProxySettings.read(env, signer=True)
    env.done("test")
    return MediaLinks(settings, infobip_url)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with served_sim() as sim:
        yield sim


async def put_media(sim: Sim, data: bytes, kind: str) -> str:
    answer = await sim.http.post("/_sim/media", content=data, headers={"content-type": kind})
    assert answer.status_code == 200
    assert sim.url is not None
    # The in-process control client reached it as http://infobip.test: the served URL.
    return f"{sim.url}/_sim/media/{answer.json()['id']}"


async def test_the_simulator_serves_media_only_with_the_api_key(sim: Sim) -> None:
    url = await put_media(sim, b"%PDF-1.7", "application/pdf")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 401
        ok = await http.get(url, headers={"Authorization": f"App {API_KEY}"})
    assert ok.status_code == 200 and ok.content == b"%PDF-1.7"
    assert ok.headers["content-type"] == "application/pdf"


async def test_valid_link_streams_the_file_with_its_type(sim: Sim, peers: Peers) -> None:
    assert sim.url is not None
    url = await put_media(sim, PHOTO, "image/jpeg")
    link = links_for(sim.url).link(url)
    async with running_gateway(media_env(peers, sim.url)) as (gateway, _):
        answer = await gateway.get(path_of(link))
    assert answer.status_code == 200
    assert answer.content == PHOTO
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["content-length"] == str(len(PHOTO))
    assert answer.headers["cache-control"] == "private, no-store"


async def test_forged_and_malformed_links_are_403(sim: Sim, peers: Peers) -> None:
    assert sim.url is not None
    url = await put_media(sim, b"x", "image/png")
    good = path_of(links_for(sim.url).link(url))
    payload, mac = good.removeprefix("/media/").split(".")
    other_secret = sign(Secret("another-secret-0123456789"), url, int(time.time()) + 60)
    forged = [
        f"/media/{payload}.{mac[:-2]}AA",
        f"/media/{payload}x.{mac}",
        f"/media/{other_secret}",
        "/media/not-a-token",
        "/media/..",
        "/media/%00.%00",
    ]
    async with running_gateway(media_env(peers, sim.url)) as (gateway, _):
        for path in forged:
            answer = await gateway.get(path)
            assert answer.status_code in (403, 404), path
            if answer.status_code == 403:
                assert answer.json()["error"]["code"] == "invalid_media_token", path
        assert (await gateway.get(f"/media/{other_secret}")).status_code == 403
        # Signed right, but for a host that is not Infobip: the key never goes there.
        elsewhere = sign(Secret(SECRET), "https://evil.example/x.png", int(time.time()) + 60)
        answer = await gateway.get(f"/media/{elsewhere}")
        assert answer.status_code == 403


async def test_expired_link_is_404(sim: Sim, peers: Peers) -> None:
    assert sim.url is not None
    url = await put_media(sim, b"x", "image/png")
    old = links_for(sim.url).link(url, now=time.time() - 8 * 86400)
    async with running_gateway(media_env(peers, sim.url)) as (gateway, _):
        answer = await gateway.get(path_of(old))
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "media_link_expired"


async def test_file_above_the_limit_is_413(sim: Sim, peers: Peers) -> None:
    assert sim.url is not None
    url = await put_media(sim, PHOTO, "image/jpeg")
    link = links_for(sim.url).link(url)
    env = media_env(peers, sim.url, CCBRIDGE_MEDIA_MAX_BYTES=str(len(PHOTO) - 1))
    async with running_gateway(env) as (gateway, _):
        answer = await gateway.get(path_of(link))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "media_too_large"


async def test_infobip_404_500_and_unreachable(sim: Sim, peers: Peers) -> None:
    assert sim.url is not None
    links = links_for(sim.url)
    missing = links.link(f"{sim.url}/_sim/media/no-such-file")
    url = await put_media(sim, b"x", "image/png")
    async with running_gateway(media_env(peers, sim.url)) as (gateway, _):
        answer = await gateway.get(path_of(missing))
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "media_not_found"
        sim.state.inject_failure(Failure(remaining=1, status=500, path_prefix="/_sim/media"))
        answer = await gateway.get(path_of(links.link(url)))
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "media_upstream_failed"
        assert (await gateway.get(path_of(links.link(url)))).status_code == 200
    gone = f"http://127.0.0.1:{closed_port()}"
    async with running_gateway(media_env(peers, gone)) as (gateway, _):
        answer = await gateway.get(path_of(links_for(gone).link(f"{gone}/_sim/media/x")))
    assert answer.status_code == 502


async def test_proxy_off_is_404(peers: Peers, gateway: httpx.AsyncClient) -> None:
    answer = await gateway.get("/media/anything.at-all")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "media_proxy_off"


def test_settings_need_a_public_url_and_a_strong_secret() -> None:
    env = EnvReader({"CCBRIDGE_MEDIA_PROXY": "true", "CCBRIDGE_MEDIA_SECRET": "short"})
    MediaProxySettings.read(env, signer=True)
    problems = " ".join(env.errors)
    assert "CCBRIDGE_PUBLIC_URL" in problems and "CCBRIDGE_MEDIA_SECRET" in problems
    # The gateway only verifies links: it needs the secret, not the public URL.
    gateway = EnvReader({"CCBRIDGE_MEDIA_PROXY": "true", "CCBRIDGE_MEDIA_SECRET": SECRET})
    assert MediaProxySettings.read(gateway, signer=False).enabled and gateway.errors == []


async def test_streams_before_infobip_has_sent_everything(peers: Peers) -> None:
    """Through the real uvicorn gateway: the first chunk reaches the CCaaS while Infobip
    still holds back the rest, so the file is never gathered whole in the gateway."""
    release = asyncio.Event()

    async def media(request: Request) -> Response:
        assert request.headers["authorization"] == f"App {API_KEY}"

        async def body() -> AsyncIterator[bytes]:
            yield b"first-chunk;"
            await release.wait()
            yield b"the-rest"

        return StreamingResponse(body(), media_type="video/mp4")

    upstream = Starlette(routes=[Route("/media/{name}", media)])
    async with serve_app(upstream) as infobip_url:
        env = media_env(
            peers,
            infobip_url,
            CCBRIDGE_HTTP_PORT="0",
            CCBRIDGE_DRAIN_DELAY_S="0",
            CCBRIDGE_MEDIA_MAX_STREAMS="1",
        )
        running = await start(GatewaySettings.from_env(env))
        try:
            link = links_for(infobip_url).link(f"{infobip_url}/media/clip.mp4")
            base = f"http://127.0.0.1:{running.port}"
            async with (
                httpx.AsyncClient(base_url=base, timeout=30) as http,
                http.stream("GET", path_of(link)) as answer,
            ):
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("video/mp4")
                chunks = answer.aiter_raw()
                first = await asyncio.wait_for(chunks.__anext__(), timeout=20)
                assert first.startswith(b"first-chunk;")
                # One download at a time (the cap): the next waits its turn, answered 503.
                busy = await http.get(path_of(link))
                assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
                assert busy.json()["error"]["code"] == "media_busy"
                release.set()
                rest = b"".join([c async for c in chunks])
            assert first + rest == b"first-chunk;the-rest"
            # The slot is free again once the stream ended.
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                again = await http.get(path_of(link))
            assert again.status_code == 200
        finally:
            release.set()
            await running.stop()
