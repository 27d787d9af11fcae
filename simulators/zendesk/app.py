"""The Zendesk simulator: Sunshine Conversations v2 as ccbridge's ``zendesk`` connector
uses it (docs/connectors/zendesk.md), held to Zendesk's published OpenAPI document, with
a control API under ``/_sim/`` and a page showing the agent's view (``/_sim/ui``).

Every request under ``/v2/`` is authenticated (basic auth with the app's key: 401
``unauthorized`` otherwise), then validated against the document
(:mod:`ccbridge.simulators.zendesk.contract`): a request the document does not allow is
answered ``400 bad_request`` and recorded as a violation (``GET /_sim/violations``; the
tests fail on any); the simulator's own answers are checked against the schema of their
status too. Answers use the documented shapes and error codes (404
``conversation_not_found``/``user_not_found``/``app_not_found``, 409 ``conflict``, 423
``locked``); ``/_sim/rate-limit`` makes the next requests answer 429 (the document names
no header for it; the simulator sends ``Retry-After``, unconfirmed for the real service).

Webhooks are sent as the document describes: ``{"app", "webhook", "events": [...]}``
POSTed to each webhook whose triggers name the event, with the webhook's secret in the
``X-API-Key`` header, retried up to 5 times (compressed from 15 minutes to seconds)
except after 400/401/403/404/406; in order, one at a time. With the switchboard, an
integration that is not in control gets message events only when its switchboard
integration has ``deliverStandbyEvents``. Every event is validated against its published
schema before it goes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.simulators import agent_ui
from ccbridge.simulators.json_response import JsonResponse
from ccbridge.simulators.zendesk.contract import Contract, ContractViolation

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 30_000  # "Conversations are limited to 30,000 messages."
MESSAGES_PAGE = 100  # "The page size limit is fixed at 100 messages per page."
MAX_JSON_BYTES = 100 * 1024  # "JSON: 100kb"
MAX_FILE_BYTES = 50 * 1024 * 1024
WEBHOOK_ATTEMPTS = 5
NON_RECOVERABLE = frozenset({400, 401, 403, 404, 406})
AGENT_WORKSPACE = "zd-agentWorkspace"
_UI_HTML = Path(__file__).with_name("ui.html")


def new_id() -> str:
    """A 24-hex record id (the document's cursors are 24-character record ids)."""
    return secrets.token_hex(12)


def now_iso() -> str:
    moment = datetime.now(tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def errors(
    status: int, code: str, title: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The documented error shape: ``{"errors": [{"code", "title"}]}``."""
    return JsonResponse(
        {"errors": [{"code": code, "title": title}]},
        status_code=status,
        headers=dict(headers or {}),
    )


@dataclass
class Conversation:
    id: str
    user_id: str
    metadata: dict[str, Any]
    display_name: str
    created: str
    active: str | None  # name of the switchboard integration in control
    is_default: bool
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Sim:
    """The simulator's state (one app)."""

    app_id: str
    key_id: str
    key_secret: str
    webhook_secret: str  # given to the next webhook created
    contract: Contract
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    integrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    switchboard: dict[str, Any] = field(default_factory=dict)
    switchboard_integrations: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    rate_limited: int = 0
    retry_after_s: int = 1
    webhook_retry_s: float = 0.2

    def __post_init__(self) -> None:
        agent = {
            "id": new_id(),
            "name": AGENT_WORKSPACE,
            "integrationId": new_id(),
            "integrationType": "zd:agentWorkspace",
            "deliverStandbyEvents": False,
            "nextSwitchboardIntegrationId": None,
            "messageHistoryCount": 10,
        }
        bot = {
            "id": new_id(),
            "name": "zd-answerBot",
            "integrationId": new_id(),
            "integrationType": "zd:answerBot",
            "deliverStandbyEvents": False,
            "nextSwitchboardIntegrationId": agent["id"],
            "messageHistoryCount": None,
        }
        self.switchboard_integrations = [agent, bot]
        self.switchboard = {
            "id": new_id(),
            "enabled": True,
            "defaultSwitchboardIntegrationId": bot["id"],
        }

    # -- lookups --------------------------------------------------------------------------
    def user(self, key: str) -> dict[str, Any] | None:
        found = self.users.get(key)
        if found is not None:
            return found
        return next((u for u in self.users.values() if u.get("externalId") == key), None)

    def sb_integration(self, ref: str) -> dict[str, Any] | None:
        """By id, name, or integrationType, in that order (passControlBody)."""
        for field_ in ("id", "name", "integrationType"):
            found = [i for i in self.switchboard_integrations if i.get(field_) == ref]
            if len(found) == 1:
                return found[0]
        return None

    def sb_webhook(self, name: str | None) -> dict[str, Any] | None:
        item = next((i for i in self.switchboard_integrations if i["name"] == name), None)
        if item is None:
            return None
        return {k: item[k] for k in ("id", "name", "integrationId", "integrationType")}

    def conversation_truncated(self, conv: Conversation) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": conv.id, "type": "personal", "metadata": conv.metadata}
        active = self.sb_webhook(conv.active)
        if active is not None:
            doc["activeSwitchboardIntegration"] = active
        return doc

    def conversation_json(self, conv: Conversation) -> dict[str, Any]:
        last = conv.messages[-1]["received"] if conv.messages else conv.created
        return {
            **self.conversation_truncated(conv),
            "isDefault": conv.is_default,
            "displayName": conv.display_name,
            "description": None,
            "iconUrl": None,
            "businessLastRead": None,
            "lastUpdatedAt": last,
            "createdAt": conv.created,
        }


class Webhooks:
    """Sends events to the webhooks, one at a time and in order."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[int] | None]] = (
            asyncio.Queue()
        )
        self.http = HttpClient(timeout_s=20.0, max_answer_bytes=1 << 20)
        self.task: asyncio.Task[None] | None = None

    def _start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.http.aclose()

    def send(self, event: dict[str, Any]) -> asyncio.Future[int]:
        """Queues an event; the future gets the first target's last HTTP status (0: no
        webhook takes it, -1: no answer)."""
        try:
            self.sim.contract.check_event(event)
        except ContractViolation as exc:
            self.sim.violations.append(f"simulator webhook: {exc}")
        self._start()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((event, future))
        return future

    def _targets(self, event: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        conv = self.sim.conversations.get(str(event["payload"]["conversation"]["id"]))
        found = []
        for integration in self.sim.integrations.values():
            linked = next(
                (
                    s
                    for s in self.sim.switchboard_integrations
                    if s["integrationId"] == integration["id"]
                ),
                None,
            )
            if (
                event["type"].startswith("conversation:")
                and self.sim.switchboard.get("enabled")
                and linked is not None
                and conv is not None
                and conv.active != linked["name"]
                and not linked["deliverStandbyEvents"]
            ):
                continue
            for hook in integration.get("webhooks", []):
                if event["type"] in hook["triggers"]:
                    found.append((integration, hook))
        return found

    async def _run(self) -> None:
        while True:
            event, future = await self.queue.get()
            status = 0
            for number, (_, hook) in enumerate(self._targets(event)):
                answer = await self._deliver(event, hook)
                if number == 0:
                    status = answer
            if future is not None and not future.done():
                future.set_result(status)

    async def _deliver(self, event: dict[str, Any], hook: dict[str, Any]) -> int:
        body = orjson.dumps(
            {
                "app": {"id": self.sim.app_id},
                "webhook": {"id": hook["id"], "version": "v2"},
                "events": [event],
            }
        )
        status = -1
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                answer = await self.http.request(
                    "POST",
                    hook["target"],
                    body=body,
                    headers={"Content-Type": "application/json", "X-API-Key": hook["secret"]},
                )
                status = answer.status
            except HttpFailure as exc:
                status = -1
                log.info("webhook %s: no answer (%s)", event["type"], exc)
            self.sim.deliveries.append(
                {
                    "eventId": event["id"],
                    "type": event["type"],
                    "attempt": attempt + 1,
                    "status": status,
                }
            )
            if 200 <= status < 300 or status in NON_RECOVERABLE:
                return status
            await asyncio.sleep(self.sim.webhook_retry_s * 2**attempt)
        return status


def create_app(
    *,
    app_id: str,
    key_id: str,
    key_secret: str,
    webhook_secret: str | None = None,
    contract: Contract | None = None,
) -> Starlette:
    sim = Sim(
        app_id=app_id,
        key_id=key_id,
        key_secret=key_secret,
        webhook_secret=webhook_secret or secrets.token_hex(16),
        contract=contract or Contract(),
    )
    hooks = Webhooks(sim)

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), sim.key_id.encode()) & hmac.compare_digest(
            password.encode(), sim.key_secret.encode()
        )

    # -- the API ----------------------------------------------------------------------------

    async def api(request: Request) -> Response:
        if sim.down:
            return errors(503, "service_unavailable", "Service unavailable")
        if not authorized(request):
            return errors(401, "unauthorized", "Authorization is required")
        if sim.rate_limited > 0:
            sim.rate_limited -= 1
            return errors(
                429,
                "too_many_requests",
                "Too Many Requests",
                {"Retry-After": str(sim.retry_after_s)},
            )
        raw = await request.body()
        if len(raw) > MAX_JSON_BYTES:
            return errors(413, "payload_too_large", "Request entity too large")
        body: object = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                sim.violations.append(f"{request.method} {request.url.path}: body is not JSON")
                return errors(400, "bad_request", "Invalid JSON")
        path = request.url.path
        try:
            op = sim.contract.check_request(request.method, path, dict(request.query_params), body)
        except ContractViolation as exc:
            sim.violations.append(str(exc))
            log.warning("contract violation: %s", exc)
            return errors(400, "bad_request", str(exc)[:500])
        _, values = sim.contract.operation(request.method, path)
        params = dict(zip(_names(op.template), values, strict=True))
        if params.get("appId") != sim.app_id:
            return errors(404, "app_not_found", "App not found")
        handler = HANDLERS.get(op.operation_id)
        if handler is None:
            return errors(404, "not_found", f"{op.operation_id} is not simulated")
        doc = body if isinstance(body, dict) else {}
        answer = await handler(request, params, doc)
        try:  # the simulator holds itself to the document too
            sim.contract.check_answer(op, answer.status_code, orjson.loads(bytes(answer.body)))
        except ContractViolation as exc:
            sim.violations.append(f"simulator answer: {exc}")
        return answer

    async def get_user(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        user = sim.user(p["userIdOrExternalId"])
        if user is None:
            return errors(404, "user_not_found", "User not found")
        return JsonResponse({"user": user})

    async def create_user(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        external = body.get("externalId")
        if external and sim.user(str(external)) is not None:
            return errors(409, "conflict", "User already exists")
        user: dict[str, Any] = {
            "id": new_id(),
            "externalId": external,
            "signedUpAt": now_iso(),
            "toBeRetained": bool(body.get("toBeRetained", False)),
            "profile": body.get("profile") or {},
            "metadata": body.get("metadata") or {},
            "identities": [],
        }
        sim.users[str(user["id"])] = user
        return JsonResponse({"user": user}, status_code=201)

    async def list_conversations(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        q = request.query_params
        user = sim.user(q.get("filter[userId]") or q.get("filter[userExternalId]") or "")
        if user is None:
            return errors(404, "user_not_found", "User not found")
        mine = [c for c in sim.conversations.values() if c.user_id == user["id"]]
        size = int(q.get("page[size]") or 25)
        after = q.get("page[after]")
        if after:
            ids = [c.id for c in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        page, more = mine[:size], len(mine) > size
        meta: dict[str, Any] = {"hasMore": more}
        if more:
            meta["afterCursor"] = page[-1].id
        return JsonResponse(
            {"conversations": [sim.conversation_json(c) for c in page], "meta": meta, "links": {}}
        )

    async def create_conversation(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        participants = body.get("participants") or []
        if body.get("type") != "personal" or len(participants) != 1:
            return errors(400, "bad_request", "personal conversations need exactly 1 participant")
        ref = participants[0]
        user = sim.user(str(ref.get("userId") or ref.get("userExternalId") or ""))
        if user is None:
            return errors(404, "user_not_found", "User not found")
        default = next(
            (
                i["name"]
                for i in sim.switchboard_integrations
                if i["id"] == sim.switchboard.get("defaultSwitchboardIntegrationId")
            ),
            None,
        )
        conv = Conversation(
            id=new_id(),
            user_id=user["id"],
            metadata=dict(body.get("metadata") or {}),
            display_name=str(body.get("displayName") or ""),
            created=now_iso(),
            active=default,
            is_default=not any(c.user_id == user["id"] for c in sim.conversations.values()),
        )
        sim.conversations[conv.id] = conv
        return JsonResponse({"conversation": sim.conversation_json(conv)}, status_code=201)

    def conversation(p: dict[str, str]) -> Conversation | None:
        return sim.conversations.get(p["conversationId"])

    def not_found() -> Response:
        return errors(404, "conversation_not_found", "Conversation not found")

    async def get_conversation(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        return JsonResponse({"conversation": sim.conversation_json(conv)})

    async def list_participants(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        user = sim.users[conv.user_id]
        participant: dict[str, Any] = {
            "id": new_id(),
            "userId": conv.user_id,
            "unreadCount": 0,
            "clientAssociations": [],
            "userExternalId": user.get("externalId"),
            "lastRead": None,
        }
        return JsonResponse({"participants": [participant], "meta": {"hasMore": False}})

    def add_message(conv: Conversation, message: dict[str, Any]) -> dict[str, Any]:
        conv.messages.append(message)
        hooks.send(
            {
                "id": new_id(),
                "createdAt": now_iso(),
                "type": "conversation:message",
                "payload": {
                    "conversation": sim.conversation_truncated(conv),
                    "message": message,
                },
            }
        )
        return message

    async def post_message(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        if len(conv.messages) >= MESSAGE_LIMIT:
            return errors(
                423, "locked", f"Message limit of {MESSAGE_LIMIT} per conversation reached."
            )
        author = dict(body["author"])
        if author["type"] == "user":
            user = sim.user(str(author.get("userId") or author.pop("userExternalId", "") or ""))
            if user is None or user["id"] != conv.user_id:
                return errors(400, "bad_request", "The author is not a participant")
            author = {
                **author,
                "userId": user["id"],
                "user": {"id": user["id"], "externalId": user.get("externalId")},
            }
        content = dict(body["content"])
        if content["type"] in ("image", "file"):
            stored = sim.media.get(str(content["mediaUrl"]).rsplit("/", 1)[-1])
            if stored is not None:
                content.setdefault("mediaType", stored[0])
                content.setdefault("mediaSize", len(stored[1]))
        message = {
            "id": new_id(),
            "received": now_iso(),
            "author": author,
            "content": content,
            "source": {"type": "api"},
            "metadata": body.get("metadata"),
        }
        add_message(conv, message)
        return JsonResponse({"messages": [message]}, status_code=201)

    async def list_messages(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        conv = conversation(p)
        if conv is None:
            return errors(404, "not_found", "Resource not found")
        messages = conv.messages
        before = request.query_params.get("page[before]")
        if before:
            ids = [m["id"] for m in messages]
            messages = messages[: ids.index(before)] if before in ids else []
        page = messages[-MESSAGES_PAGE:]
        more = len(messages) > len(page)
        meta: dict[str, Any] = {"hasMore": more}
        if more:
            meta["beforeCursor"] = page[0]["id"]
        return JsonResponse({"messages": page, "meta": meta, "links": {}})

    def switch(
        conv: Conversation, kind: str, metadata: object, reason: str | None
    ) -> asyncio.Future[int]:
        payload: dict[str, Any] = {"conversation": sim.conversation_truncated(conv)}
        if metadata:
            payload["metadata"] = metadata
        if reason:
            payload["reason"] = reason
        return hooks.send(
            {"id": new_id(), "createdAt": now_iso(), "type": kind, "payload": payload}
        )

    async def pass_control(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        ref = str(body["switchboardIntegration"])
        if ref == "next":
            current = next(
                (i for i in sim.switchboard_integrations if i["name"] == conv.active), None
            )
            target = (
                next(
                    (
                        i
                        for i in sim.switchboard_integrations
                        if i["id"] == current["nextSwitchboardIntegrationId"]
                    ),
                    None,
                )
                if current
                else None
            )
        else:
            target = sim.sb_integration(ref)
        if target is None:
            return errors(400, "bad_request", "Switchboard invalid target")
        conv.active = target["name"]
        switch(conv, "switchboard:passControl", body.get("metadata"), None)
        return JsonResponse({})

    async def release_control(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        conv.active = None
        switch(conv, "switchboard:releaseControl", body.get("metadata"), None)
        return JsonResponse({})

    async def post_activity(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        conv = conversation(p)
        if conv is None:
            return not_found()
        if body["author"]["type"] == "user" and body["type"] != "conversation:read":
            return errors(400, "bad_request", "Only conversation:read is supported for users")
        return JsonResponse({})

    async def list_integrations(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        types = request.query_params.get("filter[types]")
        wanted = set(types.split(",")) if types else None
        found = [i for i in sim.integrations.values() if wanted is None or i["type"] in wanted]
        return JsonResponse({"integrations": found, "meta": {"hasMore": False}, "links": {}})

    def webhook(target: object, triggers: object, body: Mapping[str, Any]) -> dict[str, Any]:
        secret, sim.webhook_secret = sim.webhook_secret, secrets.token_hex(16)
        return {
            "id": new_id(),
            "version": "v2",
            "target": target,
            "triggers": list(triggers) if isinstance(triggers, list) else [],
            "secret": secret,
            "includeFullUser": bool(body.get("includeFullUser", False)),
            "includeFullSource": bool(body.get("includeFullSource", False)),
        }

    async def create_integration(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        if body.get("type") != "custom":
            return errors(400, "bad_request", "only custom integrations are simulated")
        hooks_ = body.get("webhooks")
        if not isinstance(hooks_, list) or len(hooks_) != 1 or not isinstance(hooks_[0], dict):
            return errors(400, "bad_request", "a custom integration needs exactly one webhook")
        item: dict[str, Any] = {
            "id": new_id(),
            "type": "custom",
            "status": "active",
            "displayName": body.get("displayName"),
            "webhooks": [webhook(hooks_[0].get("target"), hooks_[0].get("triggers"), hooks_[0])],
        }
        sim.integrations[item["id"]] = item
        return JsonResponse({"integration": item}, status_code=201)

    def integration(p: dict[str, str]) -> dict[str, Any] | None:
        return sim.integrations.get(p["integrationId"])

    async def list_webhooks(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        item = integration(p)
        if item is None:
            return errors(404, "integration_not_found", "Integration not found")
        return JsonResponse({"webhooks": item["webhooks"]})

    async def create_webhook(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        item = integration(p)
        if item is None:
            return errors(404, "integration_not_found", "Integration not found")
        hook = webhook(body["target"], body["triggers"], body)
        item["webhooks"].append(hook)
        return JsonResponse({"webhook": hook}, status_code=201)

    async def update_webhook(request: Request, p: dict[str, str], body: dict[str, Any]) -> Response:
        item = integration(p)
        hook = next(
            (h for h in (item or {}).get("webhooks", []) if h["id"] == p["webhookId"]), None
        )
        if hook is None:
            return errors(404, "webhook_not_found", "Webhook not found")
        for key in ("target", "triggers", "includeFullUser", "includeFullSource"):
            if key in body:
                hook[key] = body[key]
        return JsonResponse({"webhook": hook})

    async def list_switchboards(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        return JsonResponse({"switchboards": [sim.switchboard]})

    async def list_sb_integrations(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        if p["switchboardId"] != sim.switchboard["id"]:
            return errors(404, "switchboard_not_found", "Switchboard not found")
        return JsonResponse({"switchboardIntegrations": sim.switchboard_integrations})

    async def create_sb_integration(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        if p["switchboardId"] != sim.switchboard["id"]:
            return errors(404, "switchboard_not_found", "Switchboard not found")
        if any(i["name"] == body["name"] for i in sim.switchboard_integrations):
            return errors(409, "conflict", "A switchboard integration with this name exists")
        if body.get("integrationId") not in sim.integrations:
            return errors(400, "bad_request", "integrationId names no integration")
        item = {
            "id": new_id(),
            "name": body["name"],
            "integrationId": body["integrationId"],
            "integrationType": "custom",
            "deliverStandbyEvents": bool(body.get("deliverStandbyEvents", True)),
            "nextSwitchboardIntegrationId": body.get("nextSwitchboardIntegrationId"),
            "messageHistoryCount": body.get("messageHistoryCount"),
        }
        sim.switchboard_integrations.append(item)
        return JsonResponse({"switchboardIntegration": item}, status_code=201)

    async def update_sb_integration(
        request: Request, p: dict[str, str], body: dict[str, Any]
    ) -> Response:
        item = next(
            (i for i in sim.switchboard_integrations if i["id"] == p["switchboardIntegrationId"]),
            None,
        )
        if item is None:
            return errors(
                404, "switchboard_integration_not_found", "Switchboard integration not found"
            )
        item.update({k: v for k, v in body.items() if k in item})
        return JsonResponse({"switchboardIntegration": item})

    HANDLERS = {
        "GetUser": get_user,
        "CreateUser": create_user,
        "ListConversations": list_conversations,
        "CreateConversation": create_conversation,
        "GetConversation": get_conversation,
        "ListParticipants": list_participants,
        "PostMessage": post_message,
        "ListMessages": list_messages,
        "PassControl": pass_control,
        "ReleaseControl": release_control,
        "PostActivity": post_activity,
        "ListIntegrations": list_integrations,
        "CreateIntegration": create_integration,
        "ListWebhooks": list_webhooks,
        "CreateWebhook": create_webhook,
        "UpdateWebhook": update_webhook,
        "ListSwitchboards": list_switchboards,
        "ListSwitchboardIntegrations": list_sb_integrations,
        "CreateSwitchboardIntegration": create_sb_integration,
        "UpdateSwitchboardIntegration": update_sb_integration,
    }

    # -- the control API --------------------------------------------------------------------

    async def control_json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            doc = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        return doc

    async def status(request: Request) -> Response:
        return JsonResponse(
            {
                "down": sim.down,
                "appId": sim.app_id,
                "contract": sim.contract.version,
                "conversations": len(sim.conversations),
                "violations": len(sim.violations),
            }
        )

    async def violations(request: Request) -> Response:
        return JsonResponse({"violations": sim.violations})

    async def go_down(request: Request) -> Response:
        sim.down = True
        return JsonResponse({"down": True})

    async def come_up(request: Request) -> Response:
        sim.down = False
        return JsonResponse({"down": False})

    async def rate_limit(request: Request) -> Response:
        try:
            doc = await control_json(request)
        except ValueError as exc:
            return JsonResponse({"error": str(exc)}, status_code=400)
        count, after = doc.get("count", 1), doc.get("retryAfter", 1)
        if not isinstance(count, int) or not isinstance(after, int) or count < 0 or after < 0:
            return JsonResponse(
                {"error": "count and retryAfter are non-negative integers"}, status_code=400
            )
        sim.rate_limited, sim.retry_after_s = count, after
        return JsonResponse({"rateLimited": count, "retryAfter": after})

    def listing(conv: Conversation) -> dict[str, Any]:
        return {
            **sim.conversation_json(conv),
            "user": sim.users.get(conv.user_id),
            "messageCount": len(conv.messages),
        }

    async def list_sim_conversations(request: Request) -> Response:
        wanted = request.query_params.get("conversationId")
        found = [
            listing(c)
            for c in sim.conversations.values()
            if wanted is None or c.metadata.get("ccbridge_conversation_id") == wanted
        ]
        return JsonResponse({"conversations": found})

    async def get_sim_conversation(request: Request) -> Response:
        conv = sim.conversations.get(request.path_params["cid"])
        if conv is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        return JsonResponse({**listing(conv), "messages": conv.messages})

    async def agent_message(request: Request) -> Response:
        """An agent writes in Agent Workspace: ``{"text"}``, ``{"file": {"name",
        "contentType", "data" (base64), "text"?}}`` or ``{"location": {"lat", "long",
        "name"?, "address"?}}``, with ``agentName``."""
        conv = sim.conversations.get(request.path_params["cid"])
        if conv is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        try:
            doc = await control_json(request)
        except ValueError as exc:
            return JsonResponse({"error": str(exc)}, status_code=400)
        content: dict[str, Any]
        if isinstance(doc.get("text"), str) and doc["text"]:
            content = {"type": "text", "text": doc["text"]}
        elif isinstance(doc.get("file"), dict):
            f = doc["file"]
            try:
                data = base64.b64decode(str(f.get("data", "")), validate=True)
            except binascii.Error:
                return JsonResponse({"error": "file.data must be base64"}, status_code=400)
            mime = str(f.get("contentType") or "application/octet-stream")
            media_id = new_id()
            sim.media[media_id] = (mime, data)
            url = f"{str(request.base_url).rstrip('/')}/_sim/media/{media_id}"
            content = {
                "type": "image" if mime.startswith("image/") else "file",
                "mediaUrl": url,
                "mediaType": mime,
                "mediaSize": len(data),
                "altText": str(f.get("name") or "")[:128],
            }
            if f.get("text"):
                content["text"] = str(f["text"])
        elif isinstance(doc.get("location"), dict):
            loc = doc["location"]
            content = {
                "type": "location",
                "coordinates": {"lat": loc.get("lat"), "long": loc.get("long")},
            }
            place = {k: loc[k] for k in ("name", "address") if loc.get(k)}
            if place:
                content["location"] = place
        else:
            return JsonResponse({"error": "text, file or location is required"}, status_code=400)
        message = {
            "id": new_id(),
            "received": now_iso(),
            "author": {
                "type": "business",
                "subtypes": ["agent"],
                "displayName": str(doc.get("agentName") or "Agent"),
            },
            "content": content,
            "source": {"type": "zd:agentWorkspace"},
        }
        conv.messages.append(message)
        future = hooks.send(
            {
                "id": new_id(),
                "createdAt": now_iso(),
                "type": "conversation:message",
                "payload": {"conversation": sim.conversation_truncated(conv), "message": message},
            }
        )
        return JsonResponse({"message": message, "bridgeStatus": await future})

    async def agent_typing(request: Request) -> Response:
        conv = sim.conversations.get(request.path_params["cid"])
        if conv is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        doc = await control_json(request)
        future = hooks.send(
            {
                "id": new_id(),
                "createdAt": now_iso(),
                "type": "conversation:typing",
                "payload": {
                    "conversation": sim.conversation_truncated(conv),
                    "activity": {
                        "type": "typing:start" if doc.get("typing", True) else "typing:stop",
                        "author": {"type": "business"},
                    },
                },
            }
        )
        return JsonResponse({"bridgeStatus": await future})

    async def pass_back(request: Request) -> Response:
        """The agent solves the ticket: Agent Workspace passes control to ``to`` (default:
        its next integration, else the default one) or, with ``"release": true``,
        releases it; ``reason`` as Zendesk sends it (``ticketClosed``)."""
        conv = sim.conversations.get(request.path_params["cid"])
        if conv is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        doc = await control_json(request)
        reason = doc.get("reason", "ticketClosed")
        if doc.get("release"):
            conv.active = None
            future = switch(conv, "switchboard:releaseControl", None, reason)
        else:
            ref = doc.get("to")
            current = next(
                (i for i in sim.switchboard_integrations if i["name"] == conv.active), {}
            )
            target = (
                sim.sb_integration(str(ref))
                if ref
                else next(
                    (
                        i
                        for i in sim.switchboard_integrations
                        if i["id"]
                        in (
                            current.get("nextSwitchboardIntegrationId"),
                            sim.switchboard.get("defaultSwitchboardIntegrationId"),
                        )
                    ),
                    None,
                )
            )
            if target is None:
                return JsonResponse({"error": "no such switchboard integration"}, status_code=400)
            conv.active = target["name"]
            future = switch(conv, "switchboard:passControl", None, reason)
        return JsonResponse({"active": conv.active, "bridgeStatus": await future})

    async def store_file(request: Request) -> Response:
        data = await request.body()
        if len(data) > MAX_FILE_BYTES:
            return JsonResponse({"error": "file too large"}, status_code=413)
        media_id = new_id()
        sim.media[media_id] = (
            request.headers.get("content-type", "application/octet-stream"),
            data,
        )
        return JsonResponse({"url": f"{str(request.base_url).rstrip('/')}/_sim/media/{media_id}"})

    async def get_media(request: Request) -> Response:
        found = sim.media.get(request.path_params["mid"])
        if found is None:
            return JsonResponse({"error": "no such file"}, status_code=404)
        return Response(found[1], media_type=found[0])

    async def deliveries(request: Request) -> Response:
        return JsonResponse({"deliveries": sim.deliveries[-500:]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hooks.stop()

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    app = Starlette(
        routes=[
            Route("/v2/{rest:path}", api, methods=methods),
            Route("/_sim/status", status),
            Route("/_sim/violations", violations),
            Route("/_sim/deliveries", deliveries),
            Route("/_sim/down", go_down, methods=["POST"]),
            Route("/_sim/up", come_up, methods=["POST"]),
            Route("/_sim/rate-limit", rate_limit, methods=["POST"]),
            Route("/_sim/conversations", list_sim_conversations),
            Route("/_sim/conversations/{cid}", get_sim_conversation),
            Route("/_sim/conversations/{cid}/agent", agent_message, methods=["POST"]),
            Route("/_sim/conversations/{cid}/typing", agent_typing, methods=["POST"]),
            Route("/_sim/conversations/{cid}/pass-back", pass_back, methods=["POST"]),
            Route("/_sim/files", store_file, methods=["POST"]),
            Route("/_sim/media/{mid}", get_media),
            *agent_ui.routes(_UI_HTML),
        ],
        lifespan=lifespan,
    )
    app.state.sim = sim
    app.state.webhooks = hooks
    return app


def _names(template: str) -> list[str]:
    return re.findall(r"\{([^}]+)\}", template)
