"""Helpers to parse settings from the environment all at once.

Each deployable has a frozen dataclass with ``from_env(environ)``; these helpers collect
every problem so that one error names every missing or invalid key.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ccbridge.services.runtime.channels import KEEPALIVE_MS
from ccbridge.services.runtime.mesh_tls import INSECURE, MeshTls
from ccbridge.services.runtime.ports import METRICS_PORT_ENV
from ccbridge.services.runtime.tracing import MODES as TRACING_MODES

# Every token and secret the operator chooses is at least this long (a comma-separated
# list, for rotation: each of its parts); secrets issued by others (the Infobip API key,
# the RT token) are taken as they come.
MIN_SECRET_CHARS = 16


class SettingsError(ValueError):
    """One or more settings are missing or invalid; the message names all of them,
    ``problems`` lists them one by one."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr never shows it (safe to log a settings object)."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


class EnvReader:
    """Reads typed values from an environment mapping, collecting errors.

    Call :meth:`done` at the end: it raises one :class:`SettingsError` for everything wrong.
    """

    def __init__(self, environ: Mapping[builtins.str, builtins.str]) -> None:
        self._env = environ
        self.errors: builtins.list[builtins.str] = []

    def str(self, key: builtins.str, default: builtins.str | None = None) -> builtins.str:
        raw = self._env.get(key)
        if raw is None or raw == "":
            if default is None:
                self.errors.append(f"{key} is required")
                return ""
            return default
        return raw

    def optional(self, key: builtins.str) -> builtins.str | None:
        raw = self._env.get(key)
        return raw if raw else None

    def secret(
        self,
        key: builtins.str,
        *,
        required: builtins.bool = True,
        default: builtins.str = "",
        chosen: builtins.bool = False,
        listed: builtins.bool = False,
    ) -> Secret:
        """``chosen``: the operator picks it, so it must be at least
        :data:`MIN_SECRET_CHARS` long (each comma-separated part when ``listed``)."""
        raw = self._env.get(key, "")
        if not raw:
            if required:
                self.errors.append(f"{key} is required (a secret)")
            return Secret(default)
        parts = [part.strip() for part in raw.split(",")] if listed else [raw]
        if chosen and any(len(part) < MIN_SECRET_CHARS for part in parts if part or not listed):
            self.errors.append(
                f"{key}: each secret must be at least {MIN_SECRET_CHARS} characters"
                if listed
                else f"{key} must be at least {MIN_SECRET_CHARS} characters"
            )
        return Secret(raw)

    def secret_list(
        self, key: builtins.str, *, required: builtins.bool = True
    ) -> tuple[Secret, ...]:
        """A comma-separated rotation list of secrets the operator chooses (each at least
        :data:`MIN_SECRET_CHARS` long): the first one signs, any one verifies."""
        raw = self.secret(key, required=required, chosen=True, listed=True).value
        parts = tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
        if raw and not parts:
            self.errors.append(f"{key} holds no secret")
        return parts

    def int(
        self,
        key: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        raw = self._env.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.errors.append(f"{key} must be an integer, got {raw!r}")
            return default
        if minimum is not None and value < minimum:
            self.errors.append(f"{key} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.errors.append(f"{key} must be <= {maximum}, got {value}")
        return value

    def float(
        self, key: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None
    ) -> builtins.float:
        raw = self._env.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            self.errors.append(f"{key} must be a number, got {raw!r}")
            return default
        if minimum is not None and value < minimum:
            self.errors.append(f"{key} must be >= {minimum}, got {value}")
        return value

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._env.get(key)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.errors.append(f"{key} must be true or false, got {raw!r}")
        return default

    def choice(
        self, key: builtins.str, default: builtins.str, choices: builtins.tuple[builtins.str, ...]
    ) -> builtins.str:
        value = self.str(key, default)
        if value not in choices:
            self.errors.append(f"{key} must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def list(
        self, key: builtins.str, default: builtins.tuple[builtins.str, ...] = ()
    ) -> builtins.tuple[builtins.str, ...]:
        raw = self._env.get(key)
        if raw is None or raw.strip() == "":
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def done(self, what: builtins.str) -> None:
        if self.errors:
            raise SettingsError(
                f"invalid {what} settings: " + "; ".join(self.errors), tuple(self.errors)
            )


@dataclass(frozen=True)
class CommonSettings:
    """Settings every process shares."""

    redis_url: str
    log_level: str
    log_format: str
    shutdown_grace_s: float
    # Seconds between "not ready" and the server stopping: load balancers and clients
    # notice the readiness change and send new traffic elsewhere (0 in tests).
    drain_delay_s: float = 1.0
    redis_prefix: str = "ccb"  # every Redis key of every component starts with it
    # Mutual TLS of every gRPC hop (services/runtime/mesh_tls.py). Only settings built
    # directly (tests) default to plaintext; from the environment the paths are required.
    mesh_tls: MeshTls = field(default=INSECURE)
    grpc_reflection: bool = False
    # A plaintext port that serves only the gRPC health service (kubelet's gRPC probes
    # cannot present a client certificate); 0: none.
    grpc_health_port: int = 0
    # HTTP/2 ping interval and answer timeout of every gRPC connection: a frozen peer
    # replica stops receiving calls within about twice this (services/runtime/channels.py).
    # At least 1 s: grpc sends no two pings closer together.
    grpc_keepalive_ms: int = KEEPALIVE_MS
    # CCBRIDGE_TRACING: "off" (the default unless an OTLP endpoint is set) or "otlp"
    # (services/runtime/tracing.py; the OTEL_* variables configure the rest).
    tracing: str = "off"
    # The plaintext HTTP port that serves only GET /metrics (services/runtime/metrics.py),
    # on the component's bind host; 0: none. Off unless set: k8s/base and `ccbridge up`
    # set the ports of services/runtime/ports.py (in-process tests bind none).
    metrics_port: int = 0

    @classmethod
    def read(cls, env: EnvReader, component: str = "") -> CommonSettings:
        """``component``: a gRPC component's name, for its metrics port setting
        (``CCBRIDGE_<COMPONENT>_METRICS_PORT``, services/runtime/ports.py)."""
        metrics_port = 0
        if component in METRICS_PORT_ENV:
            metrics_port = env.int(METRICS_PORT_ENV[component], 0, minimum=0, maximum=65535)
        return cls(
            redis_url=env.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            log_level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=env.choice("LOG_FORMAT", "json", ("json", "console")),
            shutdown_grace_s=env.float("CCBRIDGE_SHUTDOWN_GRACE_S", 5.0, minimum=0.0),
            drain_delay_s=env.float("CCBRIDGE_DRAIN_DELAY_S", 1.0, minimum=0.0),
            redis_prefix=env.str("CCBRIDGE_REDIS_PREFIX", "ccb"),
            mesh_tls=read_mesh_tls(env),
            grpc_reflection=env.bool("CCBRIDGE_GRPC_REFLECTION", False),
            grpc_health_port=env.int("CCBRIDGE_GRPC_HEALTH_PORT", 0, minimum=0, maximum=65535),
            grpc_keepalive_ms=env.int(
                "CCBRIDGE_GRPC_KEEPALIVE_MS", KEEPALIVE_MS, minimum=1000, maximum=3_600_000
            ),
            tracing=read_tracing_mode(env),
            metrics_port=metrics_port,
        )


def read_tracing_mode(env: EnvReader) -> str:
    """``CCBRIDGE_TRACING`` (off|otlp; services/runtime/tracing.py): off unless an OTLP
    endpoint is configured (the SDK reads the ``OTEL_*`` variables itself)."""
    configured = env.optional("OTEL_EXPORTER_OTLP_ENDPOINT") or env.optional(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return env.choice("CCBRIDGE_TRACING", "otlp" if configured else "off", TRACING_MODES)


def read_mesh_tls(env: EnvReader) -> MeshTls:
    """The mesh TLS settings: the three paths, required unless
    ``CCBRIDGE_MESH_INSECURE=true`` (development only)."""
    insecure = env.bool("CCBRIDGE_MESH_INSECURE", False)
    keys = ("CCBRIDGE_TLS_CERT", "CCBRIDGE_TLS_KEY", "CCBRIDGE_TLS_CA")
    values = [env.optional(key) or "" for key in keys]
    if insecure:
        if any(values):
            env.errors.append(
                "CCBRIDGE_MESH_INSECURE=true and CCBRIDGE_TLS_* are both set: choose one"
            )
        return INSECURE
    for key, value in zip(keys, values, strict=True):
        if not value:
            env.errors.append(
                f"{key} is required (mutual TLS between components; "
                "CCBRIDGE_MESH_INSECURE=true turns it off, for development only)"
            )
        elif not os.path.isfile(value):
            env.errors.append(f"{key}: no readable file at {value}")
    cert, key, ca = values
    return MeshTls(cert, key, ca)
