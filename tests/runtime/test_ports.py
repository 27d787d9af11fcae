"""The one ports table (services/runtime/ports.py) agrees with what the settings parse and
with the literal numbers the README and the Dockerfile show (the Kubernetes manifests are
checked by scripts/check_k8s.py, which imports the same table)."""

from __future__ import annotations

import re
from pathlib import Path

from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.connector.settings import ConnectorSettings
from ccbridge.services.history.settings import HistorySettings
from ccbridge.services.routing.settings import RoutingSettings
from ccbridge.services.runtime.ports import (
    ADDR_ENV,
    DEFAULT_PORTS,
    METRICS_PORT_ENV,
    METRICS_PORTS,
    PORT_ENV,
    default_addr,
)
from ccbridge.services.session.settings import SessionSettings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_default_to_the_table() -> None:
    gateway = GatewaySettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_ESCALATION_TOKEN": "t" * 32,
            "CCBRIDGE_WEBHOOK_TOKEN": "w" * 32,
        }
    )
    session = SessionSettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", "INFOBIP_BASE_URL": "http://x", "INFOBIP_API_KEY": "k"}
    )
    history = HistorySettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", "INFOBIP_BASE_URL": "http://x", "INFOBIP_API_KEY": "k"}
    )
    routing = RoutingSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
        }
    )
    connector = ConnectorSettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "CCBRIDGE_WEBHOOK_CONNECTOR_URL": "http://x",
            "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "s" * 16,
        }
    )
    assert gateway.http_port == DEFAULT_PORTS["gateway"]
    assert (session.port, history.port, routing.port, connector.port) == (
        DEFAULT_PORTS["session"],
        DEFAULT_PORTS["history"],
        DEFAULT_PORTS["routing"],
        DEFAULT_PORTS["connector"],
    )
    assert (session.history_addr, session.routing_addr, session.connector_addr) == (
        default_addr("history"),
        default_addr("routing"),
        default_addr("connector"),
    )
    assert gateway.session_addr == connector.session_addr == default_addr("session")
    # No metrics listener unless its setting names a port (k8s/base and `ccbridge up`).
    components = (session, history, routing, connector)
    assert [s.common.metrics_port for s in components] == [0, 0, 0, 0]
    routing_on = RoutingSettings.from_env(
        {"CCBRIDGE_MESH_INSECURE": "true", METRICS_PORT_ENV["routing"]: "9103"}
    )
    assert routing_on.common.metrics_port == 9103


def test_readme_and_dockerfile_show_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, var in PORT_ENV.items():
        assert re.search(rf"\| `{var}` \| `{DEFAULT_PORTS[name]}` \|", readme), var
    for name, var in ADDR_ENV.items():
        assert re.search(rf"\| `{var}` \| `{default_addr(name)}` \|", readme), var
    for name, var in METRICS_PORT_ENV.items():
        assert re.search(rf"\| `{var}` \| `0` \(none; `{METRICS_PORTS[name]}` in", readme), var
    expose = re.search(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert expose is not None
    assert sorted(int(p) for p in expose.group(1).split()) == sorted(
        [*DEFAULT_PORTS.values(), *METRICS_PORTS.values()]
    )


def test_the_operators_tools_find_a_peer_as_ccbridge_up_places_it() -> None:
    from ccbridge.services.runtime.ports import peer_addr

    assert peer_addr("session", {}) == default_addr("session")
    assert peer_addr("session", {"CCBRIDGE_SESSION_PORT": "6001"}) == "127.0.0.1:6001"
    both = {"CCBRIDGE_SESSION_PORT": "6001", "SESSION_ADDR": "session.ns:50051"}
    assert peer_addr("session", both) == "session.ns:50051"
