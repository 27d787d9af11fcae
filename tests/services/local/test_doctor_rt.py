"""``ccbridge doctor``'s far-side check of the rt connector, against a real Request
Tracker 5 (tests/support/rt.py): the token, the queue, and what to fix when either is
wrong."""

from __future__ import annotations

import asyncio

import pytest

from ccbridge.services.connector.adapters.rt_settings import RtSettings
from ccbridge.services.local.doctor import Failed, _far_side
from tests.support.rt import RtPeer


def _settings(rt_peer: RtPeer, **extra: str) -> RtSettings:
    return RtSettings.from_env(
        {
            "CCBRIDGE_RT_URL": rt_peer.url,
            "CCBRIDGE_RT_TOKEN": rt_peer.bridge_token,
            "CCBRIDGE_RT_USER": rt_peer.bridge_user,
            **extra,
        }
    )


def test_rt_accepts_the_token_and_shows_the_queue(rt_peer: RtPeer) -> None:
    found = asyncio.run(_far_side("rt", _settings(rt_peer), 10.0))
    assert "accepts the token" in found and "'Chat Handover' is visible" in found


def test_a_wrong_token_and_a_missing_queue_say_what_to_fix(rt_peer: RtPeer) -> None:
    with pytest.raises(Failed) as refused:
        asyncio.run(
            _far_side("rt", _settings(rt_peer, CCBRIDGE_RT_TOKEN="1-14-0123456789abcdef"), 10.0)
        )
    assert "refused the token" in refused.value.detail and "CCBRIDGE_RT_TOKEN" in refused.value.fix
    with pytest.raises(Failed) as missing:
        asyncio.run(_far_side("rt", _settings(rt_peer, CCBRIDGE_RT_QUEUE="No Such Queue"), 10.0))
    assert "sees no queue 'No Such Queue'" in missing.value.detail
    assert "CCBRIDGE_RT_QUEUE" in missing.value.fix
