"""Mutual TLS and per-caller authorization of the mesh (services/runtime/mesh_tls.py,
services/runtime/authz.py), through the real server bootstrap (create_server) on port 0.

Every RPC of every ccbridge service descriptor is called: without a client certificate,
with a certificate of another CA, of a mesh certificate without an identity, of every
component the table does not list (all refused), and of every identity it lists (let
through to the servicer). A new RPC is covered without touching this file."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ccbridge.connector.v1 import connector_pb2
from ccbridge.history.v1 import history_pb2
from ccbridge.routing.v1 import routing_pb2
from ccbridge.services.local.mesh_ca import IssuedCert, MeshCa, create_mesh_pki
from ccbridge.services.runtime.authz import RPC_CALLERS
from ccbridge.services.runtime.channels import ReloadingChannel, create_channel, credentials
from ccbridge.services.runtime.mesh_tls import (
    IDENTITIES,
    INSECURE,
    KeyMaterial,
    MeshTls,
    Watched,
)
from ccbridge.services.runtime.server import create_health_server, create_server
from ccbridge.services.runtime.settings import EnvReader, SettingsError, read_mesh_tls
from ccbridge.session.v1 import session_pb2

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (session_pb2, "SessionService"),
        (history_pb2, "HistoryService"),
        (routing_pb2, "RoutingService"),
        (connector_pb2, "ConnectorService"),
    )
]
METHODS = [method for service in SERVICES for method in service.methods]


def _tls(issued: IssuedCert) -> MeshTls:
    return MeshTls(str(issued.cert), str(issued.key), str(issued.ca))


def _cls(desc: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def _handler(method: descriptor.MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    """A servicer that answers an empty response: reaching it means "let through"."""
    request, response = _cls(method.input_type), _cls(method.output_type)
    kw: dict[str, Any] = {
        "request_deserializer": request.FromString,
        "response_serializer": response.SerializeToString,
    }
    if method.client_streaming and method.server_streaming:

        async def bidi(requests: Any, context: Any) -> AsyncIterator[Message]:
            async for _ in requests:
                pass
            yield response()

        return grpc.stream_stream_rpc_method_handler(bidi, **kw)
    if method.client_streaming:

        async def collect(requests: Any, context: Any) -> Message:
            async for _ in requests:
                pass
            return response()

        return grpc.stream_unary_rpc_method_handler(collect, **kw)
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Message]:
            yield response()

        return grpc.unary_stream_rpc_method_handler(stream, **kw)

    async def unary(request: Any, context: Any) -> Message:
        return response()

    return grpc.unary_unary_rpc_method_handler(unary, **kw)


def _register(server: grpc.aio.Server) -> list[str]:
    for service in SERVICES:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service.full_name, {m.name: _handler(m) for m in service.methods}
                ),
            )
        )
    return [service.full_name for service in SERVICES]


async def _call(channel: grpc.aio.Channel, method: descriptor.MethodDescriptor) -> None:
    """One call of ``method``; raises AioRpcError when refused."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request, response = _cls(method.input_type), _cls(method.output_type)
    kw: dict[str, Any] = {
        "request_serializer": request.SerializeToString,
        "response_deserializer": response.FromString,
    }
    if method.client_streaming and method.server_streaming:
        bidi = channel.stream_stream(path, **kw)(iter([request()]), timeout=10)
        async for _ in bidi:
            pass
    elif method.client_streaming:
        await channel.stream_unary(path, **kw)(iter([request()]), timeout=10)
    elif method.server_streaming:
        async for _ in channel.unary_stream(path, **kw)(request(), timeout=10):
            pass
    else:
        await channel.unary_unary(path, **kw)(request(), timeout=10)


@dataclass
class Pki:
    folder: Path
    certs: dict[str, IssuedCert]
    foreign: IssuedCert  # a "gateway" certificate of another CA
    anonymous: IssuedCert  # of the mesh CA, without a spiffe://ccbridge/ identity
    ca_pem: bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    certs = dict(create_mesh_pki(folder / "mesh"))
    other = MeshCa.create(folder / "other").issue("gateway")
    anonymous = MeshCa.load(folder / "mesh").issue("gateway", name="anonymous", spiffe=False)
    return Pki(folder, certs, other, anonymous, (folder / "mesh" / "ca.crt").read_bytes())


@dataclass
class Served:
    port: int
    address: str


@pytest.fixture(scope="module")
async def server(pki: Pki) -> AsyncIterator[Served]:
    """The four services, served as "session" would serve them (its certificate)."""
    srv, port, keeper = create_server("127.0.0.1:0", _register, tls=_tls(pki.certs["session"]))
    await srv.start()
    await keeper.start()
    yield Served(port, f"127.0.0.1:{port}")
    await keeper.enter_shutdown()
    await srv.stop(0)


def _channel(served: Served, issued: IssuedCert) -> grpc.aio.Channel:
    return create_channel(served.address, _tls(issued), "session")


async def _refused(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, method)
    return info.value.code()


def _ids(method: descriptor.MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def test_the_table_lists_exactly_the_rpcs_of_the_service_descriptors() -> None:
    described = {(m.containing_service.full_name, m.name) for m in METHODS}
    listed = {(service, rpc) for service, rpcs in RPC_CALLERS.items() for rpc in rpcs}
    assert described == listed
    for rpcs in RPC_CALLERS.values():
        for callers in rpcs.values():
            assert callers and callers <= set(IDENTITIES)


@pytest.mark.parametrize("method", METHODS, ids=_ids)
async def test_every_rpc_is_refused_without_a_client_certificate(
    server: Served, pki: Pki, method: descriptor.MethodDescriptor
) -> None:
    no_cert = grpc.aio.secure_channel(
        server.address,
        grpc.ssl_channel_credentials(root_certificates=pki.ca_pem),
        options=[("grpc.ssl_target_name_override", "session")],
    )
    async with no_cert, grpc.aio.insecure_channel(server.address) as plaintext:
        assert await _refused(no_cert, method) == grpc.StatusCode.UNAVAILABLE
        assert await _refused(plaintext, method) == grpc.StatusCode.UNAVAILABLE
    async with _channel(server, pki.foreign) as foreign:
        assert await _refused(foreign, method) == grpc.StatusCode.UNAVAILABLE
    async with _channel(server, pki.anonymous) as anonymous:
        assert await _refused(anonymous, method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS, ids=_ids)
async def test_every_rpc_is_refused_to_every_other_component_and_allowed_to_its_callers(
    server: Served, pki: Pki, method: descriptor.MethodDescriptor
) -> None:
    callers = RPC_CALLERS[method.containing_service.full_name][method.name]
    for identity in IDENTITIES:
        async with _channel(server, pki.certs[identity]) as channel:
            if identity in callers:
                await _call(channel, method)
            else:
                assert await _refused(channel, method) == grpc.StatusCode.PERMISSION_DENIED, (
                    identity
                )


async def test_health_answers_every_mesh_identity(server: Served, pki: Pki) -> None:
    for identity in IDENTITIES:
        async with _channel(server, pki.certs[identity]) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_refuses_a_server_of_another_component(server: Served, pki: Pki) -> None:
    # The gateway means to reach "connector" but the address answers as "session".
    async with create_channel(server.address, _tls(pki.certs["gateway"]), "connector") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def _reflect(channel: grpc.aio.Channel) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=10):
        return reply
    raise AssertionError("no reflection answer")


async def test_reflection_is_off_by_default(server: Served, pki: Pki) -> None:
    async with _channel(server, pki.certs["operator"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _reflect(channel)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_when_enabled_answers_operators_only(pki: Pki) -> None:
    srv, port, _ = create_server(
        "127.0.0.1:0", _register, tls=_tls(pki.certs["session"]), reflection=True
    )
    await srv.start()
    try:
        served = Served(port, f"127.0.0.1:{port}")
        async with _channel(served, pki.certs["operator"]) as channel:
            reply = await _reflect(channel)
            names = {s.name for s in reply.list_services_response.service}
            assert "ccbridge.session.v1.SessionService" in names
        async with _channel(served, pki.certs["gateway"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _reflect(channel)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await srv.stop(0)


async def test_the_plaintext_health_port_serves_health_and_nothing_else(pki: Pki) -> None:
    srv, _, keeper = create_server("127.0.0.1:0", _register, tls=_tls(pki.certs["session"]))
    health_srv, health_port = create_health_server("127.0.0.1:0", keeper)
    await srv.start()
    await health_srv.start()
    await keeper.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            for service in ("", "liveness"):
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            for method in METHODS:
                assert await _refused(channel, method) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await keeper.enter_shutdown()
        await health_srv.stop(0)
        await srv.stop(0)


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[tuple[Path, MeshCa]]:
    """A server certificate at fixed paths (as a mounted Secret) and its first CA."""
    first = MeshCa.create(tmp_path / "first")
    issued = first.issue("session")
    live = tmp_path / "live"
    live.mkdir()
    for src, name in ((issued.cert, "tls.crt"), (issued.key, "tls.key"), (issued.ca, "ca.crt")):
        shutil.copy(src, live / name)
    yield live, first


def _live_tls(live: Path) -> MeshTls:
    return MeshTls(str(live / "tls.crt"), str(live / "tls.key"), str(live / "ca.crt"))


async def test_a_server_takes_a_rotated_certificate_and_ca_without_a_restart(
    rotating: tuple[Path, MeshCa], tmp_path: Path
) -> None:
    live, first = rotating
    second = MeshCa.create(tmp_path / "second")
    old_client, new_client = first.issue("gateway"), second.issue("gateway")
    srv, port, _ = create_server("127.0.0.1:0", _register, tls=_live_tls(live))
    await srv.start()
    served = Served(port, f"127.0.0.1:{port}")
    method = session_pb2.DESCRIPTOR.services_by_name["SessionService"].methods_by_name["Ingest"]
    try:
        async with _channel(served, old_client) as channel:
            await _call(channel, method)
        async with _channel(served, new_client) as channel:
            assert await _refused(channel, method) == grpc.StatusCode.UNAVAILABLE
        # Rotation: a new CA, and the server's certificate and key from it (what
        # cert-manager writes into the mounted Secret).
        rotated = second.issue("session")
        shutil.copy(rotated.key, live / "tls.key")
        shutil.copy(rotated.cert, live / "tls.crt")
        shutil.copy(rotated.ca, live / "ca.crt")
        async with _channel(served, new_client) as channel:
            await _call(channel, method)
        async with _channel(served, old_client) as channel:
            assert await _refused(channel, method) == grpc.StatusCode.UNAVAILABLE
    finally:
        await srv.stop(0)


async def test_a_client_channel_takes_rotated_files_and_its_stubs_keep_working(
    rotating: tuple[Path, MeshCa], tmp_path: Path
) -> None:
    """The client's own certificate and CA rotate to a new CA while the server restarts
    with only the new CA: the same channel (and stub) reconnects with the new files."""
    live, first = rotating  # the server's files
    client_live = tmp_path / "client"
    client_live.mkdir()
    first_client = first.issue("gateway")
    for src, name in (
        (first_client.cert, "tls.crt"),
        (first_client.key, "tls.key"),
        (first_client.ca, "ca.crt"),
    ):
        shutil.copy(src, client_live / name)
    srv, port, _ = create_server("127.0.0.1:0", _register, tls=_live_tls(live))
    await srv.start()
    method = session_pb2.DESCRIPTOR.services_by_name["SessionService"].methods_by_name["Ingest"]
    channel = ReloadingChannel(
        f"127.0.0.1:{port}", _live_tls(client_live), "session", check_every_s=0.0
    )
    try:
        await _call(channel, method)
        assert channel.generation == 0
        # Both sides rotate to a second CA; the server restarts (its old connections go).
        second = MeshCa.create(tmp_path / "second")
        await srv.stop(0)
        for issued, folder in (
            (second.issue("session"), live),
            (second.issue("gateway"), client_live),
        ):
            shutil.copy(issued.key, folder / "tls.key")
            shutil.copy(issued.cert, folder / "tls.crt")
            shutil.copy(issued.ca, folder / "ca.crt")
        srv, _, _ = create_server(f"127.0.0.1:{port}", _register, tls=_live_tls(live))
        await srv.start()
        await _call(channel, method)
        assert channel.generation == 1
        # A channel that kept the first files is refused by the restarted server.
        async with create_channel(f"127.0.0.1:{port}", _tls(first_client), "session") as old:
            assert await _refused(old, method) == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        await srv.stop(0)


def test_a_half_written_rotation_keeps_the_certificate_in_use(
    rotating: tuple[Path, MeshCa], tmp_path: Path
) -> None:
    live, first = rotating
    watched = Watched(_live_tls(live))
    before = watched.material
    # The new certificate is there, its key not yet: not taken.
    shutil.copy(first.issue("session", name="next").cert, live / "tls.crt")
    assert watched.refresh() is False and watched.material == before
    shutil.copy(first.folder / "next.key", live / "tls.key")
    assert watched.refresh() is True and watched.material != before
    assert watched.material.cert == (live / "tls.crt").read_bytes()


def test_credentials_build_from_the_files(pki: Pki) -> None:
    material = KeyMaterial.load(_tls(pki.certs["history"]))
    assert isinstance(credentials(material), grpc.ChannelCredentials)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "CCBRIDGE_TLS_CERT is required"),
        ({"CCBRIDGE_TLS_CERT": "/nonexistent/tls.crt"}, "CCBRIDGE_TLS_KEY is required"),
        ({"CCBRIDGE_TLS_CERT": "/nonexistent/tls.crt"}, "no readable file at /nonexistent"),
        (
            {"CCBRIDGE_MESH_INSECURE": "true", "CCBRIDGE_TLS_CA": "/x"},
            "both set: choose one",
        ),
    ],
)
def test_without_certificates_a_process_does_not_start(env: dict[str, str], problem: str) -> None:
    reader = EnvReader(env)
    read_mesh_tls(reader)
    with pytest.raises(SettingsError, match=problem):
        reader.done("test")


def test_settings_take_the_paths_or_the_explicit_development_switch(pki: Pki) -> None:
    issued = pki.certs["routing"]
    reader = EnvReader(issued.env())
    assert read_mesh_tls(reader) == _tls(issued)
    reader.done("test")
    reader = EnvReader({"CCBRIDGE_MESH_INSECURE": "true"})
    assert read_mesh_tls(reader) is INSECURE
    reader.done("test")


def test_local_ca_keys_are_private(pki: Pki) -> None:
    keys = [Path(c.key) for c in pki.certs.values()] + [pki.folder / "mesh" / "ca.key"]
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key
