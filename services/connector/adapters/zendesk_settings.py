"""Settings of the Zendesk (Sunshine Conversations v2) connector (docs/connectors/zendesk.md).

Kept apart from the adapter so the connector's settings can parse them without loading
the adapter's HTTP code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.settings import EnvReader, Secret

# Switchboard integration names: "alphanumeric characters, `-` and `_`", at most 128
# (the published schema's ``name``).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class ZendeskSettings:
    """Where the Sunshine Conversations app is and how the bridge uses it."""

    # API host: https://<subdomain>.zendesk.com/sc (or a legacy region's host).
    base_url: str
    app_id: str
    key_id: str  # API key id (basic auth user)
    key_secret: Secret  # API key secret (basic auth password)
    # The X-API-Key secrets of the bridge's webhook (the first is the current one; more
    # than one only while a webhook is being replaced). Sunshine generates them.
    webhook_secrets: tuple[Secret, ...]
    # Switchboard integration the handover passes control to (Agent Workspace).
    agent_integration: str
    # Switchboard integration control goes back to when the Infobip side closes.
    bot_integration: str
    # Custom integration (displayName) the setup command creates for the webhook.
    integration_name: str
    timeout_s: float
    # Largest text of one transcript message (the schema's text maxLength is 4096).
    transcript_chunk_chars: int

    @property
    def api(self) -> str:
        """``<base>/v2/apps/<app id>``."""
        return f"{self.base_url}/v2/apps/{self.app_id}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, need_webhook_secret: bool = True
    ) -> ZendeskSettings:
        """Reads the settings alone (the setup command: before the webhook exists its
        secret is not known, so ``need_webhook_secret`` is False there)."""
        env = EnvReader(environ)
        settings = cls.read(env, need_webhook_secret=need_webhook_secret)
        env.done("zendesk connector")
        return settings

    @classmethod
    def read(cls, env: EnvReader, *, need_webhook_secret: bool = True) -> ZendeskSettings:
        """Reads the settings, adding every problem to ``env``."""
        base_url = env.str("CCBRIDGE_ZENDESK_BASE_URL").rstrip("/")
        if base_url and not re.match(r"^https?://[^/\s]+", base_url):
            env.errors.append(f"CCBRIDGE_ZENDESK_BASE_URL must be an http(s) URL, got {base_url!r}")
        app_id = env.str("CCBRIDGE_ZENDESK_APP_ID")
        if app_id and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", app_id):
            env.errors.append("CCBRIDGE_ZENDESK_APP_ID must be an app id (letters, digits)")
        settings = cls(
            base_url=base_url,
            app_id=app_id,
            key_id=env.str("CCBRIDGE_ZENDESK_KEY_ID"),
            key_secret=env.secret("CCBRIDGE_ZENDESK_KEY_SECRET"),
            webhook_secrets=env.secret_list(
                "CCBRIDGE_ZENDESK_WEBHOOK_SECRET", required=need_webhook_secret
            ),
            agent_integration=env.str("CCBRIDGE_ZENDESK_AGENT_INTEGRATION", "zd-agentWorkspace"),
            bot_integration=env.str("CCBRIDGE_ZENDESK_BOT_INTEGRATION", "ccbridge"),
            integration_name=env.str("CCBRIDGE_ZENDESK_INTEGRATION_NAME", "ccbridge"),
            timeout_s=env.float("CCBRIDGE_ZENDESK_TIMEOUT_S", 10.0, minimum=0.1),
            transcript_chunk_chars=env.int(
                "CCBRIDGE_ZENDESK_TRANSCRIPT_CHUNK_CHARS", 4000, minimum=200, maximum=4096
            ),
        )
        for key, name in (
            ("CCBRIDGE_ZENDESK_AGENT_INTEGRATION", settings.agent_integration),
            ("CCBRIDGE_ZENDESK_BOT_INTEGRATION", settings.bot_integration),
        ):
            if not _NAME.match(name):
                env.errors.append(f"{key} must be 1-128 letters, digits, '-' or '_'")
        if settings.agent_integration == settings.bot_integration:
            env.errors.append(
                "CCBRIDGE_ZENDESK_AGENT_INTEGRATION and CCBRIDGE_ZENDESK_BOT_INTEGRATION differ"
            )
        return settings
