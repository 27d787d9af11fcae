"""The Genesys Cloud simulator's HTTP app: the parts of Genesys Cloud the ``genesys``
connector uses (docs/connectors/genesys.md), plus a control API under ``/_sim/`` and a
page showing the agent's view.

- ``POST /oauth/token``: the client-credentials grant (HTTP Basic client id/secret,
  ``grant_type=client_credentials``) → ``{"access_token", "token_type", "expires_in"}``.
- ``POST /api/v2/conversations/messages/{integrationId}/inbound/open/message`` and
  ``…/inbound/open/event``: every body is validated against the SDK's
  ``OpenInboundNormalizedMessage`` / ``OpenInboundNormalizedEvent`` (simulators/genesys/
  models.py) and refused with 400 when it does not fit; the first message of an identity
  creates a conversation (routed to agent "Alice"), later ones join it while it lasts; a
  repeated ``channel.messageId`` returns the first answer without a second message. The
  answer is an ``OpenMessageNormalizedMessage`` (``conversationId`` with
  ``prefetchConversationId=true``).
- ``…/inbound/open/receipt`` (``OpenInboundNormalizedReceipt``): a receipt for an agent's
  message, shown on it (``status``, ``reasons``).
- ``GET /api/v2/conversations/messages/{conversationId}`` (``MessageConversation``) and
  ``PATCH …/participants/{participantId}`` (``MediaParticipantRequest``; 202).
- ``GET``/``PATCH /api/v2/conversations/messaging/integrations/open/{integrationId}``
  (``OpenIntegration`` / ``OpenIntegrationUpdateRequest``): a PATCH moves the outbound
  webhook (URL and secret token), as ``ccbridge genesys setup`` does.
- Errors as the API documents them: 401 without a valid token, 404 for an unknown
  integration or conversation, 429 with ``Retry-After`` (``/_sim/fail``), 503 while down.

Agents act through the control API; the simulator then POSTs the outbound notification
(an ``OpenNormalizedMessage``, or an ``OpenEventNormalizedMessage`` for typing) to the
bridge, signed ``X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(body)>`` with the
integration's outbound secret token. The signing code is written here from Genesys's
guide, independently of the adapter's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.simulators import agent_ui
from ccbridge.simulators.genesys.models import fields, validate
from ccbridge.simulators.genesys.state import (
    MAX_FILE_BYTES,
    Conversation,
    GenesysState,
    now_iso,
)
from ccbridge.simulators.json_response import JsonResponse

log = logging.getLogger(__name__)

BRIDGE_TIMEOUT_S = 10.0  # Genesys waits 10 s for the webhook's answer (its guide)
MAX_BODY_BYTES = 4 * 1024 * 1024
_UI_HTML = Path(__file__).with_name("ui.html")
_MEDIA_TYPES = {"image/": "Image", "video/": "Video", "audio/": "Audio"}


def hub_signature(secret: str, body: bytes) -> str:
    """``sha256=`` + base64 of HMAC-SHA256(secret, body), as the guide computes it."""
    return "sha256=" + base64.b64encode(
        hmac.new(secret.encode(), body, hashlib.sha256).digest()
    ).decode("ascii")


def _error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    """Genesys's error body (``ErrorBody``: message, code, status)."""
    return JsonResponse(
        {"message": message, "code": code, "status": status, "contextId": str(uuid.uuid4())},
        status_code=status,
        headers=headers or None,
    )


def create_app(
    state: GenesysState, *, webhook_secret: str, bridge_webhook_url: str | None
) -> Starlette:
    # Load the SDK before answering: importing it takes seconds, which must not happen
    # inside the first request.
    fields("OpenInboundNormalizedMessage")
    config: dict[str, Any] = {
        "bridge_webhook_url": bridge_webhook_url,
        "webhook_secret": webhook_secret,
        "integration_name": "ccbridge",
    }

    # -- the platform API ------------------------------------------------------------------
    async def token(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        try:
            client_id, _, secret = (
                base64.b64decode(auth.removeprefix("Basic ").strip(), validate=True)
                .decode()
                .partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            client_id, secret = "", ""
        form = parse_qs((await request.body()).decode(errors="replace"))
        ok_client = hmac.compare_digest(
            f"{client_id}:{secret}".encode(), f"{state.client_id}:{state.client_secret}".encode()
        )
        if not auth.startswith("Basic ") or not ok_client:
            state.record({"path": "/oauth/token", "status": 401})
            return JsonResponse(
                {"error": "invalid_client", "description": "client authentication failed"},
                status_code=401,
            )
        if form.get("grant_type") != ["client_credentials"]:
            return JsonResponse(
                {"error": "unsupported_grant_type", "description": "client_credentials only"},
                status_code=400,
            )
        state.record({"path": "/oauth/token", "status": 200})
        return JsonResponse(state.issue_token())

    async def gate(request: Request, body: bytes | None = None) -> Response | None:
        """Down, injected failures and the bearer token, as the API answers them."""
        if state.down:
            return _error(503, "service.unavailable", "The service is currently unavailable")
        failure = state.take_failure()
        if failure is not None and failure[0]:  # status 0: this request passes
            status, retry_after = failure
            extra = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            code = "too.many.requests" if status == 429 else "simulated.failure"
            return _error(status, code, "Simulated failure", **extra)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not state.token_ok(auth[7:].strip()):
            return _error(401, "bad.credentials", "Invalid login credentials.")
        return None

    async def valid_body(request: Request, model: str, path: str) -> tuple[Any, Response | None]:
        """The JSON body, recorded under ``path`` and checked against ``model``; else the
        API's error answer (413, 400)."""
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return None, _error(413, "request.entity.too.large", "The body is too large")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, _error(400, "bad.request", "The request body is not valid JSON")
        errors = validate(model, doc)
        state.record({"path": path, "model": model, "errors": errors, "body": doc})
        if errors:
            log.warning("genesys-sim: %s does not fit %s: %s", path, model, errors[:5])
            return None, _error(400, "bad.request", f"{model}: " + "; ".join(errors[:10]))
        return doc, None

    def _integration(request: Request) -> Response | None:
        if request.path_params["integration_id"] != state.integration_id:
            return _error(404, "not.found", "The integration was not found")
        return None

    async def inbound_message(request: Request) -> Response:
        refused = await gate(request) or _integration(request)
        if refused is not None:
            return refused
        doc, refused = await valid_body(request, "OpenInboundNormalizedMessage", request.url.path)
        if refused is not None:
            return refused
        channel = doc["channel"]
        sender = channel["from"]
        conversation = state.conversation_for(
            sender["id"], sender["idType"], sender.get("nickname") or sender["id"]
        )
        message_id = channel.get("messageId") or str(uuid.uuid4())
        with state.lock:
            answer = conversation.message_ids.get(message_id)
            if answer is None:
                genesys_id = uuid.uuid4().hex
                answer = {
                    "id": genesys_id,
                    "channel": {
                        "id": state.integration_id,
                        "platform": "Open",
                        "type": "Private",
                        "messageId": message_id,
                        "to": {"id": state.integration_id},
                        "from": dict(sender),
                        "time": channel["time"],
                    },
                    "type": "Text",
                    "text": doc.get("text", ""),
                    **({"content": doc["content"]} if doc.get("content") else {}),
                    **({"metadata": doc["metadata"]} if doc.get("metadata") else {}),
                    "conversationId": conversation.id,
                }
                conversation.message_ids[message_id] = answer
                conversation.messages.append(
                    {
                        "id": genesys_id,
                        "direction": "Inbound",
                        "messageId": message_id,
                        "time": channel["time"],
                        "receivedAt": now_iso(),
                        "text": doc.get("text", ""),
                        "content": doc.get("content") or [],
                        "metadata": doc.get("metadata") or {},
                    }
                )
        prefetch = request.query_params.get("prefetchConversationId") == "true"
        body = (
            dict(answer) if prefetch else {k: v for k, v in answer.items() if k != "conversationId"}
        )
        return JsonResponse(body)

    async def inbound_event(request: Request) -> Response:
        refused = await gate(request) or _integration(request)
        if refused is not None:
            return refused
        doc, refused = await valid_body(request, "OpenInboundNormalizedEvent", request.url.path)
        if refused is not None:
            return refused
        sender = doc["channel"]["from"]
        found = [c for c in state.find(from_id=sender["id"]) if not c.ended]
        if found:
            found[-1].typing_at = doc["channel"]["time"]
        return JsonResponse(
            {
                "id": uuid.uuid4().hex,
                "channel": {
                    "id": state.integration_id,
                    "platform": "Open",
                    "type": "Private",
                    "to": {"id": state.integration_id},
                    "from": dict(sender),
                    "time": doc["channel"]["time"],
                },
                "type": "Event",
                "events": [{"eventType": "Typing", "typing": {"type": "On"}}],
            }
        )

    async def inbound_receipt(request: Request) -> Response:
        """A receipt for an agent's message (e.g. ``Failed``): shown on that message."""
        refused = await gate(request) or _integration(request)
        if refused is not None:
            return refused
        doc, refused = await valid_body(request, "OpenInboundNormalizedReceipt", request.url.path)
        if refused is not None:
            return refused
        to = doc["channel"]["to"]
        with state.lock:
            for conversation in state.conversations.values():
                if conversation.from_id != to["id"]:
                    continue
                for message in conversation.messages:
                    if message["id"] == doc["id"] and message["direction"] == "Outbound":
                        message["status"] = doc["status"]
                        message["reasons"] = doc.get("reasons") or []
        return JsonResponse(
            {
                "id": doc["id"],
                "channel": {
                    "id": state.integration_id,
                    "platform": "Open",
                    "type": "Private",
                    "to": dict(to),
                    "from": {"id": state.integration_id, "idType": "Opaque"},
                    "time": doc["channel"]["time"],
                },
                "type": "Receipt",
                "status": doc["status"],
                **({"reasons": doc["reasons"]} if doc.get("reasons") else {}),
                "isFinalReceipt": bool(doc.get("isFinalReceipt")),
            }
        )

    def _open_integration() -> dict[str, Any]:
        """The integration as ``OpenIntegration`` (the secret token is never shown)."""
        return {
            "id": state.integration_id,
            "name": config["integration_name"],
            "outboundNotificationWebhookUrl": config["bridge_webhook_url"] or "",
            "status": "Active",
            "createStatus": "Completed",
            "selfUri": f"/api/v2/conversations/messaging/integrations/open/{state.integration_id}",
        }

    async def get_integration(request: Request) -> Response:
        refused = await gate(request) or _integration(request)
        if refused is not None:
            return refused
        return JsonResponse(_open_integration())

    async def patch_integration(request: Request) -> Response:
        refused = await gate(request) or _integration(request)
        if refused is not None:
            return refused
        doc, refused = await valid_body(
            request, "OpenIntegrationUpdateRequest", "PATCH " + request.url.path
        )
        if refused is not None:
            return refused
        if "outboundNotificationWebhookUrl" in doc:
            config["bridge_webhook_url"] = doc["outboundNotificationWebhookUrl"]
        if doc.get("outboundNotificationWebhookSignatureSecretToken"):
            config["webhook_secret"] = doc["outboundNotificationWebhookSignatureSecretToken"]
        if doc.get("name"):
            config["integration_name"] = doc["name"]
        return JsonResponse(_open_integration())

    async def get_conversation(request: Request) -> Response:
        refused = await gate(request)
        if refused is not None:
            return refused
        conversation = state.get(request.path_params["conversation_id"])
        state.record({"path": "GET " + request.url.path, "errors": []})
        if conversation is None:
            return _error(404, "not.found", "The conversation was not found")
        return JsonResponse(conversation.public())

    async def patch_participant(request: Request) -> Response:
        refused = await gate(request)
        if refused is not None:
            return refused
        conversation = state.get(request.path_params["conversation_id"])
        if conversation is None:
            return _error(404, "not.found", "The conversation was not found")
        doc, refused = await valid_body(
            request, "MediaParticipantRequest", "PATCH " + request.url.path
        )
        if refused is not None:
            return refused
        participant_id = request.path_params["participant_id"]
        found = next((p for p in conversation.participants if p["id"] == participant_id), None)
        if found is None:
            return _error(404, "not.found", "The participant was not found")
        if doc.get("state") == "disconnected":
            state.end_participant(conversation, found["purpose"])
            # The customer leaving ends the interaction for the agent too.
            state.end_participant(conversation, "agent")
        return Response(status_code=202)

    # -- outbound notifications --------------------------------------------------------------
    async def push(doc: dict[str, Any]) -> tuple[int, Any]:
        url = config["bridge_webhook_url"]
        if not url:
            return 0, "no bridge webhook URL configured"
        body = orjson.dumps(doc)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": hub_signature(config["webhook_secret"], body),
        }
        try:
            async with HttpClient(timeout_s=BRIDGE_TIMEOUT_S, max_answer_bytes=1 << 20) as client:
                answer = await client.request("POST", url, body=body, headers=headers)
        except HttpFailure as exc:
            return 0, f"bridge unreachable ({type(exc).__name__})"
        try:
            return answer.status, orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return answer.status, answer.body[:2000].decode(errors="replace")

    def _outbound_channel(conversation: Conversation, message_id: str) -> dict[str, Any]:
        return {
            "id": state.integration_id,
            "platform": "Open",
            "type": "Private",
            "messageId": message_id,
            "to": {"id": conversation.from_id, "idType": conversation.id_type},
            "from": {"id": state.integration_id, "idType": "Opaque", "nickname": "Alice"},
            "time": now_iso(),
        }

    async def _doc(request: Request) -> dict[str, Any]:
        """A control call's JSON object body ({} when empty); ValueError otherwise."""
        raw = await request.body()
        doc = orjson.loads(raw) if raw.strip() else {}
        if not isinstance(doc, dict):
            raise ValueError("body must be a JSON object")
        return doc

    async def _control(request: Request) -> tuple[dict[str, Any], Conversation | None]:
        return await _doc(request), state.get(request.path_params["conversation_id"])

    async def reply(request: Request) -> Response:
        """An agent's message: ``{"text": ..., "attachments": [{"url", "mediaType",
        "mime", "filename"}]}``."""
        try:
            doc, conversation = await _control(request)
        except ValueError:
            return JsonResponse({"error": "body must be a JSON object"}, status_code=400)
        if conversation is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        if conversation.ended:
            return JsonResponse({"error": "the conversation has ended"}, status_code=409)
        message_id = uuid.uuid4().hex
        content = [
            {"contentType": "Attachment", "attachment": dict(a)}
            for a in doc.get("attachments") or []
        ]
        notification: dict[str, Any] = {
            "id": message_id,
            "channel": _outbound_channel(conversation, message_id),
            "type": "Text",
            "text": str(doc.get("text") or ""),
            "direction": "Outbound",
        }
        if content:
            notification["content"] = content
        errors = validate("OpenNormalizedMessage", notification)
        if errors:  # the simulator's own webhook must fit the published model too
            return JsonResponse({"error": "; ".join(errors)}, status_code=400)
        with state.lock:
            conversation.messages.append(
                {
                    "id": message_id,
                    "direction": "Outbound",
                    "time": notification["channel"]["time"],
                    "text": notification["text"],
                    "content": content,
                }
            )
        status, answer = await push(notification)
        return JsonResponse({"messageId": message_id, "bridgeStatus": status, "bridge": answer})

    async def typing(request: Request) -> Response:
        try:
            _doc, conversation = await _control(request)
        except ValueError:
            return JsonResponse({"error": "body must be a JSON object"}, status_code=400)
        if conversation is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        event_id = uuid.uuid4().hex
        notification = {
            "id": event_id,
            "channel": _outbound_channel(conversation, event_id),
            "type": "Event",
            "events": [{"eventType": "Typing", "typing": {"type": "On", "duration": 5000}}],
        }
        errors = validate("OpenEventNormalizedMessage", notification)
        if errors:
            return JsonResponse({"error": "; ".join(errors)}, status_code=400)
        status, answer = await push(notification)
        return JsonResponse({"bridgeStatus": status, "bridge": answer})

    async def disconnect(request: Request) -> Response:
        """The agent ends the interaction (the agent participant is disconnected)."""
        try:
            _doc, conversation = await _control(request)
        except ValueError:
            return JsonResponse({"error": "body must be a JSON object"}, status_code=400)
        if conversation is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        state.end_participant(conversation, "agent")
        return JsonResponse(conversation.view())

    async def list_conversations(request: Request) -> Response:
        found = state.find(
            from_id=request.query_params.get("fromId", ""),
            infobip_conversation=request.query_params.get("conversationId", ""),
        )
        full = request.query_params.get("full") == "1"
        views = [c.view() for c in found]
        if not full:
            views = [{k: v for k, v in view.items() if k != "messages"} for view in views]
        return JsonResponse({"conversations": views})

    async def one_conversation(request: Request) -> Response:
        conversation = state.get(request.path_params["conversation_id"])
        if conversation is None:
            return JsonResponse({"error": "no such conversation"}, status_code=404)
        return JsonResponse(conversation.view())

    async def status(request: Request) -> Response:
        return JsonResponse({**state.status(), "bridgeWebhookUrl": config["bridge_webhook_url"]})

    async def requests(request: Request) -> Response:
        with state.lock:
            records = [
                {k: v for k, v in r.items() if k != "body"}
                for r in state.records
                if r.get("errors")
            ]
        return JsonResponse({"rejected": records})

    async def down(request: Request) -> Response:
        state.down = True
        return JsonResponse(state.status())

    async def up(request: Request) -> Response:
        state.down = False
        return JsonResponse(state.status())

    async def fail(request: Request) -> Response:
        try:
            doc = await _doc(request)
        except ValueError:
            return JsonResponse({"error": "body must be a JSON object"}, status_code=400)
        count, code = doc.get("count", 1), doc.get("status", 429)
        retry_after, after = doc.get("retryAfter", 1), doc.get("after", 0)
        if (
            not isinstance(count, int)
            or not isinstance(after, int)
            or not isinstance(code, int)
            or not 400 <= code <= 599
        ):
            return JsonResponse(
                {"error": "count and after integers, status 400..599"}, status_code=400
            )
        with state.lock:
            state.failures.extend([(0, None)] * after + [(code, retry_after)] * count)
        return JsonResponse(state.status())

    async def expire_tokens(request: Request) -> Response:
        return JsonResponse({"expired": state.expire_tokens()})

    async def put_file(request: Request) -> Response:
        data = await request.body()
        if not data or len(data) > MAX_FILE_BYTES:
            return JsonResponse({"error": f"1..{MAX_FILE_BYTES} bytes"}, status_code=400)
        kind = request.headers.get("content-type") or "application/octet-stream"
        file_id = state.put_file(data, kind)
        if file_id is None:
            return JsonResponse({"error": "the file store is full"}, status_code=413)
        media = next((v for k, v in _MEDIA_TYPES.items() if kind.startswith(k)), "File")
        base = f"{request.url.scheme}://{request.url.netloc}"
        return JsonResponse(
            {"id": file_id, "url": f"{base}/_sim/files/{file_id}", "mediaType": media, "mime": kind}
        )

    async def get_file(request: Request) -> Response:
        found = state.files.get(request.path_params["file_id"])
        if found is None:
            return JsonResponse({"error": "no such file"}, status_code=404)
        return Response(found[0], media_type=found[1])

    async def set_config(request: Request) -> Response:
        try:
            doc = await _doc(request)
        except ValueError:
            return JsonResponse({"error": "body must be a JSON object"}, status_code=400)
        url = doc.get("bridgeWebhookUrl")
        if not (url is None or (isinstance(url, str) and url.startswith(("http://", "https://")))):
            return JsonResponse({"error": "bridgeWebhookUrl must be an http(s) URL"}, 400)
        config["bridge_webhook_url"] = url
        return JsonResponse({"bridgeWebhookUrl": url})

    api = "/api/v2/conversations/messages"
    return Starlette(
        routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route(
                f"{api}/{{integration_id}}/inbound/open/message", inbound_message, methods=["POST"]
            ),
            Route(f"{api}/{{integration_id}}/inbound/open/event", inbound_event, methods=["POST"]),
            Route(
                f"{api}/{{integration_id}}/inbound/open/receipt", inbound_receipt, methods=["POST"]
            ),
            Route(f"{api}/{{conversation_id}}", get_conversation, methods=["GET"]),
            Route(
                f"{api}/{{conversation_id}}/participants/{{participant_id}}",
                patch_participant,
                methods=["PATCH"],
            ),
            Route(
                "/api/v2/conversations/messaging/integrations/open/{integration_id}",
                get_integration,
                methods=["GET"],
            ),
            Route(
                "/api/v2/conversations/messaging/integrations/open/{integration_id}",
                patch_integration,
                methods=["PATCH"],
            ),
            Route("/_sim/status", status, methods=["GET"]),
            Route("/_sim/rejected", requests, methods=["GET"]),
            Route("/_sim/conversations", list_conversations, methods=["GET"]),
            Route("/_sim/conversations/{conversation_id}", one_conversation, methods=["GET"]),
            Route("/_sim/conversations/{conversation_id}/reply", reply, methods=["POST"]),
            Route("/_sim/conversations/{conversation_id}/typing", typing, methods=["POST"]),
            Route("/_sim/conversations/{conversation_id}/disconnect", disconnect, methods=["POST"]),
            Route("/_sim/down", down, methods=["POST"]),
            Route("/_sim/up", up, methods=["POST"]),
            Route("/_sim/fail", fail, methods=["POST"]),
            Route("/_sim/tokens/expire", expire_tokens, methods=["POST"]),
            Route("/_sim/files", put_file, methods=["POST"]),
            Route("/_sim/files/{file_id}", get_file, methods=["GET"]),
            Route("/_sim/config", set_config, methods=["POST"]),
            *agent_ui.routes(_UI_HTML),
        ]
    )
