"""Files agents attach at a CCaaS, served to Infobip by ``GET /media/{token}``: the token
names a connector and its file reference (services/runtime/media.py), the gateway streams
the file from the REAL connector servicer over ``FetchAgentFile`` (grpc.aio on loopback),
whose adapter here keeps its files in memory (the RT adapter's own download is tested
against a real RT in tests/services/connector/test_rt_agent_files.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.base import (
    Adapter,
    AgentFile,
    CaseToOpen,
    OpenedCase,
)
from ccbridge.services.connector.servicer import ConnectorServicer
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.runtime.errors import FarSideError, NotFound, OutOfRange
from ccbridge.services.runtime.media import (
    AgentFileLinks,
    ConnectorFile,
    MediaProxySettings,
    sign_file,
    verify,
)
from ccbridge.services.runtime.settings import EnvReader, Secret
from tests.gateway.conftest import Peer, Peers, assert_error, running_gateway, start_peer

SECRET = "media-secret-0123456789abcdef"
PUBLIC = "https://bridge.example.com"
LABEL = bytes(range(256)) * 1200  # 300 KiB: several chunks


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    content_type: str
    name: str
    announce_length: bool = True


class FileShelf(Adapter):
    """An adapter whose agents' files sit in memory (``files``: ref → file); ``errors``:
    ref → what opening it raises. Only ``agent_file`` is used here."""

    name = "shelf"

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.errors: dict[str, Exception] = {}

    @contextlib.asynccontextmanager
    async def agent_file(self, ref: str) -> AsyncIterator[AgentFile]:
        if ref in self.errors:
            raise self.errors[ref]
        stored = self.files.get(ref)
        if stored is None:
            raise NotFound("no such file")

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(stored.data), 65536):
                yield stored.data[start : start + 65536]

        yield AgentFile(
            content_type=stored.content_type,
            content_length=len(stored.data) if stored.announce_length else None,
            name=stored.name,
            chunks=chunks(),
        )

    async def open_case(self, case: CaseToOpen) -> OpenedCase:
        raise AssertionError("not used")

    async def post_customer_message(
        self, external_id: str, conversation_id: str, message: common_pb2.Message, key: str
    ) -> str:
        raise AssertionError("not used")

    async def close_case(
        self, external_id: str, conversation_id: str, reason: str, idempotency_key: str
    ) -> bool:
        raise AssertionError("not used")

    async def report_message_failed(
        self, external_id: str, conversation_id: str, message_id: str, reason: str, key: str
    ) -> None:
        raise AssertionError("not used")


class Plain(FileShelf):
    """An adapter without agent files of its own (the default ``agent_file``)."""

    name = "plain"
    agent_file = Adapter.agent_file  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def connector_with(adapters: Mapping[str, Adapter], peers: Peers) -> AsyncIterator[Peer]:
    """The real ConnectorServicer on loopback (its Session is the gateway tests' double)."""
    channel = grpc.aio.insecure_channel(peers.session_peer.addr)
    servicer = ConnectorServicer(adapters, SessionReporter(channel))

    def register(server: grpc.aio.Server) -> list[str]:
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server(servicer, server)
        return [connector_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name]

    peer = await start_peer(register)
    try:
        yield peer
    finally:
        await peer.stop()
        await channel.close()


def links(**overrides: str) -> AgentFileLinks:
    env = EnvReader(
        {
            "CCBRIDGE_MEDIA_PROXY": "true",
            "CCBRIDGE_PUBLIC_URL": PUBLIC,
            "CCBRIDGE_MEDIA_SECRET": SECRET,
            **overrides,
        }
    )
    settings = MediaProxySettings.read(env, signer=False)
    env.done("test")
    return AgentFileLinks(settings)


def path(connector: str, ref: str, *, now: float | None = None) -> str:
    link = links().link(connector, ref, now=now)
    assert link.startswith(PUBLIC + "/media/")
    return link[len(PUBLIC) :]


def gateway_env(peers: Peers, connector: Peer, **overrides: str) -> dict[str, str]:
    return peers.env(
        CONNECTOR_ADDR=connector.addr,
        CCBRIDGE_MEDIA_PROXY="true",
        CCBRIDGE_PUBLIC_URL=PUBLIC,
        CCBRIDGE_MEDIA_SECRET=SECRET,
        INFOBIP_BASE_URL="https://api.infobip.example",
        INFOBIP_API_KEY="infobip-key-0123456789",
        **overrides,
    )


@pytest.fixture
def shelf() -> FileShelf:
    shelf = FileShelf()
    shelf.files["7/9"] = StoredFile(LABEL, "image/png", "return label.png")
    return shelf


# --- the token kind ---------------------------------------------------------------------


def test_a_connector_file_token_names_the_connector_and_the_ref_only() -> None:
    token = links().link("rt", "12/34").rsplit("/", 1)[1]
    assert verify([Secret(SECRET)], token) == ConnectorFile("rt", "12/34")
    # Another secret's token, a changed payload, an expired one: refused.
    other = sign_file(Secret("another-secret-0123456789"), "rt", "12/34", int(time.time()) + 60)
    with pytest.raises(Exception, match="forged"):
        verify([Secret(SECRET)], other)
    payload, mac = token.split(".")
    with pytest.raises(Exception, match="forged"):
        verify([Secret(SECRET)], f"{payload[:-2]}AA.{mac}")
    old = links().link("rt", "12/34", now=time.time() - 8 * 86400).rsplit("/", 1)[1]
    with pytest.raises(Exception, match="expired"):
        verify([Secret(SECRET)], old)


def test_links_say_why_they_cannot_be_made() -> None:
    assert links().unavailable() == ""
    assert "CCBRIDGE_MEDIA_PROXY" in links(CCBRIDGE_MEDIA_PROXY="false").unavailable()
    assert "CCBRIDGE_PUBLIC_URL" in links(CCBRIDGE_PUBLIC_URL="").unavailable()


# --- the RPC ------------------------------------------------------------------------------


async def _fetch(peer: Peer, connector: str, ref: str) -> Sequence[object]:
    async with grpc.aio.insecure_channel(peer.addr) as channel:
        stub = connector_pb2_grpc.ConnectorServiceStub(channel)
        call = stub.FetchAgentFile(
            connector_pb2.FetchAgentFileRequest(connector=connector, file_ref=ref), timeout=10
        )
        return [part async for part in call]


async def test_the_rpc_sends_the_head_then_the_bytes(shelf: FileShelf, peers: Peers) -> None:
    async with connector_with({"shelf": shelf}, peers) as peer:
        parts = await _fetch(peer, "shelf", "7/9")
        head, *chunks = parts
        assert isinstance(head, connector_pb2.FetchAgentFileResponse)
        assert head.head == connector_pb2.AgentFileHead(
            content_type="image/png", content_length=len(LABEL), file_name="return label.png"
        )
        assert len(chunks) > 1
        data = b"".join(
            c.chunk for c in chunks if isinstance(c, connector_pb2.FetchAgentFileResponse)
        )
        assert data == LABEL
        shelf.errors["big"] = OutOfRange("larger than CCBRIDGE_MEDIA_MAX_BYTES")
        expected = {
            ("shelf", "nope"): grpc.StatusCode.NOT_FOUND,
            ("shelf", "big"): grpc.StatusCode.OUT_OF_RANGE,
            ("shelf", ""): grpc.StatusCode.INVALID_ARGUMENT,
            ("other", "7/9"): grpc.StatusCode.INVALID_ARGUMENT,
        }
        for (connector, ref), code in expected.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _fetch(peer, connector, ref)
            assert raised.value.code() == code, (connector, ref)


# --- the gateway route ------------------------------------------------------------------


async def test_a_valid_link_streams_the_file(shelf: FileShelf, peers: Peers) -> None:
    async with (
        connector_with({"shelf": shelf}, peers) as connector,
        running_gateway(gateway_env(peers, connector)) as (gateway, _),
    ):
        answer = await gateway.get(path("shelf", "7/9"))
        assert answer.status_code == 200, answer.text
        assert answer.content == LABEL
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["content-length"] == str(len(LABEL))
        assert answer.headers["content-disposition"] == (
            "inline; filename*=UTF-8''return%20label.png"
        )
        assert answer.headers["cache-control"] == "private, no-store"
        # Without an announced length the file still arrives whole.
        shelf.files["1/2"] = StoredFile(b"%PDF-1.4 ...", "application/pdf", "", False)
        answer = await gateway.get(path("shelf", "1/2"))
        assert answer.status_code == 200 and answer.content == b"%PDF-1.4 ..."
        assert "content-disposition" not in answer.headers


async def test_failures_are_clear_answers(shelf: FileShelf, peers: Peers) -> None:
    shelf.errors["down"] = FarSideError("RT file download: HTTP 503", retryable=True)
    shelf.errors["refused"] = FarSideError("RT file download: HTTP 403", retryable=False)
    shelf.errors["big"] = OutOfRange("larger than CCBRIDGE_MEDIA_MAX_BYTES")
    async with (
        connector_with({"shelf": shelf, "plain": Plain()}, peers) as connector,
        running_gateway(gateway_env(peers, connector)) as (gateway, _),
    ):
        assert_error(await gateway.get(path("shelf", "nope")), 404, "media_not_found")
        assert_error(await gateway.get(path("plain", "7/9")), 404, "media_not_found")
        assert_error(await gateway.get(path("gone", "7/9")), 404, "media_not_found")
        assert_error(await gateway.get(path("shelf", "big")), 413, "media_too_large")
        assert_error(await gateway.get(path("shelf", "down")), 502, "media_upstream_failed")
        assert_error(await gateway.get(path("shelf", "refused")), 502, "media_upstream_failed")
        old = path("shelf", "7/9", now=time.time() - 8 * 86400)
        assert_error(await gateway.get(old), 404, "media_link_expired")
        forged = sign_file(Secret("another-secret-0123456789"), "shelf", "7/9", 2**40)
        assert_error(await gateway.get(f"/media/{forged}"), 403, "invalid_media_token")
        # Every download ended: the cap is free again.
        assert (await gateway.get(path("shelf", "7/9"))).status_code == 200
    # Announced larger than the gateway's cap: 413 before any byte.
    async with connector_with({"shelf": shelf}, peers) as connector:
        env = gateway_env(peers, connector, CCBRIDGE_MEDIA_MAX_BYTES=str(len(LABEL) - 1))
        async with running_gateway(env) as (gateway, _):
            assert_error(await gateway.get(path("shelf", "7/9")), 413, "media_too_large")


async def test_the_connector_service_down_is_502(shelf: FileShelf, peers: Peers) -> None:
    async with connector_with({"shelf": shelf}, peers) as connector:
        env = gateway_env(peers, connector)
    async with running_gateway(env) as (gateway, _):
        assert_error(await gateway.get(path("shelf", "7/9")), 502, "media_upstream_failed")
