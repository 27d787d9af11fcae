"""Settings of the Genesys Cloud Open Messaging (``genesys``) connector
(docs/connectors/genesys.md).

Kept apart from the adapter so the connector's settings can parse them without loading
the adapter's HTTP code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.settings import EnvReader, Secret

# Genesys Cloud's regions are host names such as mypurecloud.com, mypurecloud.de,
# euw2.pure.cloud, usw2.pure.cloud: the API is https://api.<region>, the OAuth server
# https://login.<region> (developer.genesys.cloud, "Platform API" regions).
_REGION = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*\.[a-z]{2,}$")


@dataclass(frozen=True)
class GenesysSettings:
    """Where the Genesys Cloud organization is and how the adapter talks to it."""

    region: str  # e.g. mypurecloud.com, mypurecloud.de, euw2.pure.cloud
    api_url: str  # https://api.<region>, or the base URL override (the simulator)
    login_url: str  # https://login.<region>, or the base URL override
    client_id: str  # OAuth client (client credentials grant)
    client_secret: Secret
    integration_id: str  # the Open Messaging integration's id
    webhook_secrets: tuple[Secret, ...]  # outbound notification webhook secret token(s)
    timeout_s: float  # per HTTP call
    transcript_chunk_chars: int  # most characters of one transcript message
    token_margin_s: float  # the access token is renewed this long before it expires
    dedupe_ttl_s: int  # how long a posted customer message id is remembered

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GenesysSettings:
        """Reads the settings alone (raises SettingsError naming every bad key)."""
        env = EnvReader(environ)
        settings = cls.read(env)
        env.done("genesys connector")
        return settings

    @classmethod
    def read(cls, env: EnvReader) -> GenesysSettings:
        """Reads the settings, adding every problem to ``env``."""
        region = env.str("CCBRIDGE_GENESYS_REGION", "mypurecloud.com").strip().lower()
        if not _REGION.match(region):
            env.errors.append(
                f"CCBRIDGE_GENESYS_REGION must be a Genesys Cloud region host such as "
                f"mypurecloud.com or euw2.pure.cloud, got {region!r}"
            )
        base = (env.optional("CCBRIDGE_GENESYS_BASE_URL") or "").rstrip("/")
        if base and not re.match(r"^https?://[^/\s]+", base):
            env.errors.append(f"CCBRIDGE_GENESYS_BASE_URL must be an http(s) URL, got {base!r}")
        integration_id = env.str("CCBRIDGE_GENESYS_INTEGRATION_ID")
        if integration_id and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", integration_id):
            env.errors.append("CCBRIDGE_GENESYS_INTEGRATION_ID must be the integration's id")
        return cls(
            region=region,
            api_url=base or f"https://api.{region}",
            login_url=base or f"https://login.{region}",
            client_id=env.str("CCBRIDGE_GENESYS_CLIENT_ID"),
            client_secret=env.secret("CCBRIDGE_GENESYS_CLIENT_SECRET"),
            integration_id=integration_id,
            webhook_secrets=env.secret_list("CCBRIDGE_GENESYS_WEBHOOK_SECRET"),
            timeout_s=env.float("CCBRIDGE_GENESYS_TIMEOUT_S", 10.0, minimum=0.1),
            transcript_chunk_chars=env.int(
                "CCBRIDGE_GENESYS_TRANSCRIPT_CHUNK_CHARS", 4000, minimum=200, maximum=100_000
            ),
            token_margin_s=env.float("CCBRIDGE_GENESYS_TOKEN_MARGIN_S", 300.0, minimum=0.0),
            dedupe_ttl_s=env.int(
                "CCBRIDGE_GENESYS_DEDUPE_TTL_S", 7 * 24 * 3600, minimum=60, maximum=90 * 24 * 3600
            ),
        )
