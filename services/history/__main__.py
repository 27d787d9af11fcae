"""Entry point of the history service: ``python -m ccbridge.services.history``.

What the service is made of; the runtime (services/runtime/component.py) starts and stops
it. Readiness is always true: the service needs no Redis, and an Infobip outage is
reported per call (UNAVAILABLE), not by draining.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ccbridge.history.v1 import history_pb2, history_pb2_grpc
from ccbridge.services.history.servicer import HistoryServicer
from ccbridge.services.history.settings import HistorySettings
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.component import Component, Running, Servicer, run_service

SERVICE_NAME = history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name
RunningHistory = Running[HistoryServicer]


async def build(
    settings: HistorySettings, metrics: CollectorRegistry
) -> Component[HistoryServicer]:
    """Creates the Infobip client and the servicer."""
    client = InfobipClient(
        settings.infobip_base_url,
        settings.infobip_api_key,
        timeout_s=settings.infobip_timeout_s,
        max_retries=settings.infobip_max_retries,
    )
    servicer = HistoryServicer(client, default_limit=settings.history_limit)
    return Component(
        name="history",
        servicers=[
            Servicer(history_pb2_grpc.add_HistoryServiceServicer_to_server, servicer, SERVICE_NAME)
        ],
        metrics=metrics,
        parts=servicer,
        closers=[client.aclose],
    )


def main() -> None:
    run_service("history", HistorySettings.from_env, build)


if __name__ == "__main__":
    main()
