"""Settings of the generic ``webhook`` connector (docs/connectors/webhook.md).

Kept apart from the adapter so the connector's settings can parse them without loading
the adapter's HTTP code, and so the adapter does not import the service's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccbridge.services.runtime.settings import EnvReader, Secret


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
        secrets = env.secret_list("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET")
        timeout_s = env.float("CCBRIDGE_WEBHOOK_CONNECTOR_TIMEOUT_S", 10.0, minimum=0.1)
        batch_max = env.int("CCBRIDGE_WEBHOOK_CONNECTOR_BATCH_MAX", 1, minimum=1, maximum=100)
        return cls(url=url, secrets=secrets, timeout_s=timeout_s, batch_max=batch_max)
