"""API and operational routes: escalations and handover lookup for the chatbot and
operators, plus ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``.

The escalation body is validated here (conversation id syntax, tags, metadata) so that
Session only ever sees well-formed requests; metadata values that are JSON numbers or
booleans become strings, nested values are refused.
"""

from __future__ import annotations

import grpc
import orjson
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.gateway._request import consteq, parse_json, read_body, require_json
from ccbridge.gateway.backends import Backends
from ccbridge.gateway.errors import HttpError, JsonResponse, http_error_from_grpc
from ccbridge.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from ccbridge.gateway.openapi import openapi_document
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.handover_limits import MAX_METADATA_KEYS, MAX_TAG_CHARS, MAX_TAGS
from ccbridge.services.runtime.ids import CONVERSATION_ID_RULE, is_conversation_id
from ccbridge.services.runtime.tracing import bind_conversation
from ccbridge.session.v1 import session_pb2

MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 4096


def _conversation_id(value: object) -> str:
    if not is_conversation_id(value):
        raise HttpError(
            400, "invalid_conversation_id", f"conversationId must be {CONVERSATION_ID_RULE}"
        )
    return value


def _tags(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise HttpError(400, "invalid_tags", f"tags must be an array of at most {MAX_TAGS} strings")
    for tag in value:
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS:
            raise HttpError(
                400, "invalid_tags", f"each tag must be a string of 1-{MAX_TAG_CHARS} characters"
            )
    return value


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise HttpError(
            400,
            "invalid_metadata",
            f"metadata must be an object of at most {MAX_METADATA_KEYS} keys",
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise HttpError(
                400,
                "invalid_metadata",
                f"metadata keys must be 1-{MAX_METADATA_KEY_CHARS} characters",
            )
        if item is None:
            continue  # an unset chatbot attribute: nothing to pass on
        if isinstance(item, str):
            text = item
        elif isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, int | float):
            text = orjson.dumps(item).decode()
        else:
            raise HttpError(
                400,
                "invalid_metadata",
                f"metadata value of {key!r} must be a string, number or boolean",
            )
        if len(text) > MAX_METADATA_VALUE_CHARS:
            raise HttpError(
                400,
                "invalid_metadata",
                f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters",
            )
        result[key] = text
    return result


def _enum_name(enum: object, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)  # a newer Session: pass the number through
    return name.removeprefix(prefix)


def _ts(ts: Timestamp) -> str | None:
    return ts.ToJsonString() if ts.seconds or ts.nanos else None


def handover_json(handover: session_pb2.Handover) -> dict[str, object]:
    """The HTTP (camelCase) view of a ``ccbridge.session.v1.Handover``."""
    routing = handover.routing if handover.HasField("routing") else None
    return {
        "conversationId": handover.conversation_id,
        "state": _enum_name(session_pb2.HandoverState, handover.state, "HANDOVER_STATE_"),
        "connector": handover.connector,
        "externalId": handover.external_id,
        "routing": None
        if routing is None
        else {
            "connector": routing.connector,
            "queue": routing.queue,
            "priority": routing.priority,
            "skills": list(routing.skills),
            "rule": routing.rule,
        },
        "channel": handover.channel,
        "endUser": handover.end_user,
        "businessSender": handover.business_sender,
        "tags": list(handover.tags),
        "metadata": dict(handover.metadata),
        "createdAt": _ts(handover.created_at),
        "updatedAt": _ts(handover.updated_at),
        "version": handover.version,
        "failureReason": handover.failure_reason,
        "inboxPending": handover.inbox_pending,
        "outboxPending": handover.outbox_pending,
        "deadLetters": handover.dead_letters,
        "closedBy": None
        if handover.closed_by == session_pb2.CLOSE_INITIATOR_UNSPECIFIED
        else _enum_name(session_pb2.CloseInitiator, handover.closed_by, "CLOSE_INITIATOR_"),
    }


class ApiRoutes:
    """Escalation, handover lookup and the operational endpoints of one app."""

    def __init__(
        self, settings: GatewaySettings, backends: Backends, metrics: GatewayMetrics
    ) -> None:
        self._backends = backends
        self._metrics = metrics
        self._limit = settings.max_body_bytes
        self._body_timeout = settings.body_timeout_s
        self._token = settings.escalation_token.value
        self._openapi = orjson.dumps(openapi_document())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/escalations", self.escalate, methods=["POST"]),
            Route("/v1/handovers/{conversationId}", self.get_handover, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    def _authorize(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(
                401,
                "unauthorized",
                "missing bearer token",
                {"WWW-Authenticate": 'Bearer realm="ccbridge"'},
            )
        if not consteq(token.strip(), self._token):
            raise HttpError(
                401,
                "unauthorized",
                "invalid bearer token",
                {"WWW-Authenticate": 'Bearer realm="ccbridge", error="invalid_token"'},
            )

    async def escalate(self, request: Request) -> Response:
        """Starts (or returns) the handover of a conversation: 202 with its state."""
        self._authorize(request)
        require_json(request)
        doc = parse_json(await read_body(request, self._limit, self._body_timeout))
        if not isinstance(doc, dict):
            raise HttpError(400, "invalid_body", "body must be a JSON object")
        conversation_id = _conversation_id(doc.get("conversationId"))
        bind_conversation(conversation_id)
        escalation = session_pb2.EscalateRequest(
            conversation_id=conversation_id,
            tags=_tags(doc.get("tags")),
            metadata=_metadata(doc.get("metadata")),
        )
        try:
            response = await self._backends.call(
                "Escalate", self._backends.session.Escalate, escalation
            )
        except grpc.aio.AioRpcError as exc:
            raise http_error_from_grpc(exc) from None
        state = _enum_name(session_pb2.HandoverState, response.handover.state, "HANDOVER_STATE_")
        return JsonResponse(
            {"conversationId": conversation_id, "state": state, "created": response.created},
            status_code=202,
        )

    async def get_handover(self, request: Request) -> Response:
        """The handover of a conversation (404 when there is none)."""
        self._authorize(request)
        conversation_id = _conversation_id(request.path_params["conversationId"])
        bind_conversation(conversation_id)
        try:
            response = await self._backends.call(
                "GetHandover",
                self._backends.session.GetHandover,
                session_pb2.GetHandoverRequest(conversation_id=conversation_id),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise HttpError(
                    404, "handover_not_found", "no handover for this conversation"
                ) from None
            raise http_error_from_grpc(exc) from None
        return JsonResponse(handover_json(response.handover))

    async def healthz(self, request: Request) -> Response:
        """Liveness: answering at all means the event loop is responsive."""
        return JsonResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: both peers SERVING and not shutting down."""
        if await self._backends.ready():
            return JsonResponse({"status": "ready"})
        return JsonResponse(
            {"error": {"code": "not_ready", "message": "a backend is not ready or shutting down"}},
            status_code=503,
        )

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")
