"""The one table of default ports and peer-address settings of every component.

Settings, the local supervisor (``ccbridge up``), the CLI and the deployment checks import
it; the Kubernetes manifests, the Dockerfile and the docs keep literal numbers, and
``scripts/check_k8s.py`` (run by tests/k8s) fails when the manifests disagree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

GRPC_PORTS: Mapping[str, int] = MappingProxyType(
    {"session": 50051, "history": 50052, "routing": 50053, "connector": 50054}
)
HTTP_PORTS: Mapping[str, int] = MappingProxyType({"gateway": 8000})
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({**HTTP_PORTS, **GRPC_PORTS})

# The setting that overrides each component's listen port.
PORT_ENV: Mapping[str, str] = MappingProxyType(
    {
        "gateway": "CCBRIDGE_HTTP_PORT",
        "session": "CCBRIDGE_SESSION_PORT",
        "history": "CCBRIDGE_HISTORY_PORT",
        "routing": "CCBRIDGE_ROUTING_PORT",
        "connector": "CCBRIDGE_CONNECTOR_PORT",
    }
)
# The setting through which a peer finds each gRPC service.
ADDR_ENV: Mapping[str, str] = MappingProxyType(
    {
        "session": "SESSION_ADDR",
        "history": "HISTORY_ADDR",
        "routing": "ROUTING_ADDR",
        "connector": "CONNECTOR_ADDR",
    }
)


# The plaintext HTTP listener of each gRPC component that serves only ``GET /metrics``
# (services/runtime/metrics.py); the gateway serves /metrics on its HTTP port. The
# setting defaults to 0 (none); k8s/base/settings.env and ``ccbridge up`` use these.
METRICS_PORTS: Mapping[str, int] = MappingProxyType(
    {"session": 9101, "history": 9102, "routing": 9103, "connector": 9104}
)
# The setting of each one (0, the default: no metrics listener).
METRICS_PORT_ENV: Mapping[str, str] = MappingProxyType(
    {
        "session": "CCBRIDGE_SESSION_METRICS_PORT",
        "history": "CCBRIDGE_HISTORY_METRICS_PORT",
        "routing": "CCBRIDGE_ROUTING_METRICS_PORT",
        "connector": "CCBRIDGE_CONNECTOR_METRICS_PORT",
    }
)


def default_addr(component: str) -> str:
    """The loopback address a peer dials when ``<PEER>_ADDR`` is not set."""
    return f"127.0.0.1:{DEFAULT_PORTS[component]}"


def peer_addr(component: str, environ: Mapping[str, str]) -> str:
    """The address the operator's tools dial for ``component``, from the same settings
    ``ccbridge up`` reads: ``<PEER>_ADDR`` when set, else loopback on the component's
    ``CCBRIDGE_<COMPONENT>_PORT``, else its default port."""
    explicit = environ.get(ADDR_ENV.get(component, ""), "").strip()
    if explicit:
        return explicit
    port = environ.get(PORT_ENV[component], "").strip()
    return f"127.0.0.1:{port}" if port.isdigit() else default_addr(component)
