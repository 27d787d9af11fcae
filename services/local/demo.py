"""``ccbridge up --demo``: a whole handover, played against the two simulators, narrated
in the terminal so a newcomer can watch every step cross the mesh — text both ways and
one photo each way (the CCaaS simulator's page shows both)."""

from __future__ import annotations

import asyncio
import shlex
import struct
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ccbridge.services.local.console import styled
from ccbridge.services.runtime.http_client import HttpAnswer, HttpClient


def _codes() -> tuple[str, str, str, str]:
    """Green, dim, bold, reset: on a terminal only (never in a pipe or a log file)."""
    if styled(sys.stdout):
        return "\033[32m", "\033[2m", "\033[1m", "\033[0m"
    return "", "", "", ""


class _Clock:
    def __init__(self, pace_s: float) -> None:
        self.t0 = time.monotonic()
        self.pace_s = pace_s

    async def say(self, who: str, text: str) -> None:
        _, DIM, BOLD, RESET = _codes()
        print(
            f"{DIM}+{(time.monotonic() - self.t0) * 1000:8.0f} ms{RESET}  "
            f"{BOLD}{who:<10}{RESET} {text}",
            flush=True,
        )
        await asyncio.sleep(self.pace_s)  # a person is watching…
        self.t0 += self.pace_s  # …but the timestamps show only the bridge's time


def demo_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small real PNG (a colour fading to white from top to bottom), so the simulator's
    page has an actual picture to show."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00"  # filter type: none
        + bytes(c + (255 - c) * y // max(1, height - 1) for c in rgb) * width
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def _wait(what: str, probe: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise RuntimeError(f"demo: timed out waiting for {what}")


class _Side:
    """One side's HTTP API (a simulator's or the gateway's), answers read as JSON."""

    def __init__(self, port: int, headers: Mapping[str, str] | None = None) -> None:
        self.http = HttpClient(
            base_url=f"http://127.0.0.1:{port}",
            headers=headers,
            timeout_s=10,
            max_answer_bytes=16 << 20,
        )

    async def answer(
        self,
        method: str,
        path: str,
        json_body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        return await self.http.request(method, path, json_body=json_body, params=params)

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return (await self.answer("GET", path, params=params)).json()

    async def post(self, path: str, json_body: object) -> Any:
        return (await self.answer("POST", path, json_body)).json()

    async def upload(self, path: str, data: bytes, content_type: str) -> Any:
        answer = await self.http.request(
            "POST", path, body=data, headers={"content-type": content_type}
        )
        return answer.json()


async def play_demo(
    env: Mapping[str, str],
    infobip_port: int,
    ccaas_port: int,
    gateway_port: int,
    *,
    pace_s: float = 0.4,
) -> None:
    """Plays one handover from escalation to close."""
    infobip = _Side(infobip_port)
    ccaas = _Side(ccaas_port)
    auth = {"Authorization": f"Bearer {env['CCBRIDGE_ESCALATION_TOKEN']}"}
    gateway = _Side(gateway_port, headers=auth)
    clock = _Clock(pace_s)
    GREEN, _, BOLD, RESET = _codes()
    try:
        print(f"\n{BOLD}Demo: a WhatsApp chat goes from the bot to a human agent and back{RESET}")
        conv = await infobip.post(
            "/_sim/conversations",
            {
                "history": 24,
                "channel": "WHATSAPP",
                "endUser": "385981234567",
                "businessSender": "447492263897",
                "tags": [],
            },
        )
        cid = conv["id"]
        await clock.say("infobip", f"conversation {cid} with 24 bot messages of history")

        answer = await gateway.answer(
            "POST",
            "/v1/escalations",
            {"conversationId": cid, "tags": ["vip"], "metadata": {"language": "en"}},
        )
        escalated: Any = answer.json()
        await clock.say(
            "chatbot", f"POST /v1/escalations → {answer.status} {escalated.get('state')}"
        )

        async def case() -> dict[str, Any] | None:
            found = (await ccaas.get("/_sim/cases", params={"conversationId": cid}))["cases"]
            return found[0] if found else None

        opened = await _wait("the case to open", case)
        case_id = opened["caseId"]
        full = await ccaas.get(f"/_sim/cases/{case_id}")
        routing = opened.get("routing") or {}
        await clock.say(
            "ccaas",
            f"{GREEN}case {case_id} opened{RESET} (queue "
            f"{routing.get('queue') or '-'}, rule {routing.get('rule')}); "
            f"transcript of {len(full['transcript'])} messages",
        )
        for text in ("Hi, my parcel never arrived.", "Order 1234.", "Can a human help?"):
            sent = await infobip.post(f"/_sim/conversations/{cid}/send", {"text": text})
            await clock.say("end user", f"“{text}” → gateway {sent.get('webhook_status')}")

        async def customer_messages() -> bool:
            messages = (await ccaas.get(f"/_sim/cases/{case_id}"))["messages"]
            return sum(1 for m in messages if m.get("from") == "customer") >= 3

        await _wait("the messages at the CCaaS", customer_messages)
        await clock.say("ccaas", f"{GREEN}3 customer messages arrived, in order{RESET}")

        # One photo from the end user: stored at Infobip (its URL needs the API key), it
        # reaches the case as an IMAGE whose link opens through the gateway.
        stored = await infobip.upload("/_sim/media", demo_png(96, 64, (200, 60, 40)), "image/png")
        photo = {"url": stored["url"], "caption": "The box arrived torn"}
        sent = await infobip.post(
            f"/_sim/conversations/{cid}/send", {"contentType": "IMAGE", "content": photo}
        )
        await clock.say(
            "end user", f"a photo “{photo['caption']}” → gateway {sent.get('webhook_status')}"
        )

        async def customer_photo() -> str | None:
            messages = (await ccaas.get(f"/_sim/cases/{case_id}"))["messages"]
            found = [
                m["content"].get("url")
                for m in messages
                if m.get("from") == "customer" and m.get("contentType") == "IMAGE"
            ]
            return str(found[0]) if found else None

        photo_link = await _wait("the photo at the CCaaS", customer_photo)
        await clock.say("ccaas", f"{GREEN}IMAGE arrived{RESET}, link {photo_link}")

        for text in ("Hello, I am Alice. Let me check.", "It ships today; tracking follows."):
            reply = await ccaas.post(
                f"/_sim/cases/{case_id}/reply", {"text": text, "agentName": "Alice"}
            )
            await clock.say("agent", f"“{text}” → bridge {reply.get('bridgeStatus')}")

        async def agent_messages() -> list[dict[str, Any]] | None:
            found = await infobip.get(f"/_sim/conversations/{cid}/agent-messages")
            messages: list[dict[str, Any]] = found.get("messages", [])
            return messages if len(messages) >= 2 else None

        sent_back = await _wait("the agent replies at Infobip", agent_messages)
        first = sent_back[0]
        await clock.say(
            "infobip",
            f"{GREEN}Create Message ×{len(sent_back)}{RESET} "
            f"({first.get('channel')} from {first.get('from')} to "
            f"{first.get('to')})",
        )

        # One photo from the agent: the CCaaS serves the file, the bridge sends its URL.
        label = await ccaas.upload("/_sim/files", demo_png(96, 64, (40, 90, 200)), "image/png")
        reply = await ccaas.post(
            f"/_sim/cases/{case_id}/reply",
            {
                "agentName": "Alice",
                "attachments": [{"url": label["url"], "contentType": "IMAGE", "name": "label.png"}],
            },
        )
        await clock.say("agent", f"a photo (return label) → bridge {reply.get('bridgeStatus')}")

        async def agent_photo() -> str | None:
            found = await infobip.get(f"/_sim/conversations/{cid}/agent-messages")
            urls = [
                m["content"].get("url")
                for m in found.get("messages", [])
                if m.get("contentType") == "IMAGE"
            ]
            return str(urls[0]) if urls else None

        label_url = await _wait("the agent's photo at Infobip", agent_photo)
        await clock.say(
            "infobip", f"{GREEN}Create Message IMAGE{RESET} to the end user, {label_url}"
        )

        closed = await ccaas.post(f"/_sim/cases/{case_id}/close", {"reason": "resolved"})
        await clock.say("agent", f"closes the case → bridge {closed.get('bridgeStatus')}")

        async def conversation_closed() -> bool:
            found = await infobip.get(f"/_sim/conversations/{cid}")
            return bool(found.get("status") == "CLOSED")

        await _wait("the Infobip conversation to close", conversation_closed)
        await clock.say("infobip", f"{GREEN}conversation CLOSED{RESET}")

        async def handover_closed() -> str | None:
            state = (await gateway.get(f"/v1/handovers/{cid}")).get("state")
            return "CLOSED" if state == "CLOSED" else None

        state = await _wait("the handover to close", handover_closed)
        await clock.say(
            "ccbridge", f"handover {state}; the next chat of this user starts with the bot"
        )
        print(
            f"\n{BOLD}Done.{RESET} Try it yourself: the CCaaS simulator UI is at "
            f"http://127.0.0.1:{ccaas_port}/_sim/ui (case {case_id} shows both photos;\n"
            f"what reached the end user: http://127.0.0.1:{infobip_port}"
            f"/_sim/conversations/{cid}/agent-messages)\n"
        )
    finally:
        for side in (infobip, ccaas, gateway):
            await side.http.aclose()


def try_it_yourself(
    env: Mapping[str, str],
    ports: Mapping[str, int],
    infobip_port: int,
    ccaas_port: int,
    operator_env: Path,
) -> str:
    """The commands that play a handover by hand against this run, with the tokens it
    generated (each ``$ `` line runs as is in a POSIX shell, in this order)."""
    _, _, BOLD, RESET = _codes()
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    infobip = f"http://127.0.0.1:{infobip_port}"
    json_header = "-H 'Content-Type: application/json'"
    token = shlex.quote(f"Authorization: Bearer {env['CCBRIDGE_ESCALATION_TOKEN']}")
    return "\n".join(
        [
            f"\n{BOLD}Try it yourself{RESET} (this run's generated tokens; they change every run):",
            "  1. a conversation at the Infobip simulator (its id goes into CID):",
            f"    $ CID=$(curl -sS -X POST {infobip}/_sim/conversations {json_header} "
            """-d '{"history": 3}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')""",  # noqa: E501
            "  2. the chatbot hands it to an agent:",
            f"    $ curl -sS -X POST {gateway}/v1/escalations -H {token} {json_header} "
            '-d "{\\"conversationId\\": \\"$CID\\"}"',
            "  3. the end user writes:",
            f"    $ curl -sS -X POST {infobip}/_sim/conversations/$CID/send {json_header} "
            """-d '{"text": "Hello, is anyone there?"}'""",
            f"  4. answer as the agent: http://127.0.0.1:{ccaas_port}/_sim/ui",
            "  5. look at it as an operator, with this run's settings and operator certificate:",
            f"    $ set -a; . {shlex.quote(str(operator_env))}; set +a",
            "    $ ccbridge handovers list",
            "    $ ccbridge handovers get $CID",
            "    $ ccbridge dead-letters list",
            "  6. check the installation (the demo feeds the gateway through Infobip's account",
            "     webhook, not a subscription, hence the skip):",
            "    $ ccbridge doctor --skip subscription",
        ]
    )
