"""Transcript normalization and history settings (pure code)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.services.history.settings import HistorySettings
from ccbridge.services.history.transcript import (
    TranscriptBuilder,
    page_size,
    parse_timestamp,
    to_message,
)
from ccbridge.services.runtime.settings import SettingsError


@pytest.mark.parametrize(
    "raw",
    [
        "2025-03-21T13:12:06.495+00:00",
        "2025-03-21T13:12:06.495+0000",
        "2025-03-21T13:12:06.495Z",
        "2025-03-21T15:12:06.495+02:00",
    ],
)
def test_timestamps_with_millis(raw: str) -> None:
    assert parse_timestamp(raw) == datetime(2025, 3, 21, 13, 12, 6, 495000, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "2025-03-21T13:12:06+00:00",
        "2025-03-21T13:12:06+0000",
        "2025-03-21T13:12:06Z",
        "2025-03-21T13:12:06",
    ],
)
def test_timestamps_without_millis(raw: str) -> None:
    assert parse_timestamp(raw) == datetime(2025, 3, 21, 13, 12, 6, tzinfo=UTC)


@pytest.mark.parametrize("raw", [None, "", "yesterday", True, {}])
def test_unparseable_timestamps(raw: object) -> None:
    assert parse_timestamp(raw) is None


def test_message_normalization_passes_unknown_values_through() -> None:
    message = to_message(
        {
            "id": "m1",
            "channel": "BRAND_NEW_CHANNEL",
            "from": "a",
            "to": "b",
            "direction": "SIDEWAYS",
            "authorType": "ROBOT",
            "contentType": "HOLOGRAM",
            "content": {"text": "žuto", "n": 1},
            "createdAt": "2025-01-01T00:00:00.000+0000",
            "singleSendMessage": {"whatever": True},
        },
        "c1",
    )
    assert message.channel == "BRAND_NEW_CHANNEL"
    assert message.content_type == "HOLOGRAM"
    assert message.author_type == "ROBOT"
    assert message.direction == common_pb2.DIRECTION_UNSPECIFIED
    assert message.conversation_id == "c1"
    assert json.loads(message.content_json) == {"text": "žuto", "n": 1}
    assert message.created_at.seconds == int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())


def test_message_without_content_or_timestamp() -> None:
    message = to_message({"id": "m1", "direction": "outbound", "createdAt": "garbage"}, "c1")
    assert message.content_json == "{}"
    assert message.direction == common_pb2.DIRECTION_OUTBOUND
    assert not message.HasField("created_at")


def test_page_size_is_fixed_per_transcript() -> None:
    assert page_size(1000) == 999
    assert page_size(10) == 10
    assert page_size(100_000) == 999


def test_builder_dedupes_and_orders_with_id_tie_break() -> None:
    builder = TranscriptBuilder("c1", cap=10)
    same = "2025-01-01T00:00:00.000+00:00"
    builder.add_page(
        {
            "messages": [
                {
                    "id": "b",
                    "direction": "INBOUND",
                    "createdAt": same,
                    "from": "u",
                    "to": "biz",
                    "channel": "SMS",
                },
                {"id": "a", "direction": "OUTBOUND", "createdAt": same},
                {"id": "c", "direction": "OUTBOUND", "createdAt": "2024-12-31T23:59:59Z"},
                {"direction": "INBOUND"},  # no id: skipped
            ],
            "pagination": {"totalItems": 3},
        }
    )
    builder.add_page({"messages": [{"id": "a", "createdAt": same}]})
    transcript = builder.build(more_available=False, tags=[], metadata={})
    assert [m.id for m in transcript.messages] == ["c", "a", "b"]
    assert not transcript.truncated and transcript.total_messages == 3
    assert (transcript.end_user, transcript.business_sender, transcript.channel) == (
        "u",
        "biz",
        "SMS",
    )
    assert transcript.pages_fetched == 2


def test_builder_without_inbound_uses_outbound_swapped() -> None:
    builder = TranscriptBuilder("c1", cap=10)
    builder.add_page(
        {
            "messages": [
                {
                    "id": "a",
                    "direction": "OUTBOUND",
                    "from": "biz",
                    "to": "user",
                    "channel": "VIBER",
                }
            ]
        }
    )
    transcript = builder.build(more_available=False, tags=[], metadata={})
    assert (transcript.end_user, transcript.business_sender, transcript.channel) == (
        "user",
        "biz",
        "VIBER",
    )


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        HistorySettings.from_env(
            {
                "CCBRIDGE_MESH_INSECURE": "true",
                "CCBRIDGE_HISTORY_LIMIT": "0",
                "INFOBIP_TIMEOUT_S": "x",
            }
        )
    text = str(caught.value)
    for key in (
        "INFOBIP_BASE_URL",
        "INFOBIP_API_KEY",
        "CCBRIDGE_HISTORY_LIMIT",
        "INFOBIP_TIMEOUT_S",
    ):
        assert key in text


def test_settings_defaults_and_secret_repr() -> None:
    settings = HistorySettings.from_env(
        {
            "CCBRIDGE_MESH_INSECURE": "true",
            "INFOBIP_BASE_URL": "https://x.api.infobip.com/",
            "INFOBIP_API_KEY": "very-secret",
        }
    )
    assert settings.history_limit == 1000 and settings.port == 50052
    assert settings.infobip_timeout_s == 10.0
    assert settings.infobip_base_url == "https://x.api.infobip.com"
    assert settings.address == "127.0.0.1:50052"
    assert "very-secret" not in repr(settings)
