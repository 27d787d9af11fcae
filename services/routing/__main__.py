"""Entry point of the routing service: ``python -m ccbridge.services.routing``.

What the service is made of; the runtime (services/runtime/component.py) starts and stops
it. A missing or invalid rules file ends the process at start-up (exit 2).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.routing.rules import RulesError
from ccbridge.services.routing.servicer import RoutingServicer
from ccbridge.services.routing.settings import RoutingSettings
from ccbridge.services.routing.store import RulesStore
from ccbridge.services.runtime.component import (
    Background,
    Component,
    Running,
    Servicer,
    run_service,
)

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
RunningRouting = Running[RulesStore]


async def build(settings: RoutingSettings, metrics: CollectorRegistry) -> Component[RulesStore]:
    """Loads the rules (fail fast on a missing or invalid file) and watches the file."""
    store = RulesStore(
        settings.rules_path,
        default_connector=settings.default_connector,
        reload_s=settings.reload_s,
    )
    store.load_initial()

    async def ready() -> bool:
        return store.loaded

    return Component(
        name="routing",
        servicers=[
            Servicer(
                routing_pb2_grpc.add_RoutingServiceServicer_to_server,
                RoutingServicer(store),
                SERVICE_NAME,
            )
        ],
        metrics=metrics,
        parts=store,
        ready=ready,
        background=[Background("rules watch", store.start, store.stop)],
    )


def main() -> None:
    run_service("routing", RoutingSettings.from_env, build, fatal=(RulesError,))


if __name__ == "__main__":
    main()
