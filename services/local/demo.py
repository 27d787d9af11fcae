"""``ccbridge up --demo``: a whole handover, played against the two simulators, narrated
in the terminal so a newcomer can watch every step cross the mesh."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

GREEN, DIM, BOLD, RESET = "\033[32m", "\033[2m", "\033[1m", "\033[0m"


class _Clock:
    def __init__(self, pace_s: float) -> None:
        self.t0 = time.monotonic()
        self.pace_s = pace_s

    def say(self, who: str, text: str) -> None:
        print(
            f"{DIM}+{(time.monotonic() - self.t0) * 1000:8.0f} ms{RESET}  "
            f"{BOLD}{who:<10}{RESET} {text}",
            flush=True,
        )
        time.sleep(self.pace_s)  # a person is watching…
        self.t0 += self.pace_s  # …but the timestamps show only the bridge's time


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"demo: timed out waiting for {what}")


def play_demo(
    env: Mapping[str, str],
    infobip_port: int,
    ccaas_port: int,
    gateway_port: int,
    *,
    pace_s: float = 0.4,
) -> None:
    """Plays one handover from escalation to close."""
    infobip = httpx.Client(base_url=f"http://127.0.0.1:{infobip_port}", timeout=10)
    ccaas = httpx.Client(base_url=f"http://127.0.0.1:{ccaas_port}", timeout=10)
    gateway = httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", timeout=10)
    auth = {"Authorization": f"Bearer {env['CCBRIDGE_ESCALATION_TOKEN']}"}
    clock = _Clock(pace_s)
    try:
        print(f"\n{BOLD}Demo: a WhatsApp chat goes from the bot to a human agent and back{RESET}")
        conv = infobip.post(
            "/_sim/conversations",
            json={
                "history": 24,
                "channel": "WHATSAPP",
                "endUser": "385981234567",
                "businessSender": "447492263897",
                "tags": [],
            },
        ).json()
        cid = conv["id"]
        clock.say("infobip", f"conversation {cid} with 24 bot messages of history")

        answer = gateway.post(
            "/v1/escalations",
            headers=auth,
            json={"conversationId": cid, "tags": ["vip"], "metadata": {"language": "en"}},
        )
        clock.say(
            "chatbot", f"POST /v1/escalations → {answer.status_code} {answer.json().get('state')}"
        )

        def case() -> dict[str, Any] | None:
            found = ccaas.get("/_sim/cases", params={"conversationId": cid}).json()["cases"]
            return found[0] if found else None

        opened = _wait("the case to open", case)
        case_id = opened["caseId"]
        full = ccaas.get(f"/_sim/cases/{case_id}").json()
        routing = opened.get("routing") or {}
        clock.say(
            "ccaas",
            f"{GREEN}case {case_id} opened{RESET} (queue "
            f"{routing.get('queue') or '-'}, rule {routing.get('rule')}); "
            f"transcript of {len(full['transcript'])} messages",
        )
        case_id = opened["caseId"]
        for text in ("Hi, my parcel never arrived.", "Order 1234.", "Can a human help?"):
            sent = infobip.post(f"/_sim/conversations/{cid}/send", json={"text": text}).json()
            clock.say("end user", f"“{text}” → gateway {sent.get('webhook_status')}")
        _wait(
            "the messages at the CCaaS",
            lambda: (
                sum(
                    1
                    for m in ccaas.get(f"/_sim/cases/{case_id}").json()["messages"]
                    if m.get("from") == "customer"
                )
                >= 3
            ),
        )
        clock.say("ccaas", f"{GREEN}3 customer messages arrived, in order{RESET}")

        for text in ("Hello, I am Alice. Let me check.", "It ships today; tracking follows."):
            reply = ccaas.post(
                f"/_sim/cases/{case_id}/reply", json={"text": text, "agentName": "Alice"}
            ).json()
            clock.say("agent", f"“{text}” → bridge {reply.get('bridgeStatus')}")
        sent_back = _wait(
            "the agent replies at Infobip",
            lambda: (lambda msgs: msgs if len(msgs) >= 2 else None)(
                infobip.get(f"/_sim/conversations/{cid}/agent-messages").json().get("messages", [])
            ),
        )
        first = sent_back[0]
        clock.say(
            "infobip",
            f"{GREEN}Create Message ×{len(sent_back)}{RESET} "
            f"({first.get('channel')} from {first.get('from')} to "
            f"{first.get('to')})",
        )

        closed = ccaas.post(f"/_sim/cases/{case_id}/close", json={"reason": "resolved"}).json()
        clock.say("agent", f"closes the case → bridge {closed.get('bridgeStatus')}")
        _wait(
            "the Infobip conversation to close",
            lambda: infobip.get(f"/_sim/conversations/{cid}").json().get("status") == "CLOSED",
        )
        clock.say("infobip", f"{GREEN}conversation CLOSED{RESET}")
        state = _wait(
            "the handover to close",
            lambda: (lambda s: s if s == "CLOSED" else None)(
                gateway.get(f"/v1/handovers/{cid}", headers=auth).json().get("state")
            ),
        )
        clock.say("ccbridge", f"handover {state}; the next chat of this user starts with the bot")
        print(
            f"\n{BOLD}Done.{RESET} Try it yourself: the CCaaS simulator UI is at "
            f"http://127.0.0.1:{ccaas_port}/_sim/ui\n"
        )
    finally:
        infobip.close()
        ccaas.close()
        gateway.close()
