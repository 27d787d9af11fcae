"""The adapter registry: connector name → factory(settings, redis) -> Adapter.

Adding an adapter is one line here. Factories import their adapter module lazily, so an
adapter's dependencies load only when CCBRIDGE_CONNECTORS names it. A factory may raise
``SettingsError`` for settings only it understands; the service then fails fast at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from ccbridge.services.connector.base import Adapter
    from ccbridge.services.connector.settings import ConnectorSettings

AdapterFactory = Callable[["ConnectorSettings", aioredis.Redis], "Adapter"]


def _webhook(settings: ConnectorSettings, redis: aioredis.Redis) -> Adapter:
    from ccbridge.services.connector.adapters.webhook import WebhookAdapter

    assert settings.webhook is not None  # ConnectorSettings reads it when configured
    return WebhookAdapter(settings.webhook)


def _rt(settings: ConnectorSettings, redis: aioredis.Redis) -> Adapter:
    from ccbridge.services.connector.adapters.rt import factory
    from ccbridge.services.connector.store import ConnectorStore

    store = ConnectorStore(redis, settings.common.redis_prefix)
    return factory(settings.env, store)  # reads CCBRIDGE_RT_*; SettingsError when invalid


ADAPTERS: dict[str, AdapterFactory] = {
    "webhook": _webhook,
    "rt": _rt,
}


async def create_adapters(settings: ConnectorSettings, redis: aioredis.Redis) -> dict[str, Adapter]:
    """Builds every configured adapter, in CCBRIDGE_CONNECTORS order. If one factory
    fails, the adapters already built are closed before the error propagates."""
    adapters: dict[str, Adapter] = {}
    try:
        for name in settings.connectors:
            adapters[name] = ADAPTERS[name](settings, redis)
    except BaseException:
        for adapter in reversed(adapters.values()):
            await adapter.aclose()
        raise
    return adapters
