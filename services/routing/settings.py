"""Settings of the routing service (read once from the environment, all errors at once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccbridge.services.runtime.ports import DEFAULT_PORTS
from ccbridge.services.runtime.settings import CommonSettings, EnvReader


@dataclass(frozen=True)
class RoutingSettings:
    """Everything the routing service reads from the environment."""

    common: CommonSettings
    bind_host: str
    port: int
    # Path of the YAML rules file; None = only the default route exists.
    rules_path: str | None
    # How often (seconds) the file's mtime/size/inode are checked for changes.
    reload_s: float
    # Connector of the default route when the file has no `default` (or no file).
    default_connector: str

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RoutingSettings:
        env = EnvReader(environ)
        settings = cls(
            common=CommonSettings.read(env, "routing"),
            bind_host=env.str("CCBRIDGE_BIND_HOST", "127.0.0.1"),
            port=env.int(
                "CCBRIDGE_ROUTING_PORT", DEFAULT_PORTS["routing"], minimum=0, maximum=65535
            ),
            rules_path=env.optional("CCBRIDGE_ROUTING_RULES"),
            reload_s=env.float("CCBRIDGE_ROUTING_RELOAD_S", 2.0, minimum=0.0),
            default_connector=env.str("CCBRIDGE_ROUTING_DEFAULT_CONNECTOR", "webhook").strip(),
        )
        env.done("routing")
        return settings
