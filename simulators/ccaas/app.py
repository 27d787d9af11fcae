"""The CCaaS simulator's HTTP app: the far side of ccbridge's generic ``webhook`` connector
(docs/connectors/webhook.md), plus a control API under ``/_sim/`` and a small web page.

``POST /webhook`` receives case.open / case.message / case.close, verifies the signature
(401 otherwise), honours idempotency keys (a repeated key has one effect and returns the
stored answer with ``Idempotent-Replayed: true``) and records every attempt. A JSON array
of events (batched delivery) is answered ``{"results": [...]}``, one result per event;
after an event of a case fails, the later events of that case in the array are skipped
(answered 409, not applied), so a case never gets a gap. The control
API lets a test or a person reply as an agent and close a case: the simulator then signs
an event and POSTs it to the bridge, as a real CCaaS would.

The signing code here is written from the documented contract on purpose, independently
of ccbridge's adapter, so a mistake on one side shows up as a failed signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.simulators import agent_ui
from ccbridge.simulators.ccaas.state import (
    MAX_FILE_BYTES,
    Answer,
    CaseClosed,
    CaseNotFound,
    CcaasState,
    now_iso,
)
from ccbridge.simulators.json_response import JsonResponse

log = logging.getLogger(__name__)

TOLERANCE_S = 300
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH_EVENTS = 100
MAX_DELAY_MS = 600_000  # a hanging CCaaS answers after at most 10 minutes
SKIPPED = "skipped: an earlier event of this case failed"
BRIDGE_TIMEOUT_S = 10.0
# The bridge answers a small JSON document; anything larger is a broken bridge.
BRIDGE_ANSWER_BYTES = 1 << 20
EVENT_TYPES = ("case.open", "case.message", "case.close", "message.failed", "case.typing")
_UI_HTML = Path(__file__).with_name("ui.html")


def _secrets(secret: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in secret.split(",") if p.strip())
    if not parts:
        raise ValueError("the CCaaS simulator needs a secret")
    return parts


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def signature_ok(
    secrets: Sequence[str], timestamp: str | None, sig: str | None, body: bytes, now: float
) -> bool:
    if not timestamp or not sig:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False
    offered = [p.strip() for p in sig.split(",") if p.strip()]
    if not offered:
        return False
    signed = str(ts).encode() + b"." + body
    for secret in secrets:
        # Each secret's signature once, whatever the number of offered ones (an array
        # body is large); hmac.digest is OpenSSL's one-shot HMAC.
        expected = "v1=" + hmac.digest(secret.encode(), signed, "sha256").hex()
        if any(hmac.compare_digest(expected, o) for o in offered):
            return True
    return False


def _results(results: list[dict[str, Any]]) -> Response:
    """A batch answer: ``{"results": [...]}``."""
    return JsonResponse({"results": results})


def _json(answer: Answer, *, replayed: bool = False) -> JsonResponse:
    headers = dict(answer.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JsonResponse(answer.body, status_code=answer.status, headers=headers)


def _problem(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status_code=status)


def _delivery_fields(item: object, header_key: str = "") -> dict[str, Any]:
    """What a delivery record says about one event (whatever shape it has)."""
    info = item if isinstance(item, dict) else {}
    return {
        "type": info.get("type"),
        "eventId": info.get("id"),
        "idempotencyKey": header_key or info.get("idempotencyKey"),
        "caseId": info.get("caseId"),
        "conversationId": info.get("conversationId"),
    }


def _is_str(doc: dict[str, Any], key: str) -> bool:
    return isinstance(doc.get(key), str) and bool(doc[key])


def _message_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return "message must be an object"
    for key in ("id", "direction", "contentType"):
        if not _is_str(message, key):
            return f"message.{key} is required"
    if not isinstance(message.get("content"), dict):
        return "message.content must be an object"
    if "authorType" not in message or "createdAt" not in message:
        return "message.authorType and message.createdAt are required"
    return None


def validate(doc: object) -> str | None:
    """What is wrong with a bridge event (the contract's required fields), or None."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    for key in ("type", "id", "conversationId", "idempotencyKey", "timestamp"):
        if not _is_str(doc, key):
            return f"{key} is required"
    kind = doc["type"]
    if kind not in EVENT_TYPES:
        return f"unknown type {kind!r}"
    if kind == "case.open":
        case = doc.get("case")
        if not isinstance(case, dict):
            return "case must be an object"
        for key in ("channel", "endUser"):
            if not isinstance(case.get(key), str):
                return f"case.{key} is required"
        routing = case.get("routing")
        if (
            not isinstance(routing, dict)
            or not {"queue", "priority", "skills", "rule"} <= routing.keys()
        ):
            return "case.routing must carry queue, priority, skills, rule"
        if not isinstance(case.get("tags"), list) or not isinstance(case.get("metadata"), dict):
            return "case.tags (list) and case.metadata (object) are required"
        transcript = doc.get("transcript")
        if not isinstance(transcript, list):
            return "transcript must be a list"
        for message in transcript:
            problem = _message_problem(message)
            if problem:
                return f"transcript: {problem}"
        if not isinstance(doc.get("transcriptTruncated"), bool):
            return "transcriptTruncated must be a boolean"
        return None
    if not _is_str(doc, "caseId"):
        return "caseId is required"
    if kind == "case.message":
        return _message_problem(doc.get("message"))
    if kind == "message.failed":
        if not _is_str(doc, "messageId"):
            return "messageId is required"
    if kind == "case.typing":
        return None if isinstance(doc.get("typing"), bool) else "typing must be a boolean"
    if not isinstance(doc.get("reason"), str):
        return "reason must be a string"
    return None


def create_app(
    state: CcaasState | None = None, *, secret: str, bridge_webhook_url: str | None
) -> Starlette:
    """The simulator app. ``secret`` may hold comma-separated secrets (first signs, any
    verifies); ``bridge_webhook_url`` is where agent events go (the gateway's
    ``/webhooks/ccaas/webhook``), changeable later with ``POST /_sim/config``."""
    sim = state if state is not None else CcaasState()
    secrets = _secrets(secret)
    config: dict[str, str | None] = {"bridge_webhook_url": bridge_webhook_url}
    answering = asyncio.Event()  # cleared while the simulator hangs (POST /_sim/hang)
    answering.set()

    async def receive(request: Request) -> Response:
        response = await handle(request)
        late_s: float = getattr(request.state, "late_s", 0.0)
        if late_s:  # a fault: carried out at once, answered late
            await asyncio.sleep(late_s)
        return response

    async def handle(request: Request) -> Response:
        body = await request.body()
        await answering.wait()  # a hanging CCaaS: the call waits (the caller's timeout ends it)
        header_key = request.headers.get("idempotency-key", "")
        if len(body) > MAX_BODY_BYTES:
            sim.record_delivery(
                type=None,
                eventId=None,
                idempotencyKey=header_key,
                caseId=None,
                conversationId=None,
                status=413,
                outcome="too_large",
            )
            return _problem(413, "body too large")
        not_json = None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # NaN, lone surrogates, a BOM too
            doc, not_json = None, f"body is not JSON ({exc})"
        if isinstance(doc, list):
            return await receive_batch(request, body, doc)
        info = doc if isinstance(doc, dict) else {}
        record = _delivery_fields(info, header_key)
        refused = await gate(request, body, [record])
        if refused is not None:
            return refused
        problem = not_json or validate(doc)
        if problem is None and header_key and header_key != info.get("idempotencyKey"):
            problem = "Idempotency-Key header differs from idempotencyKey"
        if problem is not None:
            sim.record_delivery(**record, status=400, outcome="invalid")
            return _problem(400, problem)
        answer, replayed = sim.apply(info["type"], info["idempotencyKey"], info)
        if info["type"] == "case.open":
            record["caseId"] = answer.body.get("caseId")
        sim.record_delivery(
            **record, status=answer.status, outcome="replayed" if replayed else "ok"
        )
        return _json(answer, replayed=replayed)

    async def gate(request: Request, body: bytes, records: list[dict[str, Any]]) -> Response | None:
        """The checks made once per request, single event or array: an injected fault
        (a CCaaS that is down answers before it looks at anything; a hanging one waits
        first, or carries the call out and answers late), then the signature. Every
        event of a refused request is recorded with the refusal."""
        fault = sim.take_fault()
        if fault is not None and fault.answer is None:
            request.state.late_s = fault.delay_s
        elif fault is not None and fault.answer is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            for record in records:
                sim.record_delivery(**record, status=fault.answer.status, outcome="fault")
            return _json(fault.answer)
        if not signature_ok(
            secrets,
            request.headers.get("x-ccbridge-timestamp"),
            request.headers.get("x-ccbridge-signature"),
            body,
            time.time(),
        ):
            for record in records:
                sim.record_delivery(**record, status=401, outcome="unauthorized")
            return _problem(401, "bad or missing signature")
        return None

    async def receive_batch(request: Request, body: bytes, items: list[Any]) -> Response:
        """A JSON array of events: one fault check and one signature check for the whole
        request, then every event in array order, as a single event would be."""
        # Each event's delivery record says how many events its request carried.
        records = [_delivery_fields(item) for item in items] or [_delivery_fields(None)]
        if items:
            for record in records:
                record["batch"] = len(items)
        turned_away = await gate(request, body, records)
        if turned_away is not None:
            return turned_away
        if not items or len(items) > MAX_BATCH_EVENTS:
            refused = 400 if not items else 413
            sim.record_delivery(
                **_delivery_fields(None),
                status=refused,
                outcome="invalid" if not items else "too_large",
            )
            return _problem(refused, f"an array must hold 1 to {MAX_BATCH_EVENTS} events")
        results: list[dict[str, Any]] = []
        failed_cases: set[str] = set()
        for item, record in zip(items, records, strict=True):
            case_id = record["caseId"] if isinstance(record["caseId"], str) else None
            result: dict[str, Any]
            if case_id is not None and case_id in failed_cases:
                # Applying it would leave a gap in the case (an earlier message missing).
                result, outcome = {"status": 409, "error": SKIPPED}, "skipped"
            else:
                problem = validate(item)
                if problem is not None:
                    result, outcome = {"status": 400, "error": problem}, "invalid"
                else:
                    answer, replayed = sim.apply(item["type"], item["idempotencyKey"], item)
                    if item["type"] == "case.open":
                        record["caseId"] = answer.body.get("caseId")
                    result = {"status": answer.status, **answer.body}
                    outcome = "replayed" if replayed else "ok"
            status: int = result["status"]
            if case_id is not None and not 200 <= status < 300:
                failed_cases.add(case_id)
            sim.record_delivery(**record, status=status, outcome=outcome)
            results.append(result)
        return _results(results)

    async def push(event: dict[str, Any]) -> tuple[int, Any]:
        """Signs ``event`` and POSTs it to the bridge; (status, answer) or (0, error)."""
        url = config["bridge_webhook_url"]
        if not url:
            return 0, "no bridge webhook URL configured"
        body = orjson.dumps(event)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Ccbridge-Timestamp": str(ts),
            "X-Ccbridge-Signature": signature(secrets[0], ts, body),
        }
        try:
            async with HttpClient(
                timeout_s=BRIDGE_TIMEOUT_S, max_answer_bytes=BRIDGE_ANSWER_BYTES
            ) as client:
                response = await client.request("POST", url, body=body, headers=headers)
        except HttpFailure as exc:
            sim.record_webhook(event=event, status=0, error=type(exc).__name__)
            return 0, f"bridge unreachable ({type(exc).__name__})"
        try:
            answer: Any = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            answer = response.body[:2000].decode(errors="replace")
        sim.record_webhook(event=event, status=response.status, answer=answer)
        return response.status, answer

    async def _control_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("body must be a JSON object")
        return doc

    async def reply(request: Request) -> Response:
        case_id = request.path_params["case_id"]
        try:
            doc = await _control_body(request)
        except ValueError:
            return _problem(400, "body must be a JSON object")
        text, agent = doc.get("text"), doc.get("agentName", "Agent")
        message_id, event_id = doc.get("messageId"), doc.get("eventId")
        # Passed to the bridge as given: the bridge validates them (a test may send bad
        # ones on purpose and read the bridge's answer).
        attachments, location = doc.get("attachments"), doc.get("location")
        if text is not None and not isinstance(text, str):
            return _problem(400, "text must be a string")
        if not text and attachments is None and location is None:
            return _problem(400, "text, attachments or location is required")
        if not isinstance(agent, str) or any(
            v is not None and not (isinstance(v, str) and v) for v in (message_id, event_id)
        ):
            return _problem(400, "agentName, messageId and eventId must be strings")
        extra = {
            key: value
            for key, value in (("attachments", attachments), ("location", location))
            if value is not None
        }
        try:
            message = sim.add_agent_message(case_id, text or "", agent, message_id, extra)
        except CaseNotFound:
            return _problem(404, "unknown case")
        except CaseClosed:
            return _problem(409, "case is closed")
        event = {
            "type": "agent.message",
            "id": event_id or sim.next_event_id(),
            "caseId": case_id,
            "message": {
                "id": message["id"],
                **({"text": message["text"]} if message["text"] else {}),
                "agentName": message["agentName"],
                **extra,
            },
        }
        status, answer = await push(event)
        sim.set_agent_delivery(
            case_id, message["id"], "delivered" if 200 <= status < 300 else f"failed ({status})"
        )
        return JsonResponse({"event": event, "bridgeStatus": status, "bridgeAnswer": answer})

    async def typing(request: Request) -> Response:
        """Sends a signed ``agent.typing`` (``typing`` true or false; ``timestamp`` as
        given, so a late one can be tried)."""
        case_id = request.path_params["case_id"]
        try:
            doc = await _control_body(request)
        except ValueError:
            return _problem(400, "body must be a JSON object")
        if not isinstance(doc.get("typing"), bool):
            return _problem(400, "typing (true or false) is required")
        try:
            sim.case(case_id)
        except CaseNotFound:
            return _problem(404, "unknown case")
        event = {
            "type": "agent.typing",
            "id": sim.next_event_id(),
            "caseId": case_id,
            "typing": doc["typing"],
            "timestamp": doc.get("timestamp") or now_iso(),
        }
        status, answer = await push(event)
        return JsonResponse({"event": event, "bridgeStatus": status, "bridgeAnswer": answer})

    async def close(request: Request) -> Response:
        case_id = request.path_params["case_id"]
        try:
            doc = await _control_body(request)
        except ValueError:
            return _problem(400, "body must be a JSON object")
        reason, event_id = doc.get("reason", "resolved"), doc.get("eventId")
        if not isinstance(reason, str) or (event_id is not None and not isinstance(event_id, str)):
            return _problem(400, "reason and eventId must be strings")
        try:
            sim.close_by_agent(case_id, reason)
        except CaseNotFound:
            return _problem(404, "unknown case")
        except CaseClosed:
            return _problem(409, "case is closed")
        event = {
            "type": "case.closed",
            "id": event_id or sim.next_event_id(),
            "caseId": case_id,
            "reason": reason,
        }
        status, answer = await push(event)
        return JsonResponse({"event": event, "bridgeStatus": status, "bridgeAnswer": answer})

    async def list_cases(request: Request) -> Response:
        full = request.query_params.get("full", "") in ("1", "true")
        return JsonResponse(
            {"cases": sim.cases(request.query_params.get("conversationId"), full=full)}
        )

    async def get_case(request: Request) -> Response:
        try:
            return JsonResponse(sim.case(request.path_params["case_id"]))
        except CaseNotFound:
            return _problem(404, "unknown case")

    async def deliveries(request: Request) -> Response:
        return JsonResponse({"deliveries": sim.deliveries()})

    async def webhooks(request: Request) -> Response:
        return JsonResponse({"webhooks": sim.webhooks()})

    async def status(request: Request) -> Response:
        return JsonResponse({**sim.status(), "bridgeWebhookUrl": config["bridge_webhook_url"]})

    async def down(request: Request) -> Response:
        sim.set_down(True)
        return JsonResponse(sim.status())

    async def up(request: Request) -> Response:
        sim.set_down(False)
        sim.set_hung(False)
        answering.set()
        return JsonResponse(sim.status())

    async def hang(request: Request) -> Response:
        sim.set_hung(True)
        answering.clear()
        return JsonResponse(sim.status())

    async def fail(request: Request) -> Response:
        try:
            doc = await _control_body(request)
        except ValueError:
            return _problem(400, "body must be a JSON object")
        count, code = doc.get("count", 1), doc.get("status", 503)
        retry_after, delay_ms = doc.get("retryAfter", 1), doc.get("delayMs", 0)
        if (
            not isinstance(count, int)
            or count < 0
            or not isinstance(code, int)
            or not (400 <= code <= 599 or code == 0)
            or not (retry_after is None or isinstance(retry_after, int | float))
            or not isinstance(delay_ms, int)
            or not 0 <= delay_ms <= MAX_DELAY_MS
        ):
            return _problem(
                400,
                "count >= 0, status 400..599 (0: delay only), retryAfter a number or null, "
                f"delayMs 0..{MAX_DELAY_MS}",
            )
        sim.inject_failures(count, code, retry_after, delay_ms / 1000)
        return JsonResponse(sim.status())

    async def reset(request: Request) -> Response:
        sim.reset()
        answering.set()
        return JsonResponse(sim.status())

    async def set_config(request: Request) -> Response:
        try:
            doc = await _control_body(request)
        except ValueError:
            return _problem(400, "body must be a JSON object")
        url = doc.get("bridgeWebhookUrl")
        if not (url is None or (isinstance(url, str) and url.startswith(("http://", "https://")))):
            return _problem(400, "bridgeWebhookUrl must be an http(s) URL or null")
        config["bridge_webhook_url"] = url
        return JsonResponse({"bridgeWebhookUrl": url})

    async def put_file(request: Request) -> Response:
        """Stores the raw body (its Content-Type kept) as a file an agent can send: a CCaaS
        serves its agents' attachments at a URL; the bridge passes the URL on."""
        data = await request.body()
        if not data:
            return _problem(400, "the body (the file) is empty")
        if len(data) > MAX_FILE_BYTES:
            return _problem(413, f"a file may have at most {MAX_FILE_BYTES} bytes")
        kind = request.headers.get("content-type") or "application/octet-stream"
        file_id = sim.put_file(data, kind)
        if file_id is None:
            return _problem(413, "the simulator's file store is full (POST /_sim/reset)")
        base = f"{request.url.scheme}://{request.url.netloc}"
        return JsonResponse({"id": file_id, "url": f"{base}/_sim/files/{file_id}"})

    async def get_file(request: Request) -> Response:
        found = sim.file(request.path_params["file_id"])
        if found is None:
            return _problem(404, "no such file")
        data, kind = found
        return Response(data, media_type=kind)

    app = Starlette(
        routes=[
            Route("/webhook", receive, methods=["POST"]),
            Route("/bridge", receive, methods=["POST"]),  # alias used by `ccbridge up --demo`
            Route("/_sim/status", status, methods=["GET"]),
            Route("/_sim/cases", list_cases, methods=["GET"]),
            Route("/_sim/cases/{case_id}", get_case, methods=["GET"]),
            Route("/_sim/cases/{case_id}/reply", reply, methods=["POST"]),
            Route("/_sim/cases/{case_id}/close", close, methods=["POST"]),
            Route("/_sim/cases/{case_id}/typing", typing, methods=["POST"]),
            Route("/_sim/deliveries", deliveries, methods=["GET"]),
            Route("/_sim/webhooks", webhooks, methods=["GET"]),
            Route("/_sim/down", down, methods=["POST"]),
            Route("/_sim/up", up, methods=["POST"]),
            Route("/_sim/hang", hang, methods=["POST"]),
            Route("/_sim/fail", fail, methods=["POST"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/_sim/config", set_config, methods=["POST"]),
            Route("/_sim/files", put_file, methods=["POST"]),
            Route("/_sim/files/{file_id}", get_file, methods=["GET"]),
            *agent_ui.routes(_UI_HTML),
        ]
    )
    app.state.ccaas = sim
    return app
