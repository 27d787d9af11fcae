"""Far-side drivers for the connector conformance suite: one class per connector, same
methods, so one test body checks every connector (open, relay in order,
duplicates, agent reply, close, outage and recovery).

A driver plays the contact center's agent and reads what the agent sees, through the
far side's own API only: the CCaaS simulator's control API for ``webhook``, Request
Tracker's REST2 API (as the bridge user to read, as ``agent1`` to act) for ``rt``.
"""

from __future__ import annotations

import abc
import base64
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.support.rt import RtPeer


@dataclass(frozen=True)
class TranscriptLine:
    """One transcript message as the agent sees it: UTC time to the second, who wrote
    it (``customer``, ``bot`` or ``agent``) and the text (media summarized)."""

    at: str  # "YYYY-MM-DD HH:MM:SS"
    role: str
    text: str


def infobip_line(message: dict[str, Any]) -> TranscriptLine:
    """What an Infobip message should look like in a transcript (for comparisons)."""
    at = datetime.fromisoformat(str(message["createdAt"]).replace("Z", "+00:00"))
    if message.get("direction") == "INBOUND":
        role = "customer"
    else:
        role = "agent" if str(message.get("authorType", "")).upper() == "AGENT" else "bot"
    content = message.get("content") or {}
    kind = str(message.get("contentType") or "TEXT").upper()
    if kind == "TEXT":
        text = str(content.get("text", ""))
    else:  # the adapters summarize media; the URL is what must survive
        text = str(content.get("url", ""))
    return TranscriptLine(at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), role, text)


def same_line(expected: TranscriptLine, seen: TranscriptLine) -> bool:
    """Equal for text; for media the summary must carry the URL."""
    if (expected.at, expected.role) != (seen.at, seen.role):
        return False
    if expected.text.startswith(("http://", "https://")):
        return expected.text in seen.text
    return expected.text == seen.text


class FarSideDriver(abc.ABC):
    """The contact center as a test sees it. ``case`` arguments are the far side's case
    id (the handover's ``externalId``)."""

    name: str  # the connector name (CCBRIDGE_CONNECTORS)
    bulk_messages: int  # customer messages of the ordering test (RT is slow per call)
    outage_messages: int  # messages sent while the far side is down
    probe_interval_s: float  # pause between two probes (keeps a slow far side free)
    timeout_s: float  # upper bound of one wait (never a timing assertion)
    can_go_down: bool = True
    can_send_location: bool  # whether an agent can send a map pin from this far side

    @abc.abstractmethod
    def find_case(self, conversation_id: str) -> str | None:
        """The case opened for the conversation, looked up at the far side."""

    @abc.abstractmethod
    def transcript(self, case: str) -> list[TranscriptLine]:
        """The transcript the case was opened with, oldest first."""

    @abc.abstractmethod
    def customer_messages(self, case: str) -> list[str]:
        """Texts of the end-user messages relayed onto the case, in the far side's order."""

    @abc.abstractmethod
    def agent_reply(self, case: str, text: str) -> None:
        """An agent answers the end user."""

    @abc.abstractmethod
    def agent_send_file(
        self, case: str, name: str, content_type: str, data: bytes, caption: str = ""
    ) -> None:
        """An agent sends a file (IMAGE if ``content_type`` starts with ``image/``, else
        DOCUMENT for the contract) to the end user through the far side's own UI/API."""

    def agent_send_location(
        self, case: str, latitude: float, longitude: float, name: str = ""
    ) -> None:
        """An agent sends a map pin; only where ``can_send_location`` (tests check it
        first and skip otherwise)."""
        raise AssertionError("no location on this far side")

    @abc.abstractmethod
    def customer_content(self, case: str) -> list[dict[str, Any]]:
        """What the agent sees of each end-user message on the case, in order:
        ``{"type": "TEXT"|"IMAGE"|"DOCUMENT"|"LOCATION"|"CONTACT"|…, "text": the text,
        caption or summary as shown, "file": the file's bytes where the far side holds the
        file itself (an RT attachment) else None, "url": a link the agent can open (the
        gateway's /media/{token} link) else None}``."""

    @abc.abstractmethod
    def agent_close(self, case: str) -> None:
        """An agent closes (resolves) the case."""

    @abc.abstractmethod
    def is_closed(self, case: str) -> bool:
        """Whether the far side shows the case closed."""

    @abc.abstractmethod
    def take_down(self) -> None:
        """The far side stops answering the bridge."""

    @abc.abstractmethod
    def bring_back(self) -> None:
        """The far side answers again (same address, same data)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the driver's clients."""


class WebhookDriver(FarSideDriver):
    """The generic ``webhook`` connector against the CCaaS simulator
    (docs/connectors/webhook.md, "Trying it with the CCaaS simulator")."""

    name = "webhook"
    bulk_messages = 100
    outage_messages = 20
    probe_interval_s = 0.05
    timeout_s = 60.0
    can_send_location = True

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def _case(self, case: str) -> dict[str, Any]:
        response = self.http.get(f"/_sim/cases/{case}")
        response.raise_for_status()
        return dict(response.json())

    def find_case(self, conversation_id: str) -> str | None:
        cases = self.http.get("/_sim/cases", params={"conversationId": conversation_id})
        found = cases.json()["cases"]
        return str(found[0]["caseId"]) if found else None

    def transcript(self, case: str) -> list[TranscriptLine]:
        return [infobip_line(m) for m in self._case(case)["transcript"]]

    def customer_messages(self, case: str) -> list[str]:
        return [
            str(m["content"].get("text", ""))
            for m in self._case(case)["messages"]
            if m.get("from") == "customer"
        ]

    def agent_reply(self, case: str, text: str) -> None:
        self._agent_message(case, {"text": text})

    def _agent_message(self, case: str, message: dict[str, Any]) -> None:
        answer = self.http.post(f"/_sim/cases/{case}/reply", json={**message, "agentName": "Alice"})
        answer.raise_for_status()
        assert answer.json()["bridgeStatus"] == 200, answer.text

    def agent_send_file(
        self, case: str, name: str, content_type: str, data: bytes, caption: str = ""
    ) -> None:
        # The CCaaS serves the file; the contract's attachment carries its URL.
        stored = self.http.post("/_sim/files", content=data, headers={"content-type": content_type})
        stored.raise_for_status()
        kind = "IMAGE" if content_type.startswith("image/") else "DOCUMENT"
        attachment = {"url": stored.json()["url"], "contentType": kind, "name": name}
        self._agent_message(
            case, {"attachments": [{**attachment, **({"caption": caption} if caption else {})}]}
        )

    def agent_send_location(
        self, case: str, latitude: float, longitude: float, name: str = ""
    ) -> None:
        pin: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        self._agent_message(case, {"location": {**pin, **({"name": name} if name else {})}})

    def customer_content(self, case: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        for m in self._case(case)["messages"]:
            if m.get("from") != "customer":
                continue
            content = dict(m.get("content") or {})
            kind = str(m.get("contentType") or "TEXT")
            url = content.get("url") if isinstance(content.get("url"), str) else None
            if kind == "TEXT":
                shown = str(content.get("text", ""))
            elif url is not None:
                shown = str(content.get("caption") or "")
            else:  # the contract delivers the content object itself; the UI shows its fields
                shown = json.dumps(content, ensure_ascii=False)
            seen.append({"type": kind, "text": shown, "file": None, "url": url})
        return seen

    def agent_close(self, case: str) -> None:
        answer = self.http.post(f"/_sim/cases/{case}/close", json={"reason": "resolved"})
        answer.raise_for_status()
        assert answer.json()["bridgeStatus"] == 200, answer.text

    def is_closed(self, case: str) -> bool:
        return bool(self._case(case)["status"] == "closed")

    def take_down(self) -> None:
        self.http.post("/_sim/down").raise_for_status()

    def bring_back(self) -> None:
        self.http.post("/_sim/up").raise_for_status()

    def close(self) -> None:
        self.http.close()


_TRANSCRIPT_LINE = re.compile(r"^\[([^\]]*)\] (customer|bot|agent): (.*)$")


def read_transcript(lines: Iterable[str], seen: list[TranscriptLine]) -> None:
    """Appends the bridge's ``[time] role: text`` transcript lines to ``seen``; an indented
    line continues the last one (also across transcript parts)."""
    for line in lines:
        match = _TRANSCRIPT_LINE.match(line)
        if match:
            seen.append(TranscriptLine(match[1], match[2], match[3]))
        elif line.startswith("    ") and seen:  # a continuation of a multi-line text
            last = seen[-1]
            seen[-1] = TranscriptLine(last.at, last.role, f"{last.text}\n{line[4:]}")


INACTIVE = frozenset({"resolved", "rejected", "deleted"})


class RtDriver(FarSideDriver):
    """Request Tracker 5 over REST2 (docs/connectors/rt.md): the case is a ticket whose
    custom field holds the conversation id; the transcript is the ticket's first message;
    customer messages are correspondence by the bridge user carrying a ``(ccb:…)``
    marker; an agent (``agent1``) replies in HTML and resolves the ticket."""

    name = "rt"
    bulk_messages = 30
    outage_messages = 10
    probe_interval_s = 0.5
    timeout_s = 120.0
    can_send_location = False  # RT has no location concept

    def __init__(
        self,
        peer: RtPeer,
        *,
        queue: str = "Chat Handover",
        conversation_field: str = "Infobip Conversation",
    ) -> None:
        self.peer = peer
        self.queue = queue
        self.conversation_field = conversation_field
        self.can_go_down = peer.managed  # an RT this session did not start is left alone
        self.bridge = httpx.Client(
            base_url=peer.rest2, timeout=30, headers={"Authorization": f"token {peer.bridge_token}"}
        )
        self.agent = httpx.Client(
            base_url=peer.rest2, timeout=30, headers={"Authorization": f"token {peer.agent_token}"}
        )

    @staticmethod
    def _items(response: httpx.Response) -> list[dict[str, Any]]:
        response.raise_for_status()
        return [dict(item) for item in response.json()["items"]]

    def _transactions(self, query: str, fields: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = 0
        while True:  # transaction searches have no totals: page by id
            page = self._items(
                self.bridge.get(
                    "/transactions",
                    params={
                        "query": f"{query} AND id > {after}",
                        "orderby": "id",
                        "order": "ASC",
                        "per_page": 100,
                        "fields": fields,
                    },
                )
            )
            found.extend(page)
            if len(page) < 100:
                return found
            after = max(int(item["id"]) for item in page)

    def find_case(self, conversation_id: str) -> str | None:
        query = (
            f"Queue = '{self.queue}' AND 'CF.{{{self.conversation_field}}}' = '{conversation_id}'"
        )
        items = self._items(
            self.bridge.get(
                "/tickets",
                params={
                    "query": query,
                    "orderby": "id",
                    "order": "ASC",
                    "per_page": 10,
                },
            )
        )
        assert len(items) <= 1, f"{len(items)} tickets for conversation {conversation_id}"
        return str(items[0]["id"]) if items else None

    def transcript(self, case: str) -> list[TranscriptLine]:
        create = self._transactions(
            f"ObjectType = 'RT::Ticket' AND ObjectId = {int(case)} AND Type = 'Create'", "Type"
        )
        assert len(create) == 1, create
        parts = self._items(
            self.bridge.get(
                f"/transaction/{create[0]['id']}/attachments",
                params={"fields": "ContentType,Content", "per_page": 100},
            )
        )
        body = "".join(
            str(p.get("Content") or "")
            for p in parts
            if str(p.get("ContentType", "")).lower() == "text/plain"
        )
        _, marker, lines = body.partition("Transcript (times UTC, oldest first)")
        assert marker, "the ticket's first message has no transcript"
        seen: list[TranscriptLine] = []
        read_transcript(lines.split("\n")[1:], seen)  # [1:]: the rest of the heading line
        return seen

    def _customer_posts(self, case: str) -> list[tuple[int, list[dict[str, Any]]]]:
        """The bridge's customer posts on the ticket, in order, each with its attachments
        (text parts and files)."""
        posts = self._transactions(
            f"ObjectType = 'RT::Ticket' AND ObjectId = {int(case)} AND Type = 'Correspond' "
            f"AND Creator = '{self.peer.bridge_user}'",
            "Data",
        )
        order = [int(p["id"]) for p in posts if "(ccb:" in str(p.get("Data", ""))]
        parts: dict[int, list[dict[str, Any]]] = {txn: [] for txn in order}
        page = 1
        while True:  # one listing of the ticket's attachments instead of one call per post
            items = self._items(
                self.bridge.get(
                    f"/ticket/{int(case)}/attachments",
                    params={
                        "fields": "TransactionId,ContentType,Content,Filename",
                        "per_page": 100,
                        "page": page,
                    },
                )
            )
            for item in items:
                txn = int(item.get("TransactionId") or 0)
                if txn in parts:
                    parts[txn].append(item)
            if len(items) < 100:
                break
            page += 1
        return [(txn, parts[txn]) for txn in order]

    @staticmethod
    def _post_text(txn: int, items: list[dict[str, Any]]) -> str:
        for item in items:
            if (
                not item.get("Filename")
                and str(item.get("ContentType", "")).lower() == "text/plain"
            ):
                return str(item.get("Content") or "").rstrip("\n")
        return f"<no text in transaction {txn}>"

    def customer_messages(self, case: str) -> list[str]:
        return [self._post_text(txn, items) for txn, items in self._customer_posts(case)]

    def customer_content(self, case: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        for txn, items in self._customer_posts(case):
            text = self._post_text(txn, items)
            # The adapter writes every type but TEXT as "[<type>] …" (docs/connectors/rt.md).
            kind = re.match(r"\[([a-z0-9_]+)\]", text)
            files = [i for i in items if i.get("Filename")]
            data = None
            if files:
                assert len(files) == 1, files
                # The listing's Content is not binary-safe; one attachment is base64.
                one = self.bridge.get(f"/attachment/{int(files[0]['id'])}")
                one.raise_for_status()
                data = base64.b64decode(one.json()["Content"])
            link = re.search(r"https?://\S+", text)
            seen.append(
                {
                    "type": kind[1].upper() if kind else "TEXT",
                    "text": text,
                    "file": data,
                    "url": link[0] if link else None,
                }
            )
        return seen

    def agent_reply(self, case: str, text: str) -> None:
        # What RT's rich-text editor sends.
        answer = self.agent.post(
            f"/ticket/{int(case)}/correspond",
            json={
                "Content": f"<p>{html.escape(text)}</p>",
                "ContentType": "text/html",
            },
        )
        assert answer.status_code == 201, answer.text

    def agent_send_file(
        self, case: str, name: str, content_type: str, data: bytes, caption: str = ""
    ) -> None:
        # A reply with a file attached, as RT's reply form sends it (no text: NoContent).
        body: dict[str, Any] = {
            "Attachments": [
                {
                    "FileName": name,
                    "FileType": content_type,
                    "FileContent": base64.b64encode(data).decode(),
                }
            ]
        }
        if caption:
            body.update(Content=caption, ContentType="text/plain")
        answer = self.agent.post(f"/ticket/{int(case)}/correspond", json=body)
        assert answer.status_code == 201, answer.text

    def _status(self, case: str) -> str:
        response = self.bridge.get(f"/ticket/{int(case)}")
        response.raise_for_status()
        return str(response.json()["Status"])

    def agent_close(self, case: str) -> None:
        answer = self.agent.put(f"/ticket/{int(case)}", json={"Status": "resolved"})
        assert answer.status_code == 200, answer.text
        assert self._status(case) == "resolved", answer.text  # 200 even when refused

    def is_closed(self, case: str) -> bool:
        return self._status(case) in INACTIVE

    def take_down(self) -> None:
        self.peer.stop()

    def bring_back(self) -> None:
        self.peer.start()

    def close(self) -> None:
        self.bridge.close()
        self.agent.close()


_NOTICE = "ccbridge.notice"


class GenesysDriver(FarSideDriver):
    """Genesys Cloud Open Messaging (docs/connectors/genesys.md) against the Genesys
    simulator: the case is the end user's Open Messaging identity (``channel.from.id``);
    the transcript is the conversation's first inbound messages (``[time] role: text``
    lines, message ids ``<conversation>:transcript:<n>``); customer messages are the
    other inbound messages; the agent (Alice) replies, sends files and disconnects
    through the simulator's control API, which signs and POSTs Genesys's outbound
    notifications. Every request the bridge sent must fit the SDK's models (the
    simulator refuses any that does not, and ``close`` checks none was refused)."""

    name = "genesys"
    bulk_messages = 100
    outage_messages = 20
    probe_interval_s = 0.05
    timeout_s = 60.0
    can_send_location = False  # Open Messaging's content has no location

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def _conversation(self, case: str) -> dict[str, Any]:
        """The case's latest Genesys conversation, with its messages."""
        found = self.http.get("/_sim/conversations", params={"fromId": case}).json()
        assert found["conversations"], f"no Genesys conversation for {case!r}"
        latest = found["conversations"][-1]["id"]
        response = self.http.get(f"/_sim/conversations/{latest}")
        response.raise_for_status()
        return dict(response.json())

    def find_case(self, conversation_id: str) -> str | None:
        found = self.http.get("/_sim/conversations", params={"conversationId": conversation_id})
        conversations = found.json()["conversations"]
        assert len(conversations) <= 1, conversations
        return str(conversations[0]["fromId"]) if conversations else None

    def transcript(self, case: str) -> list[TranscriptLine]:
        seen: list[TranscriptLine] = []
        parts = [
            m
            for m in self._conversation(case)["messages"]
            if ":transcript:" in str(m.get("messageId", ""))
        ]
        assert parts, "the conversation has no transcript messages"
        for part in parts:
            heading, _, body = str(part["text"]).partition("\n")
            assert heading.startswith("Transcript (times UTC, oldest first)"), heading
            read_transcript(body.split("\n"), seen)
        return seen

    def _customer(self, case: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self._conversation(case)["messages"]
            if m["direction"] == "Inbound"
            and ":transcript:" not in str(m.get("messageId", ""))
            and not (m.get("metadata") or {}).get(_NOTICE)
        ]

    def customer_messages(self, case: str) -> list[str]:
        return [str(m["text"]) for m in self._customer(case)]

    def customer_content(self, case: str) -> list[dict[str, Any]]:
        seen = []
        for m in self._customer(case):
            text = str(m["text"])
            kind = re.match(r"\[([a-z0-9_]+)\]", text)
            urls = [
                str(item["attachment"]["url"])
                for item in m.get("content") or []
                if isinstance(item.get("attachment"), dict)
            ]
            seen.append(
                {
                    "type": kind[1].upper() if kind else "TEXT",
                    "text": text,
                    "file": None,
                    "url": urls[0] if urls else None,
                }
            )
        return seen

    def _act(self, case: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        conversation = self._conversation(case)["id"]
        answer = self.http.post(f"/_sim/conversations/{conversation}/{action}", json=body)
        answer.raise_for_status()
        return dict(answer.json())

    def agent_reply(self, case: str, text: str) -> None:
        answer = self._act(case, "reply", {"text": text})
        assert answer["bridgeStatus"] == 200, answer

    def agent_send_file(
        self, case: str, name: str, content_type: str, data: bytes, caption: str = ""
    ) -> None:
        stored = self.http.post("/_sim/files", content=data, headers={"content-type": content_type})
        stored.raise_for_status()
        file = stored.json()
        attachment = {
            "url": file["url"],
            "mediaType": file["mediaType"],
            "mime": content_type,
            "filename": name,
        }
        answer = self._act(case, "reply", {"text": caption, "attachments": [attachment]})
        assert answer["bridgeStatus"] == 200, answer

    def agent_close(self, case: str) -> None:
        self._act(case, "disconnect", {})

    def is_closed(self, case: str) -> bool:
        return bool(self._conversation(case)["state"] == "ended")

    def take_down(self) -> None:
        self.http.post("/_sim/down").raise_for_status()

    def bring_back(self) -> None:
        self.http.post("/_sim/up").raise_for_status()

    def close(self) -> None:
        try:
            rejected = self.http.get("/_sim/rejected").json()["rejected"]
            assert not rejected, f"the simulator refused requests of the bridge: {rejected[:3]}"
        finally:
            self.http.close()


_ZENDESK_HEADING = re.compile(r"^Transcript part \d+/\d+ \(times UTC, oldest first\)$")
AGENT_WORKSPACE = "zd-agentWorkspace"


class ZendeskDriver(FarSideDriver):
    """Zendesk (Sunshine Conversations v2) against the Zendesk simulator
    (docs/connectors/zendesk.md): the case is a Sunshine conversation whose metadata
    names the Infobip conversation; the transcript is the bridge's ``Transcript part
    i/n`` messages; customer messages are the user's messages; the agent acts through
    the simulator's control API (Agent Workspace) and solving the ticket passes control
    back to the switchboard's default integration."""

    name = "zendesk"
    bulk_messages = 100
    outage_messages = 20
    probe_interval_s = 0.05
    timeout_s = 60.0
    can_send_location = True

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def _conversation(self, case: str) -> dict[str, Any]:
        response = self.http.get(f"/_sim/conversations/{case}")
        response.raise_for_status()
        return dict(response.json())

    def _user_messages(self, case: str) -> list[dict[str, Any]]:
        return [m for m in self._conversation(case)["messages"] if m["author"]["type"] == "user"]

    def find_case(self, conversation_id: str) -> str | None:
        found = self.http.get(
            "/_sim/conversations", params={"conversationId": conversation_id}
        ).json()["conversations"]
        assert len(found) <= 1, f"{len(found)} conversations for {conversation_id}"
        return str(found[0]["id"]) if found else None

    def transcript(self, case: str) -> list[TranscriptLine]:
        seen: list[TranscriptLine] = []
        for message in self._conversation(case)["messages"]:
            if (message.get("metadata") or {}).get("ccbridge_kind") != "transcript":
                continue
            lines = str(message["content"]["text"]).split("\n")
            start = next(i for i, line in enumerate(lines) if _ZENDESK_HEADING.match(line))
            read_transcript(lines[start + 1 :], seen)
        return seen

    def customer_messages(self, case: str) -> list[str]:
        return [
            str(m["content"].get("text") or m["content"].get("mediaUrl") or "")
            for m in self._user_messages(case)
        ]

    def customer_content(self, case: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        for m in self._user_messages(case):
            content = m["content"]
            kind = str((m.get("metadata") or {}).get("ccbridge_content_type") or "TEXT")
            if content["type"] == "location":
                place = content.get("location") or {}
                where = f"{content['coordinates']['lat']},{content['coordinates']['long']}"
                shown = " ".join(
                    str(p) for p in (where, place.get("name"), place.get("address")) if p
                )
            else:
                shown = str(content.get("text") or "")
            url = content.get("mediaUrl") if content["type"] in ("image", "file") else None
            seen.append({"type": kind, "text": shown, "file": None, "url": url})
        return seen

    def _agent(self, case: str, body: dict[str, Any]) -> None:
        answer = self.http.post(
            f"/_sim/conversations/{case}/agent", json={**body, "agentName": "Alice"}
        )
        answer.raise_for_status()
        assert answer.json()["bridgeStatus"] == 200, answer.text

    def agent_reply(self, case: str, text: str) -> None:
        self._agent(case, {"text": text})

    def agent_send_file(
        self, case: str, name: str, content_type: str, data: bytes, caption: str = ""
    ) -> None:
        file: dict[str, Any] = {
            "name": name,
            "contentType": content_type,
            "data": base64.b64encode(data).decode(),
        }
        self._agent(case, {"file": {**file, **({"text": caption} if caption else {})}})

    def agent_send_location(
        self, case: str, latitude: float, longitude: float, name: str = ""
    ) -> None:
        pin: dict[str, Any] = {"lat": latitude, "long": longitude}
        self._agent(case, {"location": {**pin, **({"name": name} if name else {})}})

    def agent_close(self, case: str) -> None:
        answer = self.http.post(f"/_sim/conversations/{case}/pass-back", json={})
        answer.raise_for_status()
        assert answer.json()["bridgeStatus"] == 200, answer.text

    def is_closed(self, case: str) -> bool:
        active = self._conversation(case).get("activeSwitchboardIntegration") or {}
        return bool(active.get("name") != AGENT_WORKSPACE)

    def take_down(self) -> None:
        self.http.post("/_sim/down").raise_for_status()

    def bring_back(self) -> None:
        self.http.post("/_sim/up").raise_for_status()

    def close(self) -> None:
        self.http.close()
