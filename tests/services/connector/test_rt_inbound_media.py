"""Inbound media on RT tickets, against a REAL Request Tracker 5 (scripts/rt-peer.sh): a
file up to CCBRIDGE_RT_ATTACH_MAX_BYTES is downloaded (here from the gateway's media
proxy in front of the Infobip simulator, as production does with the proxy on) and
attached to the ticket; a larger or unreachable one stays a link with a note; every
other content family reaches the ticket as readable text, nothing dropped."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.gateway.__main__ import start
from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.connector.adapters.rt import RtAdapter, file_name
from ccbridge.services.connector.case_text import message_text
from ccbridge.services.runtime.media import MediaLinks, MediaProxySettings
from ccbridge.services.runtime.settings import EnvReader
from tests.services.connector.test_rt_adapter import _case, _msg
from tests.simulators.infobip.harness import API_KEY, Sim, served_sim
from tests.support.far_side import closed_port
from tests.support.rt import RtPeer

pytestmark = pytest.mark.rt

SECRET = "media-secret-0123456789abcdef"
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64  # a 16 KiB "JPEG"


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with served_sim() as sim:
        yield sim


@pytest.fixture
async def rt_http(rt_peer: RtPeer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"token {rt_peer.bridge_token}"}
    async with httpx.AsyncClient(base_url=rt_peer.rest2, headers=headers, timeout=30) as http:
        yield http


async def _attachments(http: httpx.AsyncClient, txn: str) -> list[dict[str, object]]:
    answer = await http.get(
        f"/transaction/{txn}/attachments",
        params={"fields": "Filename,ContentType,ContentLength,Content"},
    )
    answer.raise_for_status()
    return list(answer.json()["items"])


async def _on_infobip(sim: Sim, data: bytes, kind: str) -> str:
    answer = await sim.http.post("/_sim/media", content=data, headers={"content-type": kind})
    return f"{sim.url}/_sim/media/{answer.json()['id']}"


@contextlib.asynccontextmanager
async def media_gateway(sim: Sim) -> AsyncIterator[MediaLinks]:
    """The real gateway (uvicorn) with its media proxy on, in front of the simulator; yields
    the signer Session uses, its links pointing at this gateway."""
    assert sim.url is not None
    env = {
        "CCBRIDGE_MESH_INSECURE": "true",
        "CCBRIDGE_ESCALATION_TOKEN": "escalation-token-0123456789",
        "CCBRIDGE_WEBHOOK_TOKEN": "webhook-token-0123456789",
        "SESSION_ADDR": f"127.0.0.1:{closed_port()}",
        "CONNECTOR_ADDR": f"127.0.0.1:{closed_port()}",
        "CCBRIDGE_HTTP_PORT": "0",
        "CCBRIDGE_DRAIN_DELAY_S": "0",
        "CCBRIDGE_MEDIA_PROXY": "true",
        "CCBRIDGE_PUBLIC_URL": "http://placeholder.invalid",
        "CCBRIDGE_MEDIA_SECRET": SECRET,
        "INFOBIP_BASE_URL": sim.url,
        "INFOBIP_API_KEY": API_KEY,
    }
    running = await start(GatewaySettings.from_env(env))
    try:
        reader = EnvReader({**env, "CCBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{running.port}"})
        settings = MediaProxySettings.read(reader, signer=True)
        reader.done("test")
        yield MediaLinks(settings, sim.url)
    finally:
        await running.stop()


async def test_small_media_is_attached_large_is_linked(
    sim: Sim,
    make_adapter: Callable[..., RtAdapter],
    rt_http: httpx.AsyncClient,
) -> None:
    async with media_gateway(sim) as links:
        link = links.link(await _on_infobip(sim, PHOTO, "image/jpeg"))
        assert "/media/" in link
        conversation = f"c-{uuid.uuid4().hex}"
        adapter = make_adapter()
        opened = await adapter.open_case(_case(conversation))
        photo = _msg(
            conversation,
            "",
            content_type="IMAGE",
            content={"url": link, "caption": "the broken lid"},
        )
        txn = await adapter.post_customer_message(opened.external_id, conversation, photo, photo.id)
        small_limit = make_adapter(CCBRIDGE_RT_ATTACH_MAX_BYTES=str(len(PHOTO) - 1))
        big = _msg(conversation, "", content_type="DOCUMENT", content={"url": link})
        big_txn = await small_limit.post_customer_message(
            opened.external_id, conversation, big, big.id
        )
        gone = f"http://127.0.0.1:{closed_port()}/media/x"
        lost = _msg(conversation, "", content_type="VIDEO", content={"url": gone})
        lost_txn = await adapter.post_customer_message(
            opened.external_id, conversation, lost, lost.id
        )
    items = await _attachments(rt_http, txn)
    files = [i for i in items if i.get("Filename")]
    assert len(files) == 1
    assert files[0]["ContentType"] == "image/jpeg"
    name = str(files[0]["Filename"])
    assert name.startswith("image-") and name.endswith(".jpg")
    assert int(str(files[0]["ContentLength"])) == len(PHOTO)
    text = next(str(i["Content"]) for i in items if i.get("ContentType") == "text/plain")
    assert "[image]" in text and "the broken lid" in text and link in text
    big_items = await _attachments(rt_http, big_txn)
    assert not [i for i in big_items if i.get("Filename")]
    big_text = " ".join(str(i.get("Content", "")) for i in big_items)
    assert link in big_text and "not attached: larger than" in big_text
    lost_text = " ".join(str(i.get("Content", "")) for i in await _attachments(rt_http, lost_txn))
    assert gone in lost_text and "could not be downloaded" in lost_text


def test_every_content_family_reads_as_text() -> None:
    def text_of(kind: str, content: dict[str, object]) -> str:
        return message_text(
            common_pb2.Message(id="m1", content_type=kind, content_json=json.dumps(content))
        )

    assert text_of("TEXT", {"text": "hi"}) == "hi"
    assert text_of("LOCATION", {"latitude": 51.17, "longitude": -1.82, "address": "A"}) == (
        "[location] 51.17,-1.82 A"
    )
    assert "Ana Lima, +351 912" in text_of(
        "CONTACT",
        {"contacts": [{"name": {"formatted_name": "Ana Lima"}, "phones": [{"phone": "+351 912"}]}]},
    )
    assert text_of("RCS_FILE", {"file": {"url": "https://x/f.pdf"}}) == (
        "[rcs_file] https://x/f.pdf"
    )
    # A reply to buttons, a sticker, anything else: shown with its content, never dropped.
    reply = text_of("INTERACTIVE_BUTTON_REPLY", {"id": "yes-1", "title": "Yes"})
    assert reply.startswith("[interactive_button_reply]") and '"title":"Yes"' in reply
    assert "like_heart" in text_of("INSTAGRAM_STICKER", {"sticker": "like_heart"})
    assert text_of("EMAIL", {"subject": "Invoice", "contentText": "Attached."}) == (
        "[email] Invoice\nAttached."
    )
    assert text_of("EMAIL", {"contentHtml": "<p>Hi</p>"}) == "[email]\nHi"
    message = common_pb2.Message(id="m/1", content_type="DOCUMENT", content_json="{}")
    assert file_name(message, "", "application/pdf") == "document-m_1.pdf"
    assert file_name(message, 'attachment; filename="inv.pdf"', "application/pdf") == "inv.pdf"
    named = common_pb2.Message(content_type="DOCUMENT", content_json='{"filename": "../a.pdf"}')
    assert file_name(named, "", "application/pdf") == "_a.pdf"
