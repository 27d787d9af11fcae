"""The one plain-text rendering of a handover (services/connector/case_text.py) that the
RT, Zendesk and Genesys connectors share: context lines and transcript lines."""

from __future__ import annotations

import json
from dataclasses import replace

from google.protobuf.timestamp_pb2 import Timestamp

from ccbridge.common.v1 import common_pb2
from ccbridge.services.connector.base import CaseToOpen
from ccbridge.services.connector.case_text import case_fields, transcript_lines

_CASE = CaseToOpen(
    conversation_id="c-1",
    channel="WHATSAPP",
    end_user="4915112345678",
    queue="Billing",
    priority=2,
    skills=("billing", "de"),
    rule="vip",
    tags=("vip", "new"),
    metadata={"plan": "gold", "language": "de"},
    transcript=[],
    transcript_truncated=False,
    idempotency_key="k",
)


def test_case_fields_name_every_field_in_order() -> None:
    assert case_fields(_CASE) == [
        "Conversation: c-1",
        "Channel: WHATSAPP",
        "Customer: 4915112345678",
        "Queue: Billing",
        "Routing rule: vip",
        "Skills: billing, de",
        "Priority: 2",
        "Tags: vip, new",
        "Metadata: language=de; plan=gold",
    ]


def test_case_fields_leave_out_empty_fields_and_the_queue_on_request() -> None:
    bare = replace(_CASE, queue="", priority=0, skills=(), rule="", tags=(), metadata={})
    assert case_fields(bare) == [
        "Conversation: c-1",
        "Channel: WHATSAPP",
        "Customer: 4915112345678",
    ]
    assert "Queue: Billing" not in case_fields(_CASE, queue=False)
    assert len(case_fields(_CASE, queue=False)) == len(case_fields(_CASE)) - 1


def _message(
    direction: common_pb2.Direction.ValueType, author: str, content_type: str, content: object
) -> common_pb2.Message:
    return common_pb2.Message(
        id="m",
        direction=direction,
        author_type=author,
        content_type=content_type,
        content_json=json.dumps(content),
        created_at=Timestamp(seconds=1_700_000_000),
    )


def test_transcript_lines_role_time_and_media_summary() -> None:
    inbound, outbound = common_pb2.DIRECTION_INBOUND, common_pb2.DIRECTION_OUTBOUND
    transcript = [
        _message(inbound, "CUSTOMER", "TEXT", {"text": "Hello\nsecond line"}),
        _message(outbound, "BOT", "TEXT", {"text": "Hi"}),
        _message(outbound, "AGENT", "TEXT", {"text": "Agent here"}),
        _message(inbound, "CUSTOMER", "IMAGE", {"url": "https://x.test/a.png", "caption": "c"}),
    ]
    transcript.append(common_pb2.Message(id="n", direction=inbound, content_type="TEXT"))
    assert transcript_lines(transcript) == [
        "[2023-11-14 22:13:20] customer: Hello",
        "    second line",
        "[2023-11-14 22:13:20] bot: Hi",
        "[2023-11-14 22:13:20] agent: Agent here",
        "[2023-11-14 22:13:20] customer: [image] https://x.test/a.png c",
        "[?] customer: [text]",
    ]
