"""Who the gateway believes the caller is (the Infobip IP allow-list depends on it),
through the real uvicorn server: X-Forwarded-For counts only from proxies named in
FORWARDED_ALLOW_IPS, and then only its right-most address that is not such a proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers
from tests.gateway.test_infobip_legacy import infobip_message

INFOBIP_IP = "203.0.113.7"  # the only address the allow-list admits
ATTACKER_IP = "198.51.100.9"


@asynccontextmanager
async def gateway(peers: Peers, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings.from_env(
        peers.env(
            CCBRIDGE_HTTP_PORT="0",
            CCBRIDGE_DRAIN_DELAY_S="0",
            CCBRIDGE_INFOBIP_ALLOWED_IPS=INFOBIP_IP,
            **env,
        )
    )
    running = await start(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            yield client
    finally:
        await running.stop()


async def post(client: httpx.AsyncClient, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    response = await client.post(
        f"/webhooks/infobip/{WEBHOOK_TOKEN}", json=infobip_message("m-xff"), headers=headers
    )
    return response.status_code


async def test_by_default_no_proxy_is_trusted(peers: Peers) -> None:
    """A caller on the pod's loopback (e.g. via a sidecar that passes headers through)
    cannot claim Infobip's address."""
    async with gateway(peers) as client:
        assert await post(client, INFOBIP_IP) == 403
        assert await post(client, None) == 403
    assert peers.session.calls == []


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        (INFOBIP_IP, 200),  # the sidecar appended the real peer
        (f"{ATTACKER_IP}, {INFOBIP_IP}", 200),  # whatever the client claimed before it
        (f"{INFOBIP_IP}, {ATTACKER_IP}", 403),  # a forged claim, then the real peer
        (None, 403),  # no header: the sidecar itself is the caller
    ],
)
async def test_a_named_sidecar_is_trusted_for_the_address_it_appends(
    peers: Peers, forwarded_for: str | None, status: int
) -> None:
    async with gateway(peers, FORWARDED_ALLOW_IPS="127.0.0.1") as client:
        assert await post(client, forwarded_for) == status
