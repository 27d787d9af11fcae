"""Fixtures of the gateway tests: real grpc.aio peer servers and an in-process app.

The peers are real ``grpc.aio`` servers built with ``ccbridge.services.runtime.server`` (health,
reflection, the error interceptor) on 127.0.0.1:0, serving small *recording test doubles*
of SessionService and ConnectorService: the real Session and Connector are developed in
parallel and have their own tests; here the doubles record each call (request and
``x-request-id`` metadata) and answer per the documented contract (Escalate idempotent,
Ingest outcomes per message, NOT_FOUND for unknown handovers, errors on demand).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.gateway.app import create_app
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.errors import (
    CcbridgeError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.server import ServiceHealth, create_server, status_for
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

ESCALATION_TOKEN = "escalation-secret-token"
WEBHOOK_TOKEN = "webhook-path-token-0123456789"
HMAC_SECRETS = ("hmac-secret-one-0123456789", "hmac-secret-two-0123456789")
BASIC_USER = "infobip"
BASIC_PASSWORD = "basic-password-0123456789"


@dataclass
class Call:
    rpc: str
    request: object
    request_id: str


class RecordingSession(session_pb2_grpc.SessionServiceServicer):
    """Test double of SessionService: records calls, keeps handovers in a dict."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.handovers: dict[str, session_pb2.Handover] = {}
        self.seen: set[str] = set()
        # Raised by every call (through the real error interceptor): a ccbridge error,
        # or e.g. a Redis error as Session's store would raise it.
        self.error: Exception | None = None
        self.delay_s = 0.0
        self.streams = True  # False: an older Session without IngestStream
        self.streams_opened = 0

    def reset(self) -> None:
        self.calls = []
        self.handovers = {}
        self.seen = set()
        self.error = None
        self.delay_s = 0.0
        self.streams = True
        self.streams_opened = 0

    async def _record(self, rpc: str, request: object, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.calls.append(Call(rpc, request, str(metadata.get("x-request-id", ""))))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error

    def rpc_calls(self, rpc: str) -> list[Call]:
        return [call for call in self.calls if call.rpc == rpc]

    def open(self, conversation_id: str) -> None:
        self.handovers[conversation_id] = session_pb2.Handover(
            conversation_id=conversation_id,
            state=session_pb2.HANDOVER_STATE_ACTIVE,
            connector="webhook",
            external_id="case-1",
            channel="WHATSAPP",
        )

    async def Escalate(
        self, request: session_pb2.EscalateRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.EscalateResponse:
        await self._record("Escalate", request, context)
        existing = self.handovers.get(request.conversation_id)
        if existing is not None:
            return session_pb2.EscalateResponse(handover=existing, created=False)
        handover = session_pb2.Handover(
            conversation_id=request.conversation_id,
            state=session_pb2.HANDOVER_STATE_OPENING,
            tags=request.tags,
            metadata=request.metadata,
        )
        handover.created_at.GetCurrentTime()
        self.handovers[request.conversation_id] = handover
        return session_pb2.EscalateResponse(handover=handover, created=True)

    async def ReportEndUserTyping(
        self, request: session_pb2.ReportEndUserTypingRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.ReportEndUserTypingResponse:
        await self._record("ReportEndUserTyping", request, context)
        return session_pb2.ReportEndUserTypingResponse(
            relayed=request.conversation_id in self.handovers
        )

    async def Ingest(
        self, request: session_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.IngestResponse:
        await self._record("Ingest", request, context)
        return session_pb2.IngestResponse(results=self._outcomes(request.messages))

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[session_pb2.IngestStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[session_pb2.IngestStreamResponse]:
        """Each batch recorded as an "Ingest" call (its messages as an IngestRequest),
        answered in order; ``error`` answers the batch with its status, as Session does."""
        if not self.streams:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.streams_opened += 1
        async for batch in request_iterator:
            request = session_pb2.IngestRequest(messages=batch.messages)
            try:
                await self._record("Ingest", request, context)
            except Exception as exc:  # answered by the one error policy, as Session does
                status = status_for(exc)
                yield session_pb2.IngestStreamResponse(
                    batch_id=batch.batch_id,
                    error_code=status.code.value[0],
                    error_message=status.message,
                )
                continue
            yield session_pb2.IngestStreamResponse(
                batch_id=batch.batch_id, results=self._outcomes(batch.messages)
            )

    def _outcomes(self, messages: Sequence[common_pb2.Message]) -> list[session_pb2.IngestResult]:
        results = []
        for message in messages:
            if message.conversation_id not in self.handovers:
                outcome = session_pb2.INGEST_OUTCOME_IGNORED
            elif message.id in self.seen:
                outcome = session_pb2.INGEST_OUTCOME_DUPLICATE
            else:
                self.seen.add(message.id)
                outcome = session_pb2.INGEST_OUTCOME_ACCEPTED
            results.append(session_pb2.IngestResult(message_id=message.id, outcome=outcome))
        return results

    async def GetHandover(
        self, request: session_pb2.GetHandoverRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.GetHandoverResponse:
        await self._record("GetHandover", request, context)
        handover = self.handovers.get(request.conversation_id)
        if handover is None:
            raise NotFound("no handover")
        return session_pb2.GetHandoverResponse(handover=handover)

    async def CloseHandover(
        self, request: session_pb2.CloseHandoverRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.CloseHandoverResponse:
        await self._record("CloseHandover", request, context)
        handover = self.handovers.get(request.conversation_id)
        if handover is None:
            raise NotFound("no handover")
        if request.HasField("event_time") and (
            request.event_time.ToNanoseconds() < handover.created_at.ToNanoseconds()
        ):
            return session_pb2.CloseHandoverResponse(handover=handover)  # older: unchanged
        handover.state = session_pb2.HANDOVER_STATE_CLOSING
        handover.closed_by = request.initiator
        return session_pb2.CloseHandoverResponse(handover=handover)


class RecordingConnector(connector_pb2_grpc.ConnectorServiceServicer):
    """Test double of ConnectorService.HandleWebhook; the connector name picks the answer:
    ``reject`` UNAUTHENTICATED, ``malformed`` INVALID_ARGUMENT, ``down`` UNAVAILABLE,
    ``nosuch`` NOT_FOUND, anything else 2 accepted / 1 duplicate / 0 ignored."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def reset(self) -> None:
        self.calls.clear()

    async def HandleWebhook(
        self, request: connector_pb2.HandleWebhookRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.HandleWebhookResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.calls.append(Call("HandleWebhook", request, str(metadata.get("x-request-id", ""))))
        errors: dict[str, CcbridgeError] = {
            "reject": Unauthenticated("bad signature"),
            "malformed": InvalidArgument("body is not a webhook event"),
            "down": Unavailable("ccaas down"),
            "nosuch": NotFound("no connector named nosuch"),
        }
        if request.connector in errors:
            raise errors[request.connector]
        return connector_pb2.HandleWebhookResponse(accepted=2, duplicates=1, ignored=0)


@dataclass
class Peer:
    server: grpc.aio.Server
    port: int
    health: ServiceHealth

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.health.enter_shutdown()
        await self.server.stop(None)


async def start_peer(register: object) -> Peer:
    server, port, keeper = create_server("127.0.0.1:0", register, tls=INSECURE)  # type: ignore[arg-type]
    await server.start()
    await keeper.start()
    return Peer(server, port, keeper)


async def start_session_peer(servicer: RecordingSession) -> Peer:
    def register(server: grpc.aio.Server) -> list[str]:
        session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server)
        return [session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name]

    return await start_peer(register)


async def start_connector_peer(servicer: RecordingConnector) -> Peer:
    def register(server: grpc.aio.Server) -> list[str]:
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server(servicer, server)
        return [connector_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name]

    return await start_peer(register)


@dataclass
class Peers:
    session: RecordingSession
    connector: RecordingConnector
    session_peer: Peer
    connector_peer: Peer

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "CCBRIDGE_ESCALATION_TOKEN": ESCALATION_TOKEN,
            "CCBRIDGE_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "INFOBIP_WEBHOOK_SECRET": ",".join(HMAC_SECRETS),
            "INFOBIP_WEBHOOK_BASIC_USER": BASIC_USER,
            "INFOBIP_WEBHOOK_BASIC_PASSWORD": BASIC_PASSWORD,
            "SESSION_ADDR": self.session_peer.addr,
            "CONNECTOR_ADDR": self.connector_peer.addr,
            # In-process doubles without certificates (mTLS: tests/runtime/test_mesh_tls.py).
            "CCBRIDGE_MESH_INSECURE": "true",
        }
        env.update(overrides)
        return env


@contextlib.asynccontextmanager
async def running_peers() -> AsyncIterator[Peers]:
    """The Session and Connector doubles as real grpc.aio servers on loopback."""
    # The doubles implement only the RPCs the gateway calls (the rest: UNIMPLEMENTED).
    session = RecordingSession()  # type: ignore[abstract]
    connector = RecordingConnector()  # type: ignore[abstract]
    session_peer = await start_session_peer(session)
    connector_peer = await start_connector_peer(connector)
    try:
        yield Peers(session, connector, session_peer, connector_peer)
    finally:
        await connector_peer.stop()
        await session_peer.stop()


@pytest.fixture(scope="session")
async def _peer_servers() -> AsyncIterator[Peers]:
    async with running_peers() as peers:
        yield peers


@pytest.fixture
def peers(_peer_servers: Peers) -> Iterator[Peers]:
    _peer_servers.session.reset()
    _peer_servers.connector.reset()
    yield _peer_servers
    _peer_servers.session.reset()


@contextlib.asynccontextmanager
async def running_gateway(
    env: dict[str, str], client_addr: tuple[str, int] = ("127.0.0.1", 40000)
) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    """The app with its lifespan run, behind an httpx client (ASGI transport)."""
    app = create_app(
        GatewaySettings.from_env({"CCBRIDGE_MESH_INSECURE": "true", **env}), ready_cache_s=0.0
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client_addr)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, app


@pytest.fixture
async def gateway(peers: Peers) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(peers.env()) as (client, _app):
        yield client


def sign_hex(body: bytes, secret: str = HMAC_SECRETS[0]) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_b64(body: bytes, secret: str = HMAC_SECRETS[0]) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def basic(user: str = BASIC_USER, password: str = BASIC_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The answer has ``status`` and the gateway's JSON error body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, error
