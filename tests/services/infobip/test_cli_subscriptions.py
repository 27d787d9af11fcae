"""``ccbridge infobip subscribe`` and ``infobip subscriptions list|show|delete`` against
the Infobip simulator served on loopback HTTP (the CLI runs as an operator runs it)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import pytest

from ccbridge.services.infobip import cli as cli_infobip
from tests.simulators.ccaas.support import serve_app
from tests.simulators.infobip.harness import API_KEY, Receiver, Sim, served_sim

SECRET = "hmac-secret-0123456789abcdef"
NEW_SECRET = "hmac-secret-rotated-0123456789"
USER, PASSWORD = "infobip", "basic-password-0123456789"
EVENTS_URL = "https://gw.example.com/webhooks/infobip/events"


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sim]:
    async with served_sim() as served:
        assert served.url is not None
        monkeypatch.setenv("INFOBIP_BASE_URL", served.url)
        monkeypatch.setenv("INFOBIP_API_KEY", API_KEY)
        monkeypatch.setenv("INFOBIP_WEBHOOK_SECRET", SECRET)
        monkeypatch.setenv("INFOBIP_WEBHOOK_BASIC_USER", USER)
        monkeypatch.setenv("INFOBIP_WEBHOOK_BASIC_PASSWORD", PASSWORD)
        monkeypatch.delenv("INFOBIP_WEBHOOK_HMAC_ALGORITHM", raising=False)
        yield served


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli_infobip.main, ["infobip", *argv])
    captured = capsys.readouterr()
    for secret in (SECRET, NEW_SECRET, PASSWORD, API_KEY):
        assert secret not in captured.out + captured.err
    return code, captured.out, captured.err


async def subscribe(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code, out, err = await cli(capsys, "subscribe", "--url", EVENTS_URL, "--json", *argv)
    assert code == 0, err
    answer: dict[str, object] = json.loads(out)
    return answer


async def test_create_hmac_then_rerun_is_unchanged(
    sim: Sim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFOBIP_WEBHOOK_HMAC_ALGORITHM", "HMAC_SHA_512")
    created = await subscribe(capsys)
    assert created["action"] == "created" and created["warnings"] == []
    stored = sim.state.subscriptions["ccbridge"]
    assert (stored.security_type, stored.secret, stored.algorithm) == (
        "HMAC",
        SECRET,
        "HMAC_SHA_512",
    )
    assert stored.notify_url == EVENTS_URL
    assert stored.events == ["CONVERSATION_MESSAGE_RECEIVED", "CONVERSATION_STATUS_UPDATED"]
    again = await subscribe(capsys)
    assert again["action"] == "unchanged"
    assert again["subscription"] == created["subscription"]
    assert len(sim.state.subscriptions) == len(sim.state.profiles) == 1
    # Human-readable by default.
    code, out, _ = await cli(capsys, "subscribe", "--url", EVENTS_URL)
    assert code == 0 and out.startswith("unchanged: subscription ccbridge (ccbridge)")
    assert f"url:      {EVENTS_URL}" in out


async def test_create_basic(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    created = await subscribe(capsys, "--auth", "basic", "--subscription-id", "cc-basic")
    assert created["action"] == "created"
    stored = sim.state.subscriptions["cc-basic"]
    assert (stored.security_type, stored.username, stored.password) == ("BASIC", USER, PASSWORD)
    assert (await subscribe(capsys, "--auth", "basic", "--subscription-id", "cc-basic"))[
        "action"
    ] == "unchanged"


async def test_signed_events_reach_the_url_per_the_profile(
    sim: Sim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFOBIP_WEBHOOK_HMAC_ALGORITHM", "HMAC_SHA_384")
    sim.state.sender.hmac_header = "X-Infobip-Signature"
    sim.state.sender.hmac_encoding = "base64"
    receiver = Receiver()
    async with serve_app(receiver.app()) as receiver_url:
        url = f"{receiver_url}/webhooks/infobip/events"
        code, _, err = await cli(capsys, "subscribe", "--url", url)
        assert code == 0, err
        conversation = sim.state.create_conversation(history=1)
        await sim.state.sender.post_all(
            sim.state.end_user_message(conversation.id, "TEXT", {"text": "hi"})[1]
        )
    [(_, headers, raw)] = receiver.requests
    digest = hmac.new(SECRET.encode(), raw, hashlib.sha384).digest()
    assert headers["x-infobip-signature"] == "sha384=" + base64.b64encode(digest).decode()


async def test_changes_are_applied_and_force_replaces_the_credentials(
    sim: Sim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await subscribe(capsys)
    [first_profile] = sim.state.profiles
    # Name and events: the same profile, updated in place (PUT).
    updated = await subscribe(capsys, "--name", "bridge", "--events", "CONVERSATION_CREATED")
    assert updated["action"] == "updated"
    stored = sim.state.subscriptions["ccbridge"]
    assert (stored.name, stored.events) == ("bridge", ["CONVERSATION_CREATED"])
    assert list(sim.state.profiles) == [first_profile]
    # A new URL: a new profile, the subscription moved to it, the old one deleted.
    moved = await cli(
        capsys,
        "subscribe",
        "--url",
        EVENTS_URL.replace("gw.", "gw2."),
        "--name",
        "bridge",
        "--events",
        "CONVERSATION_CREATED",
    )
    assert moved[0] == 0 and moved[1].startswith("replaced profile:")
    assert sim.state.subscriptions["ccbridge"].notify_url == EVENTS_URL.replace("gw.", "gw2.")
    assert first_profile not in sim.state.profiles and len(sim.state.profiles) == 1
    assert len(sim.state.security) == 1
    # A rotated secret cannot be seen at Infobip: unchanged, unless --force.
    monkeypatch.setenv("INFOBIP_WEBHOOK_SECRET", f"{NEW_SECRET},{SECRET}")
    args = ("--url", EVENTS_URL.replace("gw.", "gw2."), "--name", "bridge")
    args += ("--events", "CONVERSATION_CREATED")
    assert (await subscribe(capsys, *args))["action"] == "unchanged"
    assert sim.state.subscriptions["ccbridge"].secret == SECRET
    assert (await subscribe(capsys, *args, "--force"))["action"] == "replaced profile"
    assert sim.state.subscriptions["ccbridge"].secret == NEW_SECRET  # the first one signs
    # From HMAC to Basic: a new profile too.
    assert (await subscribe(capsys, *args, "--auth", "basic"))["action"] == "replaced profile"
    assert sim.state.subscriptions["ccbridge"].security_type == "BASIC"
    assert len(sim.state.profiles) == len(sim.state.security) == 1


async def test_list_show_delete(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "subscriptions", "list")
    assert code == 0 and out.strip() == "no CUSTOMER_ENGAGEMENT subscriptions"
    await subscribe(capsys, "--subscription-id", "one")
    await subscribe(capsys, "--subscription-id", "two", "--auth", "basic")
    code, out, _ = await cli(capsys, "subscriptions", "list")
    assert code == 0
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == ["one", "two"]
    code, out, _ = await cli(capsys, "subscriptions", "list", "--json")
    assert sorted(item["subscriptionId"] for item in json.loads(out)) == ["one", "two"]

    code, out, _ = await cli(capsys, "subscriptions", "show", "two", "--json")
    shown = json.loads(out)
    assert shown["profile"]["webhook"]["notifyUrl"] == EVENTS_URL
    assert shown["profile"]["security"]["authId"].startswith("two-basic-")
    code, out, _ = await cli(capsys, "subscriptions", "show", "two")
    assert code == 0 and out.startswith("subscription two (ccbridge)") and EVENTS_URL in out
    code, _, err = await cli(capsys, "subscriptions", "show", "nope")
    assert code == 1 and "NOT_FOUND" in err

    code, out, _ = await cli(capsys, "subscriptions", "delete", "one")
    assert code == 0 and out.strip() == "deleted subscription one"
    assert list(sim.state.subscriptions) == ["two"]
    assert [p for p in sim.state.profiles if p.startswith("one-")] == []
    assert [a for a in sim.state.security if a.startswith("one-")] == []
    code, out, _ = await cli(capsys, "subscriptions", "delete", "one")  # idempotent
    assert code == 0 and "nothing to delete" in out
    code, out, _ = await cli(capsys, "subscriptions", "delete", "two", "--keep-profile", "--json")
    assert json.loads(out)["action"] == "deleted"
    assert sim.state.subscriptions == {} and len(sim.state.profiles) == 1


async def test_another_subscription_to_the_same_url_is_warned_about(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    await subscribe(capsys, "--subscription-id", "old")
    code, _, err = await cli(capsys, "subscribe", "--url", EVENTS_URL)
    assert code == 0
    assert "subscription old also sends these events" in err


async def test_bad_input_and_settings(
    sim: Sim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = await cli(capsys, "subscribe", "--url", EVENTS_URL, "--subscription-id", "a b")
    assert code == 2 and "--subscription-id" in err
    monkeypatch.delenv("INFOBIP_WEBHOOK_BASIC_PASSWORD")
    code, _, err = await cli(capsys, "subscribe", "--url", EVENTS_URL, "--auth", "basic")
    assert code == 2 and "INFOBIP_WEBHOOK_BASIC_PASSWORD" in err
    monkeypatch.setenv("INFOBIP_WEBHOOK_HMAC_ALGORITHM", "SHA256")
    code, _, err = await cli(capsys, "subscribe", "--url", EVENTS_URL)
    assert code == 2 and "INFOBIP_WEBHOOK_HMAC_ALGORITHM" in err
    assert sim.state.subscriptions == {}
