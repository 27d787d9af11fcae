"""Channel retries: a restarting peer is retried, an answer a servicer chose is not."""

from __future__ import annotations

import grpc

from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.runtime.channels import create_channel
from ccbridge.services.runtime.errors import FarSideError, Unavailable
from ccbridge.services.runtime.mesh_tls import INSECURE
from ccbridge.services.runtime.server import create_server


class _Flaky(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Route(
        self, request: routing_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> routing_pb2.RouteResponse:
        self.calls += 1
        if request.context.channel == "far":
            raise FarSideError("the CCaaS is down", retryable=True, retry_after=3)
        raise Unavailable("redis is down")


async def test_servicer_errors_are_not_retried_by_the_channel() -> None:
    servicer = _Flaky()

    def register(server: grpc.aio.Server) -> list[str]:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
        return ["ccbridge.routing.v1.RoutingService"]

    server, port, _health = create_server("127.0.0.1:0", register, tls=INSECURE)
    await server.start()
    channel = create_channel(f"127.0.0.1:{port}", INSECURE, "session")
    try:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        for channel_name in ("far", "local"):
            servicer.calls = 0
            call = stub.Route(
                routing_pb2.RouteRequest(context={"channel": channel_name}), timeout=5
            )
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                trailers = dict(exc.trailing_metadata() or ())
                if channel_name == "far":
                    assert trailers.get("ccbridge-retry-after") == "3"
            assert servicer.calls == 1, "one far-side attempt per caller attempt"
    finally:
        await channel.close()
        await server.stop(0)


async def test_a_restarting_peer_is_retried() -> None:
    from tests.support.redis_server import free_port

    port = free_port()
    servicer = _Flaky()
    channel = create_channel(f"127.0.0.1:{port}", INSECURE, "session")

    def register(server: grpc.aio.Server) -> list[str]:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
        return ["ccbridge.routing.v1.RoutingService"]

    import asyncio

    stub = routing_pb2_grpc.RoutingServiceStub(channel)
    call = stub.Route(routing_pb2.RouteRequest(context={"channel": "far"}), timeout=10)
    await asyncio.sleep(0.3)  # the first attempt finds nobody listening
    server, _, _ = create_server(f"127.0.0.1:{port}", register, tls=INSECURE)
    await server.start()
    try:
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert servicer.calls == 1, "the call reached the server once it was up"
    finally:
        await channel.close()
        await server.stop(0)
