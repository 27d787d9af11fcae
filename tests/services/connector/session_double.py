"""A test double of the session peer for connector tests.

The real SessionService is another component and needs the whole mesh; this double
implements only ReportCaseEvents as session.proto documents it (dedupe by event id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from ccbridge.session.v1 import session_pb2, session_pb2_grpc


@dataclass
class SessionDouble(session_pb2_grpc.SessionServiceServicer):
    requests: list[session_pb2.ReportCaseEventsRequest] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    fail_with: grpc.StatusCode | None = None
    port: int = 0

    async def ReportCaseEvents(
        self, request: session_pb2.ReportCaseEventsRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.ReportCaseEventsResponse:
        if self.fail_with is not None:
            await context.abort(self.fail_with, "session double failing on purpose")
        self.requests.append(request)
        accepted = duplicates = 0
        for event in request.events:
            if event.event_id in self.seen:
                duplicates += 1
            else:
                self.seen.add(event.event_id)
                accepted += 1
        return session_pb2.ReportCaseEventsResponse(accepted=accepted, duplicates=duplicates)


@asynccontextmanager
async def running_session_double() -> AsyncIterator[tuple[SessionDouble, int]]:
    """Serves a SessionDouble on a free loopback port; yields it and the port."""
    double = SessionDouble()  # type: ignore[abstract]  # only ReportCaseEvents is needed
    server = grpc.aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    double.port = port
    await server.start()
    try:
        yield double, port
    finally:
        await server.stop(0)
