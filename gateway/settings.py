"""Settings of the gateway (the HTTP edge), parsed from the environment all at once.

Secrets (escalation token, webhook path token, Infobip webhook HMAC secrets and Basic
password) are wrapped in :class:`Secret` so that a settings object is safe to log.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.infobip.webhook_auth import HmacScheme
from ccbridge.services.runtime.media import MediaProxySettings
from ccbridge.services.runtime.mesh_tls import INSECURE, MeshTls
from ccbridge.services.runtime.ports import DEFAULT_PORTS, default_addr
from ccbridge.services.runtime.settings import CommonSettings, EnvReader, Secret
from ccbridge.services.session.settings import DEFAULT_DEDUPE_TTL_S

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Well above any webhook retry schedule, well below the dedupe retention (7 days): a
# replayed event is either still remembered by dedupe or refused as too old.
DEFAULT_EVENT_MAX_AGE_S = 86400
# The operator console's own listener (gateway/console.py), loopback unless told.
DEFAULT_ADMIN_PORT = 8001


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console (gateway/console.py): on only when ``CCBRIDGE_ADMIN_TOKEN``
    is set. It listens on its own port, never the webhook port, and calls Session and
    Routing as the mesh identity ``operator`` (``tls``: the operator's certificate and
    key with the gateway's mesh CA)."""

    token: Secret
    port: int
    bind_host: str
    routing_addr: str
    tls: MeshTls
    cookie_secure: bool

    @classmethod
    def read(cls, env: EnvReader, http_port: int, mesh: MeshTls) -> ConsoleSettings | None:
        token = env.secret("CCBRIDGE_ADMIN_TOKEN", required=False, chosen=True)
        port = env.int("CCBRIDGE_ADMIN_PORT", DEFAULT_ADMIN_PORT, minimum=0, maximum=65535)
        bind_host = env.str("CCBRIDGE_ADMIN_BIND_HOST", "127.0.0.1")
        cert = env.optional("CCBRIDGE_ADMIN_TLS_CERT") or ""
        key = env.optional("CCBRIDGE_ADMIN_TLS_KEY") or ""
        cookie_secure = env.bool("CCBRIDGE_ADMIN_COOKIE_SECURE", True)
        if not token:
            if cert or key or env.optional("CCBRIDGE_ADMIN_PORT"):
                env.errors.append(
                    "CCBRIDGE_ADMIN_PORT/CCBRIDGE_ADMIN_TLS_* are set but CCBRIDGE_ADMIN_TOKEN "
                    "is not: the console is on only with its token"
                )
            return None
        if port and port == http_port:
            env.errors.append(
                f"CCBRIDGE_ADMIN_PORT ({port}) must differ from CCBRIDGE_HTTP_PORT: the console "
                "never shares the public webhook port"
            )
        tls = INSECURE
        if not mesh.insecure:
            for name, value in (("CCBRIDGE_ADMIN_TLS_CERT", cert), ("CCBRIDGE_ADMIN_TLS_KEY", key)):
                if not value:
                    env.errors.append(
                        f"{name} is required with CCBRIDGE_ADMIN_TOKEN (the console calls "
                        "Session and Routing with the operator's mesh certificate)"
                    )
                elif not os.path.isfile(value):
                    env.errors.append(f"{name}: no readable file at {value}")
            tls = MeshTls(cert, key, mesh.ca)
        elif cert or key:
            env.errors.append(
                "CCBRIDGE_MESH_INSECURE=true and CCBRIDGE_ADMIN_TLS_* are both set: choose one"
            )
        return cls(
            token=token,
            port=port,
            bind_host=bind_host,
            routing_addr=env.str("ROUTING_ADDR", default_addr("routing")),
            tls=tls,
            cookie_secure=cookie_secure,
        )


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway reads from the environment.

    ``infobip_webhook_secrets`` holds one or more HMAC secrets (comma-separated in
    ``INFOBIP_WEBHOOK_SECRET``) so a secret can be rotated without downtime.
    """

    escalation_token: Secret
    webhook_token: Secret
    infobip_webhook_secrets: tuple[Secret, ...]
    # The webhook connector's secret(s), when the gateway is given them: CCaaS webhooks to
    # /webhooks/ccaas/webhook are then verified here, before anything is forwarded.
    webhook_connector_secrets: tuple[Secret, ...]
    infobip_basic_user: Secret
    infobip_basic_password: Secret
    infobip_allowed_ips: tuple[IPNetwork, ...]
    infobip_hmac: HmacScheme
    event_max_age_s: int
    dedupe_ttl_s: int
    max_body_bytes: int
    body_timeout_s: float
    max_concurrent_requests: int
    grpc_timeout_s: float
    session_addr: str
    connector_addr: str
    http_port: int
    bind_host: str
    forwarded_allow_ips: str
    # The media proxy (GET /media/{token}) and the Infobip account it fetches from.
    media: MediaProxySettings
    media_max_streams: int
    infobip_base_url: str
    infobip_api_key: Secret
    infobip_timeout_s: float
    common: CommonSettings
    # The operator console on its own listener; None: off.
    console: ConsoleSettings | None = None

    @property
    def events_hmac_enabled(self) -> bool:
        return bool(self.infobip_webhook_secrets)

    @property
    def events_basic_enabled(self) -> bool:
        return bool(self.infobip_basic_user) and bool(self.infobip_basic_password)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Parses every key; raises one ``SettingsError`` naming every bad one."""
        env = EnvReader(environ)
        escalation_token = env.secret("CCBRIDGE_ESCALATION_TOKEN", chosen=True)
        # A comma-separated list lets a rotation accept the old and the new token.
        webhook_token = env.secret("CCBRIDGE_WEBHOOK_TOKEN", chosen=True, listed=True)
        if "/" in webhook_token.value:
            env.errors.append("CCBRIDGE_WEBHOOK_TOKEN must not contain '/'")
        secrets = env.secret_list("INFOBIP_WEBHOOK_SECRET", required=False)
        basic_user = env.secret("INFOBIP_WEBHOOK_BASIC_USER", required=False)
        basic_password = env.secret("INFOBIP_WEBHOOK_BASIC_PASSWORD", required=False, chosen=True)
        if bool(basic_user) != bool(basic_password):
            env.errors.append(
                "INFOBIP_WEBHOOK_BASIC_USER and INFOBIP_WEBHOOK_BASIC_PASSWORD must be set together"
            )
        networks: list[IPNetwork] = []
        for item in env.list("CCBRIDGE_INFOBIP_ALLOWED_IPS"):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                env.errors.append(f"CCBRIDGE_INFOBIP_ALLOWED_IPS: {item!r} is not an IP or CIDR")
        event_max_age_s = env.int(
            "CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S", DEFAULT_EVENT_MAX_AGE_S, minimum=60
        )
        # Session's setting, read here too (one config for the mesh) to check the window.
        dedupe_ttl_s = env.int("CCBRIDGE_DEDUPE_TTL_S", DEFAULT_DEDUPE_TTL_S, minimum=60)
        if event_max_age_s >= dedupe_ttl_s:
            env.errors.append(
                f"CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S ({event_max_age_s}) must be below "
                f"CCBRIDGE_DEDUPE_TTL_S ({dedupe_ttl_s}): an older replay would be "
                "neither refused nor recognised as a duplicate"
            )
        connector_secrets = env.secret_list("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET", required=False)
        media = MediaProxySettings.read(env, signer=False)
        common = CommonSettings.read(env)
        http_port = env.int(
            "CCBRIDGE_HTTP_PORT", DEFAULT_PORTS["gateway"], minimum=0, maximum=65535
        )
        # Only the media proxy talks to Infobip from here.
        infobip_base_url = env.str("INFOBIP_BASE_URL", None if media.enabled else "")
        infobip_api_key = env.secret("INFOBIP_API_KEY", required=media.enabled)
        settings = cls(
            escalation_token=escalation_token,
            webhook_token=webhook_token,
            infobip_webhook_secrets=secrets,
            webhook_connector_secrets=connector_secrets,
            infobip_basic_user=basic_user,
            infobip_basic_password=basic_password,
            infobip_allowed_ips=tuple(networks),
            infobip_hmac=HmacScheme.read(env),
            event_max_age_s=event_max_age_s,
            dedupe_ttl_s=dedupe_ttl_s,
            max_body_bytes=env.int(
                "CCBRIDGE_MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
                minimum=1024,
                maximum=64 * 1024 * 1024,
            ),
            body_timeout_s=env.float("CCBRIDGE_BODY_TIMEOUT_S", 10.0, minimum=0.1),
            max_concurrent_requests=env.int(
                "CCBRIDGE_MAX_CONCURRENT_REQUESTS", 256, minimum=1, maximum=100_000
            ),
            grpc_timeout_s=env.float("CCBRIDGE_GRPC_TIMEOUT_S", 5.0, minimum=0.1),
            session_addr=env.str("SESSION_ADDR", default_addr("session")),
            connector_addr=env.str("CONNECTOR_ADDR", default_addr("connector")),
            http_port=http_port,
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            forwarded_allow_ips=env.str("FORWARDED_ALLOW_IPS", ""),
            media=media,
            media_max_streams=env.int("CCBRIDGE_MEDIA_MAX_STREAMS", 32, minimum=1, maximum=10_000),
            infobip_base_url=infobip_base_url,
            infobip_api_key=infobip_api_key,
            infobip_timeout_s=env.float("INFOBIP_TIMEOUT_S", 10.0, minimum=0.1),
            common=common,
            console=ConsoleSettings.read(env, http_port, common.mesh_tls),
        )
        env.done("gateway")
        return settings
