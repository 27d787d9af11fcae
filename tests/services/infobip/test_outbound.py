"""The per-channel mapping of agent replies (services/infobip/outbound.py) against
Infobip's published Create Message contract: every row of the table, every file type and
the location, on every channel the document lists, either yields bodies the contract
validator accepts or fails with a reason — never an invalid body."""

from __future__ import annotations

import orjson
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.infobip.outbound import (
    CHANNEL_SHAPES,
    FILE_TYPES,
    MAX_TEXT,
    Part,
    Unsupported,
    build_parts,
    reply_subject,
)
from ccbridge.simulators.infobip.contract import Contract
from tests.support.infobip_contract import published_contract

CREATE_MESSAGE = "/ccaas/1/conversations/c-1/messages"
URL = "https://files.example.com/a/b.bin"


def _contract() -> Contract:
    return published_contract()


def _channels() -> list[str]:
    return list(_contract().create_message_channels)


def _errors(channel: str, part: Part) -> dict[str, list[str]]:
    contract = _contract()
    matched = contract.match("POST", CREATE_MESSAGE)
    assert matched is not None
    op, params = matched
    body = {
        "channel": channel,
        "from": "sender",
        "to": "end-user",
        "contentType": part.content_type,
        "content": part.content,
    }
    return contract.request_errors(op, params, {}, body, has_body=True)


def _reply(
    text: str = "",
    attachments: list[common_pb2.Attachment] | None = None,
    location: common_pb2.Location | None = None,
) -> common_pb2.Message:
    return common_pb2.Message(
        id="m-1",
        content_type="TEXT",
        content_json=orjson.dumps({"text": text} if text else {}).decode(),
        attachments=attachments or [],
        location=location,
    )


def test_every_table_row_is_a_channel_of_the_document() -> None:
    assert set(CHANNEL_SHAPES) <= set(_channels())


@pytest.mark.parametrize("channel", sorted(set(_channels())))
@pytest.mark.parametrize("kind", [*FILE_TYPES, "LOCATION"])
@pytest.mark.parametrize("worded", [False, True])
def test_each_channel_and_type_yields_valid_bodies_or_a_reason(
    channel: str, kind: str, worded: bool
) -> None:
    if kind == "LOCATION":
        place = common_pb2.Location(
            latitude=45.8,
            longitude=15.97,
            name="Shop" if worded else "",
            address="Main St 1" if worded else "",
        )
        message = _reply(location=place)
        shape = CHANNEL_SHAPES.get(channel)
        supported = shape is not None and shape.location is not None
    else:
        attachment = common_pb2.Attachment(
            url=URL, content_type=kind, caption="see this" if worded else "", size=1500
        )
        message = _reply(attachments=[attachment])
        shape = CHANNEL_SHAPES.get(channel)
        supported = shape is not None and kind in shape.files
    if not supported:
        with pytest.raises(Unsupported, match=channel):
            build_parts(channel, message)
        return
    parts = build_parts(channel, message)
    for part in parts:
        assert _errors(channel, part) == {}, (channel, part)
    # The agent's words reach the end user once, unchanged, whatever the shape.
    words = orjson.dumps([p.content for p in parts]).decode()
    if worded and kind == "LOCATION":
        assert "Shop" in words and "Main St 1" in words
    elif worded:
        assert words.count("see this") == 1


def test_order_is_text_then_attachments_in_order_then_location() -> None:
    message = _reply(
        "hello",
        [
            common_pb2.Attachment(url=URL + "1", content_type="IMAGE"),
            common_pb2.Attachment(url=URL + "2", content_type="DOCUMENT"),
        ],
        common_pb2.Location(latitude=1.5, longitude=2.5, name="Here"),
    )
    parts = build_parts("WHATSAPP", message)
    assert [(p.content_type, p.content) for p in parts] == [
        ("TEXT", {"text": "hello"}),
        ("IMAGE", {"url": URL + "1"}),
        ("DOCUMENT", {"url": URL + "2"}),
        ("LOCATION", {"latitude": 1.5, "longitude": 2.5, "locationName": "Here"}),
    ]
    for part in parts:
        assert _errors("WHATSAPP", part) == {}


def test_a_caption_the_shape_cannot_carry_follows_as_text() -> None:
    image = common_pb2.Attachment(url=URL, content_type="IMAGE", caption="the label")
    assert [(p.content_type, p.content) for p in build_parts("WHATSAPP", _reply("", [image]))] == [
        ("IMAGE", {"url": URL}),
        ("TEXT", {"text": "the label"}),
    ]
    assert [(p.content_type, p.content) for p in build_parts("TELEGRAM", _reply("", [image]))] == [
        ("IMAGE", {"url": URL, "caption": "the label"})
    ]


def test_one_unsupported_part_fails_the_whole_reply_before_anything() -> None:
    message = _reply(
        "text first", [common_pb2.Attachment(url=URL, content_type="AUDIO", name="a.mp3")]
    )
    with pytest.raises(Unsupported, match="LIVE_CHAT cannot take AUDIO"):
        build_parts("LIVE_CHAT", message)


def test_viber_bot_video_needs_its_size() -> None:
    video = common_pb2.Attachment(url=URL, content_type="VIDEO")
    with pytest.raises(Unsupported, match="size"):
        build_parts("VIBER_BOT", _reply("", [video]))
    video.size = 2048
    (part,) = build_parts("VIBER_BOT", _reply("", [video]))
    assert (part.content_type, part.content) == ("VIBER_BOT_VIDEO", {"url": URL, "size": "2048"})


def test_long_text_is_split_at_the_limit_and_nothing_else_changes() -> None:
    text = "x" * MAX_TEXT + "tail"
    parts = build_parts("SMS", _reply(text))
    assert [p.content["text"] for p in parts] == ["x" * MAX_TEXT, "tail"]


def test_email_replies_are_email_content_in_the_thread() -> None:
    (part,) = build_parts(
        "EMAIL",
        _reply("Your refund is on its way."),
        end_user="ann@example.com",
        email_subject="Broken kettle",
    )
    assert part.content_type == "EMAIL"
    assert part.content == {
        "toAddresses": ["ann@example.com"],
        "ccAddresses": [],
        "bccAddresses": [],
        "subject": "Re: Broken kettle",
        "contentText": "Your refund is on its way.",
    }
    assert _errors("EMAIL", part) == {}
    assert reply_subject("RE: Broken kettle") == "RE: Broken kettle"


def test_the_name_prefix_goes_before_the_text_only() -> None:
    parts = build_parts("SMS", _reply("hi"), name_prefix="Ann: ")
    assert [p.content for p in parts] == [{"text": "Ann: hi"}]


def test_a_reply_with_nothing_to_send_is_refused() -> None:
    with pytest.raises(Unsupported, match="nothing to send"):
        build_parts("SMS", _reply(""))


def test_the_validator_refuses_shapes_the_examples_do_not_show() -> None:
    # Why the table is strict: a string caption on DOCUMENT, an RCS_FILE without its
    # thumbnail and a VIBER_BOT_VIDEO without its size are not the documented shapes.
    assert _errors("LIVE_CHAT", Part("DOCUMENT", {"url": URL, "caption": "x"}))
    assert _errors("RCS", Part("RCS_FILE", {"file": {"url": URL}}))
    assert _errors("VIBER_BOT", Part("VIBER_BOT_VIDEO", {"url": URL}))
