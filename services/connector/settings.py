"""Settings of the connector service, with the settings of every enabled connector
(each adapter's own reader, registry.py), read all at once: one error names every
problem of the service and of every enabled connector."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.connector.adapters.webhook_settings import WebhookSettings
from ccbridge.services.connector.registry import ADAPTERS
from ccbridge.services.runtime.ports import DEFAULT_PORTS, default_addr
from ccbridge.services.runtime.settings import CommonSettings, EnvReader


@dataclass(frozen=True)
class ConnectorSettings:
    """Everything the connector service reads from the environment."""

    common: CommonSettings
    bind_host: str
    port: int
    # SessionService address (HandleWebhook and pollers report events there).
    session_addr: str
    # Configured adapters, in order (CCBRIDGE_CONNECTORS).
    connectors: tuple[str, ...]
    # Seconds between two polls of a poll-mode adapter.
    poll_interval_s: float
    # Each configured connector's parsed settings, in CCBRIDGE_CONNECTORS order.
    adapters: Mapping[str, object]

    @property
    def webhook(self) -> WebhookSettings | None:
        """Settings of the webhook connector; None when it is not configured."""
        found = self.adapters.get("webhook")
        return found if isinstance(found, WebhookSettings) else None

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConnectorSettings:
        env = EnvReader(environ)
        names: list[str] = []
        for name in env.list("CCBRIDGE_CONNECTORS", ("webhook",)):
            if name not in ADAPTERS:
                env.errors.append(
                    f"CCBRIDGE_CONNECTORS: unknown connector {name!r} "
                    f"(known: {', '.join(sorted(ADAPTERS))})"
                )
            elif name not in names:
                names.append(name)
        if not names and not env.errors:
            env.errors.append("CCBRIDGE_CONNECTORS names no connector")
        settings = cls(
            common=CommonSettings.read(env, "connector"),
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            port=env.int(
                "CCBRIDGE_CONNECTOR_PORT", DEFAULT_PORTS["connector"], minimum=0, maximum=65535
            ),
            session_addr=env.str("SESSION_ADDR", default_addr("session")),
            connectors=tuple(names),
            poll_interval_s=env.float("CCBRIDGE_POLL_INTERVAL_S", 2.0, minimum=0.01),
            adapters={name: ADAPTERS[name].read(env) for name in names},
        )
        env.done("connector")
        return settings
