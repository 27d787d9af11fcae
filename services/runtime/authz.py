"""Who may call what: the one table of the mesh's per-caller authorization.

The caller is the mesh identity of its client certificate (services/runtime/mesh_tls.py).
Each component may call only the RPCs its code calls; ``operator`` (the ``ccbridge`` CLI's
admin commands, an operator's own certificate) the administrative ones. An RPC missing
from the table is refused to everyone (a new RPC is closed until it is listed here;
tests/runtime/test_authz.py fails for an RPC of a service descriptor that is missing).
docs/security.md shows the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

GATEWAY, SESSION, HISTORY, ROUTING, CONNECTOR, OPERATOR = (
    "gateway",
    "session",
    "history",
    "routing",
    "connector",
    "operator",
)
HEALTH_SERVICE = "grpc.health.v1.Health"
_REFLECTION_PREFIX = "grpc.reflection."

# full service name → RPC → the identities that may call it.
RPC_CALLERS: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "ccbridge.session.v1.SessionService": {
            "Escalate": frozenset({GATEWAY, OPERATOR}),
            "Ingest": frozenset({GATEWAY}),
            "IngestStream": frozenset({GATEWAY}),
            "ReportCaseEvents": frozenset({CONNECTOR}),
            "GetHandover": frozenset({GATEWAY, OPERATOR}),
            "ListHandovers": frozenset({OPERATOR}),
            "CloseHandover": frozenset({GATEWAY, OPERATOR}),
            "SendAgentMessage": frozenset({OPERATOR}),
            "RetryHandover": frozenset({OPERATOR}),
            "ListDeadLetters": frozenset({OPERATOR}),
            "ReplayDeadLetter": frozenset({OPERATOR}),
            "DiscardDeadLetter": frozenset({OPERATOR}),
            "GetTimeline": frozenset({OPERATOR}),
            "EraseData": frozenset({OPERATOR}),
            "ReportEndUserTyping": frozenset({GATEWAY}),
        },
        "ccbridge.history.v1.HistoryService": {
            "GetTranscript": frozenset({SESSION}),
            "AnnotateConversation": frozenset({SESSION}),
        },
        "ccbridge.routing.v1.RoutingService": {
            "Route": frozenset({SESSION}),
            "Explain": frozenset({OPERATOR}),
        },
        "ccbridge.connector.v1.ConnectorService": {
            "OpenCase": frozenset({SESSION}),
            "PostCustomerMessage": frozenset({SESSION}),
            "PostCustomerMessages": frozenset({SESSION}),
            "CloseCase": frozenset({SESSION}),
            "HandleWebhook": frozenset({GATEWAY}),
            "ReportMessageFailed": frozenset({SESSION}),
            "PostTyping": frozenset({SESSION}),
            "FetchAgentFile": frozenset({GATEWAY}),
            "ListConnectors": frozenset({OPERATOR}),
        },
    }
)


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Rpc`` → (``pkg.Service``, ``Rpc``)."""
    service, _, rpc = method.lstrip("/").rpartition("/")
    return service, rpc


def allowed(method: str, identity: str) -> bool:
    """Whether the mesh identity may call the full method name ``/pkg.Service/Rpc``.

    Health answers every mesh identity (the gateway's readiness asks its peers);
    reflection, when enabled, only operators."""
    service, rpc = split_method(method)
    if service == HEALTH_SERVICE:
        return True
    if service.startswith(_REFLECTION_PREFIX):
        return identity == OPERATOR
    return identity in RPC_CALLERS.get(service, {}).get(rpc, frozenset())
