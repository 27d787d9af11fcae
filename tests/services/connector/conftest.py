"""Fixtures of the RT adapter tests (test_rt_*.py): adapters on the real RT peer, and
REST2 clients as the agent and as the bridge's RT user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from ccbridge.services.connector.adapters.rt import RtAdapter
from ccbridge.services.connector.store import ConnectorStore
from tests.services.connector.test_rt_adapter import _settings
from tests.support.rt import RtPeer


@pytest.fixture
async def make_adapter(
    rt_peer: RtPeer, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[..., RtAdapter]]:
    """``make(**CCBRIDGE_RT_* overrides)``: an RT adapter, closed after the test."""
    made: list[RtAdapter] = []

    def make(**overrides: str) -> RtAdapter:
        adapter = RtAdapter(_settings(rt_peer, **overrides), ConnectorStore(redis_client))
        made.append(adapter)
        return adapter

    try:
        yield make
    finally:
        for adapter in made:
            await adapter.aclose()


def _rest2(rt_peer: RtPeer, token: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"token {token}"}
    return httpx.AsyncClient(base_url=rt_peer.rest2, timeout=10, headers=headers)


@pytest.fixture
async def agent(rt_peer: RtPeer) -> AsyncIterator[httpx.AsyncClient]:
    """REST2 as the agent (agent1)."""
    async with _rest2(rt_peer, rt_peer.agent_token) as client:
        yield client


@pytest.fixture
async def bridge_http(rt_peer: RtPeer) -> AsyncIterator[httpx.AsyncClient]:
    """REST2 as the bridge's RT user."""
    async with _rest2(rt_peer, rt_peer.bridge_token) as client:
        yield client
