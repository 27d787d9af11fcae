"""gRPC RoutingService: Route and Explain over the rules in force."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from ccbridge.common.v1 import common_pb2
from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.routing.rules import Decision, Facts
from ccbridge.services.routing.store import RulesStore


def facts_from_context(context: common_pb2.ConversationContext) -> Facts:
    """The facts routing looks at; the language falls back to metadata language/lang."""
    metadata = dict(context.metadata)
    language = context.language or metadata.get("language", "") or metadata.get("lang", "")
    return Facts(
        channel=context.channel, tags=tuple(context.tags), metadata=metadata, language=language
    )


def decision_to_proto(decision: Decision) -> common_pb2.RoutingDecision:
    route = decision.route
    return common_pb2.RoutingDecision(
        connector=route.connector,
        queue=route.queue,
        priority=route.priority,
        skills=list(route.skills),
        rule=decision.rule,
        rejection=decision.rejection,
    )


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """Answers from the :class:`RulesStore` (which reloads the file when it changed)."""

    def __init__(
        self, store: RulesStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.clock = clock  # opening hours are judged at this instant

    async def Route(
        self,
        request: routing_pb2.RouteRequest,
        context: grpc.aio.ServicerContext[routing_pb2.RouteRequest, routing_pb2.RouteResponse],
    ) -> routing_pb2.RouteResponse:
        decision = self.store.rules.route(facts_from_context(request.context), self.clock())
        return routing_pb2.RouteResponse(decision=decision_to_proto(decision))

    async def Explain(
        self,
        request: routing_pb2.ExplainRequest,
        context: grpc.aio.ServicerContext[routing_pb2.ExplainRequest, routing_pb2.ExplainResponse],
    ) -> routing_pb2.ExplainResponse:
        rules = self.store.rules
        decision, evaluations = rules.explain(facts_from_context(request.context), self.clock())
        return routing_pb2.ExplainResponse(
            decision=decision_to_proto(decision),
            evaluations=[
                routing_pb2.RuleEvaluation(rule=e.rule, matched=e.matched, reasons=list(e.reasons))
                for e in evaluations
            ],
            rules_source=rules.source,
        )
