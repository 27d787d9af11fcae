"""Settings of the Request Tracker (``rt``) connector (docs/connectors/rt.md).

Kept apart from the adapter so the connector's settings can parse them without loading
the adapter's HTTP code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.media import MediaProxySettings
from ccbridge.services.runtime.settings import EnvReader, Secret


@dataclass(frozen=True)
class RtSettings:
    """Where RT is and how the adapter uses it."""

    url: str  # base URL of RT, e.g. http://127.0.0.1:8080/rt (REST2 is <url>/REST/2.0)
    token: Secret  # API token of the bridge's RT user
    user: str  # name of that RT user: its own transactions are never read back
    queue: str  # default queue (when the routing decision names none)
    conversation_field: str  # ticket custom field holding the Infobip conversation id
    timeout_s: float  # per HTTP call
    requestor_domain: str  # made-up requestor addresses: <channel>-<end user>@<domain>
    poll_page: int  # transactions per page (RT allows up to 100)
    lease_ttl_s: float  # poll lease per queue; renewed on every poll
    attach_max_bytes: int  # inbound media up to this size is attached; larger is linked
    # Files of agent replies reach Infobip as signed gateway links (CCBRIDGE_MEDIA_*).
    media: MediaProxySettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RtSettings:
        """Reads the settings alone (raises SettingsError naming every bad key)."""
        env = EnvReader(environ)
        settings = cls.read(env)
        env.done("rt connector")
        return settings

    @classmethod
    def read(cls, env: EnvReader) -> RtSettings:
        """Reads the settings, adding every problem to ``env`` (the service reports the
        problems of every connector in one message)."""
        url = env.str("CCBRIDGE_RT_URL").rstrip("/")
        if url and not re.match(r"^https?://[^/\s]+", url):
            env.errors.append(f"CCBRIDGE_RT_URL must be an http(s) URL, got {url!r}")
        settings = cls(
            url=url,
            token=env.secret("CCBRIDGE_RT_TOKEN"),
            user=env.str("CCBRIDGE_RT_USER", "bridge"),
            queue=env.str("CCBRIDGE_RT_QUEUE", "Chat Handover"),
            conversation_field=env.str("CCBRIDGE_RT_CONVERSATION_FIELD", "Infobip Conversation"),
            timeout_s=env.float("CCBRIDGE_RT_TIMEOUT_S", 10.0, minimum=0.1),
            requestor_domain=env.str("CCBRIDGE_RT_REQUESTOR_DOMAIN", "customers.ccbridge.invalid"),
            poll_page=env.int("CCBRIDGE_RT_POLL_PAGE", 100, minimum=1, maximum=100),
            lease_ttl_s=env.float("CCBRIDGE_RT_LEASE_TTL_S", 30.0, minimum=1.0),
            attach_max_bytes=env.int(
                "CCBRIDGE_RT_ATTACH_MAX_BYTES", 10 * 1024 * 1024, minimum=0, maximum=1 << 30
            ),
            # Not required: without a public URL, replies' files are reported on the ticket.
            media=MediaProxySettings.read(env, signer=False),
        )
        if "{" in settings.conversation_field or "}" in settings.conversation_field:
            env.errors.append("CCBRIDGE_RT_CONVERSATION_FIELD must not contain braces")
        return settings
