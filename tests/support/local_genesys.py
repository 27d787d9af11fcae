"""The Genesys Cloud simulator next to a running mesh (the connector conformance suite's
``genesys`` row): its settings, shared by the simulator and the connector, and its start."""

from __future__ import annotations

import secrets

from tests.support.mesh import Mesh

GENESYS_ENV = {
    "CCBRIDGE_GENESYS_CLIENT_ID": "conformance-client",
    "CCBRIDGE_GENESYS_CLIENT_SECRET": secrets.token_urlsafe(24),
    "CCBRIDGE_GENESYS_INTEGRATION_ID": "7d5c3a4e-0b1f-4c52-9a3e-5f2b8d9c1e20",
    "CCBRIDGE_GENESYS_WEBHOOK_SECRET": secrets.token_urlsafe(24),
}


def start_genesys_sim(mesh: Mesh, port: int) -> str:
    """Starts the simulator (as process ``genesys-sim`` of the mesh's group, so it stops
    with the mesh) on ``port``, pointed at the gateway; returns its base URL."""
    gateway = f"http://127.0.0.1:{mesh.ports['gateway']}"
    mesh.group.start(
        "genesys-sim",
        mesh.env,
        port,
        args=["--port", str(port), "--bridge-url", f"{gateway}/webhooks/ccaas/genesys"],
        module="ccbridge.simulators.genesys",
    )
    mesh.group.wait_ready("genesys-sim", "http:/_sim/status", timeout_s=60.0)
    return f"http://127.0.0.1:{port}"
