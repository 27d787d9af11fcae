"""Entry point of the Session service (`ccbridge serve session`,
`python -m ccbridge.services.session`): what the service is made of; the runtime
(services/runtime/component.py) starts and stops it."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from ccbridge.connector.v1 import connector_pb2_grpc
from ccbridge.history.v1 import history_pb2_grpc
from ccbridge.routing.v1 import routing_pb2_grpc
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.component import (
    Background,
    Component,
    Running,
    Servicer,
    run_service,
)
from ccbridge.services.runtime.lease import Liveness
from ccbridge.services.runtime.redis import create_redis, redis_ready
from ccbridge.services.session.metrics import SessionMetrics
from ccbridge.services.session.servicer import SessionServicer
from ccbridge.services.session.settings import SessionSettings
from ccbridge.services.session.store import ReplicaWait, Retention, SessionStore
from ccbridge.services.session.typing_relay import TypingRelay
from ccbridge.services.session.worker import ConversationWorker, Peers
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

SERVICE_NAME = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


@dataclass(frozen=True)
class SessionParts:
    """The Session service's own objects (tests reach the store and servicer here)."""

    store: SessionStore
    servicer: SessionServicer
    worker: ConversationWorker | None


RunningSession = Running[SessionParts]


async def build(settings: SessionSettings, metrics: CollectorRegistry) -> Component[SessionParts]:
    """Creates the Redis client, peer channels, Infobip client, worker and servicer."""
    redis = create_redis(settings.common.redis_url)
    session_metrics = SessionMetrics(metrics)
    liveness = Liveness(
        redis,
        settings.common.redis_prefix,
        ttl_ms=settings.liveness_ttl_ms,
        interval_ms=settings.liveness_interval_ms,
    )
    store = SessionStore(
        redis,
        prefix=settings.common.redis_prefix,
        dedupe_ttl_s=settings.dedupe_ttl_s,
        closed_retention_s=settings.closed_retention_s,
        retention=Retention(
            failed_s=settings.failed_retention_s,
            dead_letter_s=settings.dead_letter_retention_s,
            dead_letter_max=settings.dead_letter_max,
            parked_s=settings.parked_ttl_s,
        ),
        inbox_max=settings.inbox_max,
        due_shards=settings.due_shards,
        replica_wait=(
            ReplicaWait(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
            if settings.redis_wait_replicas
            else None
        ),
        liveness=liveness if settings.workers_enabled else None,
        on_dead_letter=session_metrics.dead_letter,
    )
    tls, keepalive_ms = settings.common.mesh_tls, settings.common.grpc_keepalive_ms
    history_ch = create_channel(settings.history_addr, tls, "history", keepalive_ms=keepalive_ms)
    routing_ch = create_channel(settings.routing_addr, tls, "routing", keepalive_ms=keepalive_ms)
    connector_ch = create_channel(
        settings.connector_addr, tls, "connector", keepalive_ms=keepalive_ms
    )
    infobip = InfobipClient(
        settings.infobip_base_url,
        settings.infobip_api_key,
        timeout_s=settings.infobip_timeout_s,
    )
    peers = Peers(
        history_pb2_grpc.HistoryServiceStub(history_ch),
        routing_pb2_grpc.RoutingServiceStub(routing_ch),
        connector_pb2_grpc.ConnectorServiceStub(connector_ch),
        infobip,
    )
    worker = (
        ConversationWorker(store, peers, settings, session_metrics)
        if settings.workers_enabled
        else None
    )
    typing = TypingRelay(store, infobip, peers.connector)
    servicer = SessionServicer(
        store, worker, escalate_wait_ms=settings.escalate_wait_ms, typing=typing
    )

    background: list[Background] = []
    if worker is not None:
        grace_s = settings.common.shutdown_grace_s

        async def stop_worker() -> None:
            await worker.stop(grace_s)

        background.append(Background("delivery worker", worker.start, stop_worker))
    return Component(
        name="session",
        servicers=[
            Servicer(session_pb2_grpc.add_SessionServiceServicer_to_server, servicer, SERVICE_NAME)
        ],
        metrics=metrics,
        parts=SessionParts(store, servicer, worker),
        ready=redis_ready(redis),
        scrape=[lambda: session_metrics.refresh(store)],
        background=background,
        drain=[servicer.start_draining],
        closers=[
            redis.aclose,
            store.raw.aclose,
            history_ch.close,
            routing_ch.close,
            connector_ch.close,
            typing.aclose,
            infobip.aclose,
        ],
    )


def main() -> None:
    run_service("session", SessionSettings.from_env, build)


if __name__ == "__main__":
    main()
