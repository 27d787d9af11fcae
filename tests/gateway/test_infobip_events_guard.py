"""The events route's guards: 401s counted and logged with header names only, the
event-age window, and a CLOSED event older than the handover."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.applications import Starlette

from ccbridge.gateway.settings import GatewaySettings
from ccbridge.services.runtime.settings import SettingsError
from ccbridge.session.v1 import session_pb2
from tests.gateway.conftest import (
    BASIC_PASSWORD,
    HMAC_SECRETS,
    Peers,
    assert_error,
    basic,
    running_gateway,
    sign_hex,
)
from tests.gateway.test_infobip_events import CONV, URL, fresh, inbound_event, post_signed
from tests.gateway.test_infobip_events import status_event as closed_event


def sample(app: Starlette, name: str, **labels: str) -> float:
    value = app.state.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


AUTH = "ccbridge_gateway_webhook_auth_failures_total"
REJECTED = "ccbridge_gateway_infobip_events_rejected_total"


async def test_401_is_counted_and_logged_with_header_names_only(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    body = orjson.dumps(inbound_event())
    wrong_signature = "sha256=" + sign_hex(body, "not-the-secret-0123456789")
    wrong_basic = basic(password="not-the-password-0123456789")
    caplog.set_level(logging.WARNING, logger="ccbridge.gateway.webhooks")
    async with running_gateway(peers.env()) as (client, app):
        cases = [
            ({"X-Hub-Signature-256": wrong_signature, "X-Request-Id": "r1"}, "bad_signature"),
            ({"Authorization": wrong_basic}, "bad_credentials"),
            ({"X-Some-Token": "tok-value-0123456789"}, "no_credentials"),
            ({}, "no_credentials"),
        ]
        for headers, _reason in cases:
            response = await client.post(
                URL, content=body, headers={"Content-Type": "application/json", **headers}
            )
            assert_error(response, 401, "unauthorized")
        assert sample(app, AUTH, route="infobip_events", reason="bad_signature") == 1
        assert sample(app, AUTH, route="infobip_events", reason="bad_credentials") == 1
        assert sample(app, AUTH, route="infobip_events", reason="no_credentials") == 2
    assert peers.session.calls == []
    refused = [r.getMessage() for r in caplog.records if "refused 401" in r.getMessage()]
    # One line per reason: the second no_credentials falls in the same 10 s window.
    assert len(refused) == 3
    assert any(line.endswith("present: x-hub-signature-256") for line in refused)
    assert any(line.endswith("present: authorization") for line in refused)
    assert any(line.endswith("present: x-some-token") for line in refused)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (
        wrong_signature,
        wrong_signature[7:],
        wrong_basic,
        wrong_basic[6:],
        "tok-value-0123456789",
        HMAC_SECRETS[0],
        BASIC_PASSWORD,
    ):
        assert secret not in logged


async def test_not_configured_401_is_counted(peers: Peers) -> None:
    env = peers.env(
        INFOBIP_WEBHOOK_SECRET="", INFOBIP_WEBHOOK_BASIC_USER="", INFOBIP_WEBHOOK_BASIC_PASSWORD=""
    )
    async with running_gateway(env) as (client, app):
        response = await post_signed(client, inbound_event())
        assert_error(response, 401, "webhook_auth_not_configured")
        assert sample(app, AUTH, route="infobip_events", reason="not_configured") == 1


async def test_events_older_than_the_window_are_rejected_counted_and_logged(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    peers.session.open(CONV)
    old_message = inbound_event("old-1")
    old_message["timestamp"] = fresh(seconds_ago=3601)
    old_close = closed_event("CLOSED")
    old_close["timestamp"] = fresh(seconds_ago=7200)
    young = inbound_event("young-1")
    young["timestamp"] = fresh(seconds_ago=3000)
    caplog.set_level(logging.WARNING, logger="ccbridge.gateway.webhooks")
    env = peers.env(CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S="3600")
    async with running_gateway(env) as (client, app):
        response = await post_signed(client, [old_message, young, old_close])
        assert response.status_code == 200, response.text
        assert response.json() == {
            "accepted": 1,
            "duplicates": 0,
            "ignored": 0,
            "closed": 0,
            "rejected": 2,
        }
        assert sample(app, REJECTED, reason="too_old") == 2
    ingested = [m.id for c in peers.session.rpc_calls("Ingest") for m in c.request.messages]
    assert ingested == ["young-1"]
    assert peers.session.rpc_calls("CloseHandover") == []
    assert peers.session.handovers[CONV].state == session_pb2.HANDOVER_STATE_ACTIVE
    assert any("INBOUND_MESSAGE is 36" in r.getMessage() for r in caplog.records)


async def test_a_missing_or_unreadable_timestamp_is_400(peers: Peers) -> None:
    async with running_gateway(peers.env()) as (client, _app):
        for value in (None, "", "yesterday", "2025-13-01T00:00:00Z"):
            event = inbound_event()
            if value is None:
                del event["timestamp"]
            else:
                event["timestamp"] = value
            response = await post_signed(client, event)
            assert_error(response, 400, "invalid_event")
            assert "timestamp" in response.json()["error"]["message"]
    assert peers.session.calls == []


async def test_closed_older_than_the_handover_never_closes_it(peers: Peers) -> None:
    peers.session.open(CONV)
    handover = peers.session.handovers[CONV]
    handover.created_at.FromJsonString(fresh(seconds_ago=60).replace("+00:00", "Z"))
    stale = closed_event("CLOSED")
    stale["timestamp"] = fresh(seconds_ago=120)  # the close of an earlier handover
    async with running_gateway(peers.env()) as (client, app):
        response = await post_signed(client, stale)
        assert response.json() == {
            "accepted": 0,
            "duplicates": 0,
            "ignored": 0,
            "closed": 0,
            "rejected": 1,
        }
        assert sample(app, REJECTED, reason="close_before_handover") == 1
        (call,) = peers.session.rpc_calls("CloseHandover")
        assert call.request.event_time.ToJsonString()[:19] == stale["timestamp"][:19]
        assert peers.session.handovers[CONV].state == session_pb2.HANDOVER_STATE_ACTIVE

        response = await post_signed(client, closed_event("CLOSED"))  # a current close
        assert response.json()["closed"] == 1
        assert peers.session.handovers[CONV].state == session_pb2.HANDOVER_STATE_CLOSING
        assert sample(app, REJECTED, reason="close_before_handover") == 1


def test_the_window_must_stay_below_the_dedupe_retention(peers: Peers) -> None:
    defaults = GatewaySettings.from_env(peers.env())
    assert defaults.event_max_age_s == 86400 < defaults.dedupe_ttl_s == 7 * 86400
    for env in (
        {"CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S": "604800"},
        {"CCBRIDGE_DEDUPE_TTL_S": "3600"},
        {"CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S": "7200", "CCBRIDGE_DEDUPE_TTL_S": "7200"},
    ):
        with pytest.raises(SettingsError) as caught:
            GatewaySettings.from_env(peers.env(**env))
        assert "CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S" in str(caught.value)
    ok = GatewaySettings.from_env(
        peers.env(CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S="7200", CCBRIDGE_DEDUPE_TTL_S="7201")
    )
    assert ok.event_max_age_s == 7200
