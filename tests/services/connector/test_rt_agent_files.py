"""Files agents attach to RT replies, against a REAL Request Tracker 5 and a real Redis:
the poll links each file (a signed gateway link naming the RT attachment), the adapter
streams it back from RT with its token (``agent_file``), and with the media proxy off the
agents are told on the ticket, once, that the files were not sent.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.adapters.rt import RtAdapter, infobip_kind, is_file
from ccbridge.services.connector.base import AgentMessage, CaseEvent
from ccbridge.services.runtime.errors import FarSideError, NotFound, OutOfRange
from ccbridge.services.runtime.media import ConnectorFile, verify
from ccbridge.services.runtime.settings import Secret
from tests.services.connector.test_rt_adapter import _case, _history, _mine, _poll_all

pytestmark = pytest.mark.rt

SECRET = "media-secret-0123456789abcdef"
PUBLIC = "https://bridge.example.com"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # binary, ~100 KiB
PDF = b"%PDF-1.4\n" + b"\x00\xff" * 1000
MEDIA_ON = {
    "CCBRIDGE_MEDIA_PROXY": "true",
    "CCBRIDGE_PUBLIC_URL": PUBLIC,
    "CCBRIDGE_MEDIA_SECRET": SECRET,
}


def _file(name: str, kind: str, data: bytes) -> dict[str, str]:
    return {"FileName": name, "FileType": kind, "FileContent": base64.b64encode(data).decode()}


async def _reply(agent: httpx.AsyncClient, ticket: str, body: dict[str, Any]) -> str:
    answer = await agent.post(f"/ticket/{ticket}/correspond", json=body)
    assert answer.status_code == 201, answer.text
    return answer.headers["location"].rsplit("/", 1)[1]


async def _read(adapter: RtAdapter, ref: str) -> tuple[str, int | None, str, bytes]:
    async with adapter.agent_file(ref) as found:
        data = b"".join([chunk async for chunk in found.chunks])
        return found.content_type, found.content_length, found.name, data


def _ref(attachment: common_pb2.Attachment) -> str:
    assert attachment.url.startswith(PUBLIC + "/media/")
    target = verify([Secret(SECRET)], attachment.url.rsplit("/", 1)[1])
    assert isinstance(target, ConnectorFile) and target.connector == "rt"
    return target.ref


def test_what_is_a_file_and_how_it_is_sent() -> None:
    assert [infobip_kind(t) for t in ("image/png", "video/mp4", "audio/ogg", "text/csv")] == [
        "IMAGE",
        "VIDEO",
        "AUDIO",
        "DOCUMENT",
    ]
    assert infobip_kind("application/pdf") == "DOCUMENT"
    # The reply's body, MIME containers and the empty body part RT adds to a reply without
    # text are not files; anything named, or not text and not empty, is.
    assert not is_file("text/plain", "", 5) and not is_file("text/html", "", None)
    assert not is_file("multipart/mixed", "", 0) and not is_file("", "", 3)
    assert not is_file("application/octet-stream", "", 0)
    assert is_file("text/plain", "notes.txt", 9) and is_file("image/png", "", None)


async def test_reply_files_are_linked_in_order_and_stream_back_from_rt(
    make_adapter: Callable[..., RtAdapter], agent: httpx.AsyncClient
) -> None:
    adapter = make_adapter(**MEDIA_ON)
    ticket = (await adapter.open_case(_case(f"c-{uuid.uuid4().hex}"))).external_id
    reply = await _reply(
        agent,
        ticket,
        {
            "Content": "<p>Here is your <b>label</b> and the invoice.</p>",
            "ContentType": "text/html",
            "Attachments": [
                _file("label.png", "image/png", PNG),
                _file("invoice.pdf", "application/pdf", PDF),
            ],
        },
    )
    only_file = await _reply(agent, ticket, {"Attachments": [_file("a b.png", "image/png", PNG)]})
    events: list[CaseEvent] = _mine(await _poll_all(adapter), ticket)
    assert [type(e) for e in events] == [AgentMessage, AgentMessage]
    first, second = events
    assert isinstance(first, AgentMessage) and isinstance(second, AgentMessage)
    assert first.event_id == f"rt-txn-{reply}"
    assert first.text == "Here is your label and the invoice."  # no "[attachment: …]" text
    assert [(a.content_type, a.name) for a in first.attachments] == [
        ("IMAGE", "label.png"),
        ("DOCUMENT", "invoice.pdf"),
    ]
    assert second.text == "" and [a.name for a in second.attachments] == ["a b.png"]
    refs = [_ref(a) for a in (*first.attachments, *second.attachments)]
    assert [r.split("/")[0] for r in refs] == [reply, reply, only_file]

    # RT sends its files chunked: the length is not announced.
    assert await _read(adapter, refs[0]) == ("image/png", None, "label.png", PNG)
    assert await _read(adapter, refs[1]) == ("application/pdf", None, "invoice.pdf", PDF)
    assert (await _read(adapter, refs[2]))[3] == PNG

    # Only files of the transaction they name; never the reply's body; nothing else.
    file_id = refs[0].split("/")[1]
    with pytest.raises(NotFound):
        await _read(adapter, f"{only_file}/{file_id}")
    with pytest.raises(NotFound):
        await _read(adapter, f"{reply}/{int(file_id) - 1}")  # a part of the message body
    for bad in ("x/1", "../1", "1", ""):
        with pytest.raises(NotFound):
            await _read(adapter, bad)
    # A transaction RT no longer has (shredded): RT 5.0.3 answers 500, a far-side failure.
    with pytest.raises(FarSideError):
        await _read(adapter, "999999999/1")
    # Above CCBRIDGE_MEDIA_MAX_BYTES: refused for good.
    capped = make_adapter(**MEDIA_ON, CCBRIDGE_MEDIA_MAX_BYTES=str(len(PNG) - 1))
    with pytest.raises(OutOfRange):
        await _read(capped, refs[0])


async def test_with_the_media_proxy_off_the_text_goes_and_the_ticket_is_told(
    make_adapter: Callable[..., RtAdapter],
    agent: httpx.AsyncClient,
    bridge_http: httpx.AsyncClient,
) -> None:
    adapter = make_adapter()  # no CCBRIDGE_MEDIA_PROXY
    ticket = (await adapter.open_case(_case(f"c-{uuid.uuid4().hex}"))).external_id
    reply = await _reply(
        agent,
        ticket,
        {
            "Content": "Label attached.",
            "ContentType": "text/plain",
            "Attachments": [_file("label.png", "image/png", PNG)],
        },
    )
    only_file = await _reply(
        agent, ticket, {"Attachments": [_file("b.pdf", "application/pdf", PDF)]}
    )
    # A poll that is not committed comes again: the ticket is still told only once.
    await adapter.poll()
    events = _mine(await _poll_all(adapter), ticket)
    assert events == [
        AgentMessage(
            external_id=ticket,
            event_id=f"rt-txn-{reply}",
            message_id=f"rt-txn-{reply}",
            text="Label attached.",
            agent_name="agent1",
        )
    ]
    comments = [t for t in await _history(bridge_http, ticket) if t["Type"] == "Comment"]
    assert len(comments) == 2, comments
    bodies = []
    for comment in comments:
        answer = await bridge_http.get(
            f"/transaction/{comment['id']}/attachments", params={"fields": "ContentType,Content"}
        )
        answer.raise_for_status()
        bodies.append(answer.json()["items"][0]["Content"])
    assert "NOT sent" in bodies[0] and "label.png" in bodies[0] and f"rt-txn-{reply}" in bodies[0]
    assert "CCBRIDGE_MEDIA_PROXY" in bodies[0]
    assert "b.pdf" in bodies[1] and f"rt-txn-{only_file}" in bodies[1]
    assert _mine(await _poll_all(adapter), ticket) == []  # the comments are not replies
