"""Settings of the connector service and of the adapters it ships (read all at once).

Adapters added later may parse their own settings from ``ConnectorSettings.env`` (a copy
of the environment kept out of ``repr`` so a logged settings object shows no secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ccbridge.services.connector.registry import ADAPTERS
from ccbridge.services.runtime.ports import DEFAULT_PORTS, default_addr
from ccbridge.services.runtime.settings import CommonSettings, EnvReader, Secret


@dataclass(frozen=True)
class WebhookSettings:
    """The generic ``webhook`` connector (docs/connectors/webhook.md)."""

    # Where case.open / case.message / case.close are POSTed.
    url: str
    # Shared HMAC secrets: the first signs, any of them verifies (rotation).
    secrets: tuple[Secret, ...]
    # Timeout of each HTTP call to the CCaaS, seconds.
    timeout_s: float
    # Most case.message events in one POST (a JSON array); 1 = one event per POST.
    batch_max: int = 1

    @classmethod
    def read(cls, env: EnvReader) -> WebhookSettings:
        url = env.str("CCBRIDGE_WEBHOOK_CONNECTOR_URL")
        if url and not url.startswith(("http://", "https://")):
            env.errors.append("CCBRIDGE_WEBHOOK_CONNECTOR_URL must be an http:// or https:// URL")
        raw = env.secret("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET").value
        secrets = tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
        if raw and not secrets:
            env.errors.append("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET holds no secret")
        timeout_s = env.float("CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S", 10.0, minimum=0.1)
        batch_max = env.int("CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX", 1, minimum=1, maximum=100)
        return cls(url=url, secrets=secrets, timeout_s=timeout_s, batch_max=batch_max)


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
    # Settings of the webhook adapter; None when it is not configured.
    webhook: WebhookSettings | None
    # The environment, for adapters that read their own settings (never shown in repr).
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

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
            common=CommonSettings.read(env),
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            port=env.int(
                "CCBRIDGE_CONNECTOR_PORT", DEFAULT_PORTS["connector"], minimum=0, maximum=65535
            ),
            session_addr=env.str("SESSION_ADDR", default_addr("session")),
            connectors=tuple(names),
            poll_interval_s=env.float("CCBRIDGE_POLL_INTERVAL_S", 2.0, minimum=0.01),
            webhook=WebhookSettings.read(env) if "webhook" in names else None,
            env=dict(environ),
        )
        env.done("connector")
        return settings
