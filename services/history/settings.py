"""Settings of the history service, read from the environment all at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.ports import DEFAULT_PORTS
from ccbridge.services.runtime.settings import CommonSettings, EnvReader, Secret

MAX_HISTORY_LIMIT = 100_000


@dataclass(frozen=True)
class HistorySettings:
    """Everything the history service reads from the environment.

    ``history_limit`` is the default cap of GetTranscript (CCBRIDGE_HISTORY_LIMIT);
    ``infobip_max_retries`` bounds the client's own retries of reads.
    """

    common: CommonSettings
    bind_host: str
    port: int
    infobip_base_url: str
    infobip_api_key: Secret
    infobip_timeout_s: float
    infobip_max_retries: int
    history_limit: int

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HistorySettings:
        env = EnvReader(environ)
        common = CommonSettings.read(env, "history")
        base_url = env.str("INFOBIP_BASE_URL")
        if base_url and not base_url.startswith(("https://", "http://")):
            env.errors.append(
                f"INFOBIP_BASE_URL must start with https:// or http://, got {base_url!r}"
            )
        settings = cls(
            common=common,
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            port=env.int(
                "CCBRIDGE_HISTORY_PORT", DEFAULT_PORTS["history"], minimum=0, maximum=65535
            ),
            infobip_base_url=base_url.rstrip("/"),
            infobip_api_key=env.secret("INFOBIP_API_KEY"),
            infobip_timeout_s=env.float("INFOBIP_TIMEOUT_S", 10.0, minimum=0.1),
            infobip_max_retries=env.int("INFOBIP_MAX_RETRIES", 3, minimum=0, maximum=10),
            history_limit=env.int(
                "CCBRIDGE_HISTORY_LIMIT", 1000, minimum=1, maximum=MAX_HISTORY_LIMIT
            ),
        )
        env.done("history")
        return settings
