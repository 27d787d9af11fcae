"""Settings of the Session service (environment variables, parsed all at once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.media import MediaProxySettings
from ccbridge.services.runtime.ports import DEFAULT_PORTS, default_addr
from ccbridge.services.runtime.settings import CommonSettings, EnvReader, Secret

DEFAULT_DEDUPE_TTL_S = 7 * 86400
DUE_SHARDS = 8  # schedule shards per lane (spread over a cluster)


@dataclass(frozen=True)
class SessionSettings:
    """Everything the Session process needs; see the settings table in README.md."""

    common: CommonSettings
    bind_host: str
    port: int
    history_addr: str
    routing_addr: str
    connector_addr: str
    infobip_base_url: str
    infobip_api_key: Secret
    infobip_timeout_s: float
    infobip_agent_id: str
    infobip_readback_skew_ms: int
    infobip_readback_delay_ms: int
    agent_name_prefix: str
    lease_ttl_ms: int
    liveness_ttl_ms: int
    liveness_interval_ms: int
    farside_failures_to_open: int
    farside_probe_interval_ms: int
    infobip_rate_per_s: float
    connector_rate_per_s: float
    worker_concurrency: int
    scheduler_poll_ms: int
    batch_per_step: int
    delivery_window: int
    delivery_max_attempts: int
    open_max_attempts: int
    retry_base_ms: int
    retry_max_ms: int
    dedupe_ttl_s: int
    closed_retention_s: int
    failed_retention_s: int
    dead_letter_retention_s: int
    dead_letter_max: int
    parked_ttl_s: int
    inbox_max: int
    due_shards: int
    reconcile_interval_s: float
    reconcile_infobip: bool
    reconcile_margin_s: float
    reconcile_backfill_per_pass: int
    route_back_on_failed: bool
    escalate_wait_ms: int
    workers_enabled: bool
    grpc_timeout_s: float
    media: MediaProxySettings
    redis_wait_replicas: int
    redis_wait_timeout_ms: int

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SessionSettings:
        env = EnvReader(environ)
        settings = cls(
            common=CommonSettings.read(env, "session"),
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            port=env.int(
                "CCBRIDGE_SESSION_PORT", DEFAULT_PORTS["session"], minimum=0, maximum=65535
            ),
            history_addr=env.str("HISTORY_ADDR", default_addr("history")),
            routing_addr=env.str("ROUTING_ADDR", default_addr("routing")),
            connector_addr=env.str("CONNECTOR_ADDR", default_addr("connector")),
            infobip_base_url=env.str("INFOBIP_BASE_URL"),
            infobip_api_key=env.secret("INFOBIP_API_KEY"),
            infobip_timeout_s=env.float("INFOBIP_TIMEOUT_S", 10.0, minimum=0.1),
            infobip_agent_id=env.str("CCBRIDGE_INFOBIP_AGENT_ID", ""),
            infobip_readback_skew_ms=env.int(
                "CCBRIDGE_INFOBIP_READBACK_SKEW_MS", 30000, minimum=0, maximum=3_600_000
            ),
            infobip_readback_delay_ms=env.int(
                "CCBRIDGE_INFOBIP_READBACK_DELAY_MS", 2000, minimum=0, maximum=600_000
            ),
            # Create Message has no author-name field: the agent's name reaches the end
            # user only as text, with this format ("{name}: "), when set.
            agent_name_prefix=env.str("CCBRIDGE_AGENT_NAME_PREFIX", ""),
            lease_ttl_ms=env.int("CCBRIDGE_LEASE_TTL_MS", 15000, minimum=500),
            liveness_ttl_ms=env.int("CCBRIDGE_LIVENESS_TTL_MS", 3000, minimum=200),
            liveness_interval_ms=env.int("CCBRIDGE_LIVENESS_INTERVAL_MS", 1000, minimum=50),
            farside_failures_to_open=env.int("CCBRIDGE_FARSIDE_FAILURES_TO_OPEN", 5, minimum=1),
            farside_probe_interval_ms=env.int(
                "CCBRIDGE_FARSIDE_PROBE_INTERVAL_MS", 1000, minimum=50, maximum=60000
            ),
            infobip_rate_per_s=env.float("CCBRIDGE_INFOBIP_RATE_PER_S", 0.0, minimum=0.0),
            connector_rate_per_s=env.float("CCBRIDGE_CONNECTOR_RATE_PER_S", 0.0, minimum=0.0),
            worker_concurrency=env.int("CCBRIDGE_WORKER_CONCURRENCY", 64, minimum=1),
            scheduler_poll_ms=env.int("CCBRIDGE_SCHEDULER_POLL_MS", 50, minimum=1),
            batch_per_step=env.int("CCBRIDGE_BATCH_PER_STEP", 100, minimum=1),
            delivery_window=env.int("CCBRIDGE_DELIVERY_WINDOW", 32, minimum=1, maximum=1000),
            delivery_max_attempts=env.int("CCBRIDGE_DELIVERY_MAX_ATTEMPTS", 25, minimum=1),
            open_max_attempts=env.int("CCBRIDGE_OPEN_MAX_ATTEMPTS", 10, minimum=1),
            retry_base_ms=env.int("CCBRIDGE_RETRY_BASE_MS", 500, minimum=1),
            retry_max_ms=env.int("CCBRIDGE_RETRY_MAX_MS", 60000, minimum=1),
            dedupe_ttl_s=env.int("CCBRIDGE_DEDUPE_TTL_S", DEFAULT_DEDUPE_TTL_S, minimum=60),
            closed_retention_s=env.int("CCBRIDGE_CLOSED_RETENTION_S", 7 * 86400, minimum=60),
            failed_retention_s=env.int("CCBRIDGE_FAILED_RETENTION_S", 30 * 86400, minimum=60),
            dead_letter_retention_s=env.int(
                "CCBRIDGE_DEAD_LETTER_RETENTION_S", 30 * 86400, minimum=60
            ),
            dead_letter_max=env.int("CCBRIDGE_DEAD_LETTER_MAX", 100_000, minimum=1),
            parked_ttl_s=env.int("CCBRIDGE_PARKED_TTL_S", 600, minimum=1),
            inbox_max=env.int("CCBRIDGE_INBOX_MAX", 10_000, minimum=1),
            due_shards=env.int("CCBRIDGE_DUE_SHARDS", DUE_SHARDS, minimum=1, maximum=1024),
            reconcile_interval_s=env.float("CCBRIDGE_RECONCILE_INTERVAL_S", 60.0, minimum=0.1),
            reconcile_infobip=env.bool("CCBRIDGE_RECONCILE_INFOBIP", True),
            reconcile_margin_s=env.float("CCBRIDGE_RECONCILE_MARGIN_S", 300.0, minimum=0.0),
            reconcile_backfill_per_pass=env.int(
                "CCBRIDGE_RECONCILE_BACKFILL_PER_PASS", 100, minimum=0
            ),
            route_back_on_failed=env.bool("CCBRIDGE_ROUTE_BACK_ON_FAILED", False),
            escalate_wait_ms=env.int("CCBRIDGE_ESCALATE_WAIT_MS", 0, minimum=0, maximum=60000),
            workers_enabled=env.bool("CCBRIDGE_WORKERS_ENABLED", True),
            grpc_timeout_s=env.float("CCBRIDGE_GRPC_TIMEOUT_S", 5.0, minimum=0.1),
            media=MediaProxySettings.read(env, signer=True),
            redis_wait_replicas=env.int("CCBRIDGE_REDIS_WAIT_REPLICAS", 0, minimum=0, maximum=16),
            # Below the Redis client's 5 s socket timeout, which would cut WAIT short.
            redis_wait_timeout_ms=env.int(
                "CCBRIDGE_REDIS_WAIT_TIMEOUT_MS", 1000, minimum=1, maximum=4000
            ),
        )
        if settings.liveness_interval_ms * 2 > settings.liveness_ttl_ms:
            env.errors.append(
                "CCBRIDGE_LIVENESS_INTERVAL_MS must be at most half of CCBRIDGE_LIVENESS_TTL_MS"
            )
        env.done("session")
        return settings
