"""The adapter registry: connector name → its settings reader and its builder.

Adding an adapter is one entry here: the adapter exports its settings (a module of its
own, ``adapters/<name>_settings.py``, read with the service's one :class:`EnvReader` so
every enabled connector's problems are reported in the one start-up message) and its
``build(settings, store)`` (the store names the adapter's Redis keys under the one
prefix and holds the client). Builders import their adapter module lazily, so an adapter's
dependencies load only when CCBRIDGE_CONNECTORS names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ccbridge.services.connector.adapters.genesys_settings import GenesysSettings
from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.adapters.zendesk_settings import ZendeskSettings
from ccbridge.services.connector.base import Adapter
from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.settings import EnvReader

T = TypeVar("T")


@dataclass(frozen=True)
class AdapterSpec(Generic[T]):
    """How to read one connector's settings and build its adapter from them."""

    read: Callable[[EnvReader], T]
    build: Callable[[T, ConnectorStore], Adapter]


def _webhook(settings: WebhookSettings, store: ConnectorStore) -> Adapter:
    from ccbridge.services.connector.adapters import webhook

    return webhook.build(settings, store)


def _rt(settings: RtSettings, store: ConnectorStore) -> Adapter:
    from ccbridge.services.connector.adapters import rt

    return rt.build(settings, store)


def _genesys(settings: GenesysSettings, store: ConnectorStore) -> Adapter:
    from ccbridge.services.connector.adapters import genesys

    return genesys.build(settings, store)


def _zendesk(settings: ZendeskSettings, store: ConnectorStore) -> Adapter:
    from ccbridge.services.connector.adapters import zendesk

    return zendesk.build(settings, store)


ADAPTERS: Mapping[str, AdapterSpec[Any]] = {
    "webhook": AdapterSpec(WebhookSettings.read, _webhook),
    "rt": AdapterSpec(RtSettings.read, _rt),
    "genesys": AdapterSpec(GenesysSettings.read, _genesys),
    "zendesk": AdapterSpec(ZendeskSettings.read, _zendesk),
}


async def create_adapters(
    configured: Mapping[str, object], store: ConnectorStore
) -> dict[str, Adapter]:
    """Builds every configured adapter (name → its parsed settings, in CCBRIDGE_CONNECTORS
    order). If one fails, the adapters already built are closed before the error
    propagates."""
    adapters: dict[str, Adapter] = {}
    try:
        for name, settings in configured.items():
            adapters[name] = ADAPTERS[name].build(settings, store)
    except BaseException:
        for adapter in reversed(adapters.values()):
            await adapter.aclose()
        raise
    return adapters
