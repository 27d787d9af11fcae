"""The Starlette app of the Infobip simulator: the HTTP surface over
:class:`~ccbridge.simulators.infobip.state.InfobipSimState`.

API routes (``/ccaas/1/...``, ``/subscriptions/1/...``) and media files
(``GET /_sim/media/{id}``, standing for Infobip's media URLs, which need the key too)
require ``Authorization: App <key>`` and answer Infobip's shapes; injected failures and
the Get Messages page delay apply to them only. Control routes (``/_sim/...``) take and
return JSON without authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ccbridge.simulators.infobip.state import (
    Failure,
    InfobipSimState,
    SimError,
    bad_request,
)
from ccbridge.simulators.infobip.webhooks import DeliveryResult
from ccbridge.simulators.json_response import JsonResponse

Handler = Callable[[Request], Awaitable[Response]]

_MAX_BODY = 1024 * 1024
MAX_MEDIA_BYTES = 32 * 1024 * 1024


def _base(request: Request) -> str:
    """The simulator's own base URL as the caller reached it (its media URLs use it)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _error_response(exc: SimError) -> JsonResponse:
    return JsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise SimError(413, "BAD_REQUEST", "Request body too large")
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request(text="Request body is not valid JSON") from None


def _query(request: Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def _results(results: list[DeliveryResult]) -> dict[str, Any]:
    """The delivery outcome the control API reports (first legacy / event status)."""
    legacy = next((r for r in results if r.kind == "legacy"), None)
    event = next((r for r in results if r.kind == "event"), None)
    return {
        "webhook_status": legacy.status if legacy else None,
        "event_status": event.status if event else None,
        "deliveries": [r.to_api() for r in results],
    }


def create_app(state: InfobipSimState | None = None, *, api_key: str = "sim-key") -> Starlette:
    """Builds the simulator app around ``state`` (a fresh one when None).

    The app's lifespan closes the state's webhook client on shutdown; when the app runs
    under an ASGI transport without its lifespan (tests), call ``await state.aclose()`` yourself.
    """
    sim = state if state is not None else InfobipSimState()
    expected = f"App {api_key}".encode()

    def authorized(request: Request) -> bool:
        supplied = request.headers.get("authorization", "")
        scheme, _, key = supplied.partition(" ")
        return scheme.lower() == "app" and hmac.compare_digest(
            f"App {key.strip()}".encode(), expected
        )

    def api(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if not authorized(request):
                return _error_response(SimError(401, "UNAUTHORIZED", "Invalid login details"))
            failure = sim.take_failure(request.method, request.url.path)
            if failure is not None:
                if failure.delay_ms:
                    await asyncio.sleep(failure.delay_ms / 1000)
                if failure.when == "before":
                    if failure.drop:
                        return _Dropped()
                    if failure.status:
                        return _error_response(failure.error())
            answer = await contract_checked(request, handler)
            if failure is not None and failure.when == "after":
                if failure.drop:
                    return _Dropped()
                if failure.status:
                    return _error_response(failure.error())
            return answer

        return wrapped

    async def contract_checked(request: Request, handler: Handler) -> Response:
        """The request validated against the published documents (a violation is
        Infobip's 400 ``BAD_REQUEST`` with ``validationErrors``), then the answer checked
        and both recorded (see InfobipSimState)."""
        method, path = request.method, request.url.path
        found = sim.contract.match(method, path)
        raw = await request.body()  # Starlette keeps it for the handler
        body: Any = None
        response: Response | None = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
                response = _error_response(bad_request(text="Invalid request body."))
        if found is None:
            sim.contract_violation(f"route {method} {path}", {"path": ["not in the documents"]})
        elif response is None:
            errors = sim.contract.request_errors(
                found[0], found[1], _query(request), body, has_body=bool(raw)
            )
            if errors:
                response = _error_response(bad_request(errors))
        if response is None:
            try:
                response = await handler(request)
            except SimError as exc:
                response = _error_response(exc)
        answer: Any = None
        if response.body:
            try:
                answer = orjson.loads(response.body)
            except orjson.JSONDecodeError:
                answer = bytes(response.body).decode("utf-8", "replace")  # fails every schema
        if sim.recorder is not None:
            sim.recorder.write(
                {
                    "kind": "api",
                    "method": method,
                    "path": path,
                    "query": _query(request),
                    "body": body,
                    "hasBody": bool(raw),
                    "status": response.status_code,
                    "answer": answer,
                }
            )
        if found is not None and sim.contract_mode != "off":
            errors = sim.contract.response_errors(found[0], response.status_code, answer)
            if errors:
                what = f"answer {response.status_code} to {method} {found[0].path}"
                sim.contract_violation(what, errors)
                if sim.contract_mode == "strict":
                    return _error_response(
                        SimError(
                            500,
                            "GENERAL_ERROR",
                            f"Simulator {what} violates Infobip's published schema: {errors}",
                        )
                    )
        return response

    def control(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except SimError as exc:
                return _error_response(exc)

        return wrapped

    # -- API ------------------------------------------------------------------------------

    async def list_conversations(request: Request) -> Response:
        return JsonResponse(sim.list_conversations(_query(request)))

    async def get_conversation(request: Request) -> Response:
        return JsonResponse(sim.get_conversation(request.path_params["cid"]))

    async def update_conversation(request: Request) -> Response:
        body = await _json_body(request)
        conversation, deliveries = sim.update_conversation(
            request.path_params["cid"], body, partial=request.method == "PATCH"
        )
        sim.sender.post_in_background(deliveries)
        return JsonResponse(conversation)

    async def list_messages(request: Request) -> Response:
        page = sim.list_messages(request.path_params["cid"], _query(request))
        if sim.page_delay_ms:
            await asyncio.sleep(sim.page_delay_ms / 1000)
        return JsonResponse(page)

    async def create_message(request: Request) -> Response:
        body = await _json_body(request)
        agent_id = request.headers.get("x-agent-id") or None
        return JsonResponse(sim.create_message(request.path_params["cid"], body, agent_id))

    async def create_event(request: Request) -> Response:
        sim.create_event(request.path_params["cid"], await _json_body(request))
        return Response(status_code=200)  # documented: "OK", no body

    async def sim_events(request: Request) -> Response:
        return JsonResponse({"events": sim.conversation_events(request.path_params["cid"])})

    async def route_conversation(request: Request) -> Response:
        return JsonResponse(sim.route_conversation(request.path_params["cid"]))

    async def assignee(request: Request) -> Response:
        cid = request.path_params["cid"]
        if request.method == "DELETE":
            return JsonResponse(sim.unassign(cid))
        return JsonResponse(sim.assign(cid, await _json_body(request)))

    async def add_tag(request: Request) -> Response:
        return JsonResponse(sim.add_tag(request.path_params["cid"], await _json_body(request)))

    async def remove_tag(request: Request) -> Response:
        return JsonResponse(sim.remove_tag(request.path_params["cid"], request.path_params["name"]))

    async def metadata(request: Request) -> Response:
        cid = request.path_params["cid"]
        if request.method == "GET":
            return JsonResponse(sim.get_metadata(cid))
        if request.method == "DELETE":
            return JsonResponse(sim.delete_metadata(cid))
        body = await _json_body(request)
        return JsonResponse(sim.set_metadata(cid, body, merge=request.method == "PATCH"))

    async def tags(request: Request) -> Response:
        if request.method == "GET":
            return JsonResponse(sim.list_tags(_query(request)))
        return JsonResponse(sim.create_tag(await _json_body(request)))

    async def delete_tag(request: Request) -> Response:
        return JsonResponse(sim.delete_tag(request.path_params["name"]))

    async def account_configuration(request: Request) -> Response:
        return JsonResponse(sim.set_account_configuration(await _json_body(request)))

    async def subscriptions(request: Request) -> Response:
        if request.method == "GET":
            return JsonResponse(sim.list_subscriptions(_query(request)))
        created = sim.create_subscription(await _json_body(request))
        return JsonResponse(created, status_code=201)

    async def subscription(request: Request) -> Response:
        sid = request.path_params["sid"]
        if request.method == "DELETE":
            return JsonResponse(sim.delete_subscription(sid))
        if request.method == "PUT":
            return JsonResponse(sim.update_subscription(sid, await _json_body(request)))
        return JsonResponse(sim.get_subscription(sid))

    async def profiles(request: Request) -> Response:
        return JsonResponse(sim.create_profile(await _json_body(request)), status_code=201)

    async def profile(request: Request) -> Response:
        pid = request.path_params["pid"]
        if request.method == "DELETE":
            return JsonResponse(sim.delete_profile(pid))
        return JsonResponse(sim.get_profile(pid))

    async def security(request: Request) -> Response:
        return JsonResponse(sim.delete_security(request.path_params["aid"]))

    # -- control --------------------------------------------------------------------------

    async def sim_health(request: Request) -> Response:
        return JsonResponse({"status": "ok"})

    async def sim_reset(request: Request) -> Response:
        sim.reset()
        return JsonResponse({"status": "reset"})

    async def sim_config(request: Request) -> Response:
        if request.method == "GET":
            return JsonResponse(sim.config())
        body = await _json_body(request)
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        return JsonResponse(sim.set_config(body))

    async def sim_failures(request: Request) -> Response:
        if request.method == "DELETE":
            sim.clear_failures()
            return JsonResponse({"failures": []})
        if request.method == "GET":
            return JsonResponse({"failures": sim.config()["failures"]})
        body = await _json_body(request) or {}
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        sim.inject_failure(_parse_failure(body))
        return JsonResponse({"failures": sim.config()["failures"]})

    async def sim_create_conversation(request: Request) -> Response:
        body = await _json_body(request) or {}
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        kwargs = _conversation_kwargs(body)
        conversation = sim.create_conversation(**kwargs)
        return JsonResponse(sim.snapshot(conversation.id))

    async def sim_conversation(request: Request) -> Response:
        return JsonResponse(sim.snapshot(request.path_params["cid"]))

    async def sim_send(request: Request) -> Response:
        body = await _json_body(request) or {}
        if not isinstance(body, Mapping):
            raise bad_request(text="Request body must be a JSON object")
        content_type, content = _end_user_content(body)
        message, deliveries = sim.end_user_message(
            request.path_params["cid"], content_type, content
        )
        results = await sim.sender.post_all(deliveries)
        return JsonResponse(
            {"conversationId": message["conversationId"], "message": message, **_results(results)}
        )

    async def sim_close(request: Request) -> Response:
        already, deliveries = sim.close_from_infobip(request.path_params["cid"])
        results = await sim.sender.post_all(deliveries)
        return JsonResponse({"alreadyClosed": already, **_results(results)})

    async def sim_put_media(request: Request) -> Response:
        """Stores the raw body as a media file (its Content-Type kept); answers its URL."""
        raw = await request.body()
        if len(raw) > MAX_MEDIA_BYTES:
            raise SimError(413, "BAD_REQUEST", "Media file too large")
        kind = request.headers.get("content-type", "application/octet-stream")
        media_id = sim.put_media(raw, kind)
        return JsonResponse({"id": media_id, "url": f"{_base(request)}/_sim/media/{media_id}"})

    async def get_media(request: Request) -> Response:
        """A stored media file, as Infobip serves inbound media: only with the API key;
        injected failures apply (path prefix ``/_sim/media``)."""
        if not authorized(request):
            return _error_response(SimError(401, "UNAUTHORIZED", "Invalid login details"))
        failure = sim.take_failure(request.method, request.url.path)
        if failure is not None:
            if failure.delay_ms:
                await asyncio.sleep(failure.delay_ms / 1000)
            if failure.drop:
                return _Dropped()
            if failure.status:
                return _error_response(failure.error())
        found = sim.media.get(request.path_params["mid"])
        if found is None:
            return _error_response(SimError(404, "NOT_FOUND", "No such media file"))
        data, kind = found

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]

        return StreamingResponse(
            chunks(), headers={"content-type": kind, "content-length": str(len(data))}
        )

    async def sim_agent_messages(request: Request) -> Response:
        return JsonResponse({"messages": sim.agent_messages(request.path_params["cid"])})

    conversation_path = "/ccaas/1/conversations/{cid}"
    routes = [
        Route("/ccaas/1/conversations", api(list_conversations), methods=["GET"]),
        Route(conversation_path, api(get_conversation), methods=["GET"]),
        Route(conversation_path, api(update_conversation), methods=["PUT", "PATCH"]),
        Route(conversation_path + "/messages", api(list_messages), methods=["GET"]),
        Route(conversation_path + "/messages", api(create_message), methods=["POST"]),
        Route(conversation_path + "/events", api(create_event), methods=["POST"]),
        Route(conversation_path + "/route", api(route_conversation), methods=["POST"]),
        Route(conversation_path + "/assignee", api(assignee), methods=["PUT", "DELETE"]),
        Route(conversation_path + "/tags", api(add_tag), methods=["POST"]),
        Route(conversation_path + "/tags/{name}", api(remove_tag), methods=["DELETE"]),
        Route(
            conversation_path + "/metadata",
            api(metadata),
            methods=["GET", "PUT", "PATCH", "DELETE"],
        ),
        Route("/ccaas/1/tags", api(tags), methods=["GET", "POST"]),
        Route("/ccaas/1/tags/{name}", api(delete_tag), methods=["DELETE"]),
        Route("/ccaas/1/account/configuration", api(account_configuration), methods=["PUT"]),
        Route(
            "/subscriptions/1/subscription/CUSTOMER_ENGAGEMENT",
            api(subscriptions),
            methods=["GET", "POST"],
        ),
        Route(
            "/subscriptions/1/subscription/CUSTOMER_ENGAGEMENT/{sid}",
            api(subscription),
            methods=["GET", "PUT", "DELETE"],
        ),
        Route("/subscriptions/1/profiles", api(profiles), methods=["POST"]),
        Route("/subscriptions/1/profiles/{pid}", api(profile), methods=["GET", "DELETE"]),
        Route("/subscriptions/1/security/{aid}", api(security), methods=["DELETE"]),
        Route("/_sim/health", control(sim_health), methods=["GET"]),
        Route("/_sim/media", control(sim_put_media), methods=["POST"]),
        Route("/_sim/media/{mid}", get_media, methods=["GET"]),
        Route("/_sim/reset", control(sim_reset), methods=["POST"]),
        Route("/_sim/config", control(sim_config), methods=["GET", "PUT"]),
        Route("/_sim/failures", control(sim_failures), methods=["GET", "POST", "DELETE"]),
        Route("/_sim/conversations", control(sim_create_conversation), methods=["POST"]),
        Route("/_sim/conversations/{cid}", control(sim_conversation), methods=["GET"]),
        Route("/_sim/conversations/{cid}/send", control(sim_send), methods=["POST"]),
        Route("/_sim/conversations/{cid}/close", control(sim_close), methods=["POST"]),
        Route(
            "/_sim/conversations/{cid}/agent-messages", control(sim_agent_messages), methods=["GET"]
        ),
        Route("/_sim/conversations/{cid}/events", control(sim_events), methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message_id = {404: "NOT_FOUND", 405: "BAD_REQUEST"}.get(status, "GENERAL_ERROR")
        return _error_response(
            SimError(status, message_id, "Not found" if status == 404 else "Bad request")
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sim.aclose()

    app = Starlette(
        routes=routes, exception_handlers={404: http_error, 405: http_error}, lifespan=lifespan
    )
    app.state.sim = sim
    return app


class _Dropped(Response):
    """An answer cut off mid-body, the connection closed: the client gets no answer
    (uvicorn closes a connection whose response the app left incomplete)."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})


def _parse_failure(body: Mapping[str, Any]) -> Failure:
    errors: dict[str, list[str]] = {}
    count = body.get("count", 1)
    status = body.get("status", 429)
    retry_after = body.get("retry_after")
    delay_ms = body.get("delay_ms", 0)
    shape = body.get("shape", "requestError")
    if not isinstance(count, int) or count < 1:
        errors["count"] = ["must be a positive integer"]
    if not isinstance(status, int) or not (status == 0 or 400 <= status <= 599):
        errors["status"] = ["must be 0 (delay only) or an HTTP error status 400-599"]
    if retry_after is not None and (not isinstance(retry_after, (int, float)) or retry_after < 0):
        errors["retry_after"] = ["must be a non-negative number of seconds"]
    if not isinstance(delay_ms, int) or delay_ms < 0:
        errors["delay_ms"] = ["must be a non-negative integer"]
    if shape not in ("requestError", "status"):
        errors["shape"] = ["must be requestError or status"]
    when = body.get("when", "before")
    drop = body.get("drop", False)
    if when not in ("before", "after"):
        errors["when"] = ["must be before or after (the call takes effect, then fails)"]
    if not isinstance(drop, bool):
        errors["drop"] = ["must be a boolean"]
    if errors:
        raise bad_request(errors)
    return Failure(
        remaining=count,
        status=status,
        retry_after=float(retry_after) if retry_after is not None else None,
        method=str(body.get("method") or "").upper(),
        path_prefix=str(body.get("path_prefix") or ""),
        shape=shape,
        delay_ms=delay_ms,
        when=str(when),
        drop=bool(drop),
    )


def _conversation_kwargs(body: Mapping[str, Any]) -> dict[str, Any]:
    history = body.get("history", 0)
    if not isinstance(history, int):
        raise bad_request({"history": ["must be an integer"]})
    kwargs: dict[str, Any] = {"history": history}
    for key, name in (
        ("channel", "channel"),
        ("end_user", "end_user"),
        ("endUser", "end_user"),
        ("business_sender", "business_sender"),
        ("businessSender", "business_sender"),
        ("id", "conversation_id"),
        ("status", "status"),
        ("topic", "topic"),
        ("agent_id", "agent_id"),
        ("queue_id", "queue_id"),
    ):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise bad_request({key: ["must be a non-empty string"]})
        kwargs[name] = value
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise bad_request({"tags": ["must be a list of strings"]})
    kwargs["tags"] = tags
    metadata = body.get("metadata", {})
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad_request({"metadata": ["must be an object of strings"]})
    kwargs["metadata"] = dict(metadata)
    return kwargs


def _end_user_content(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    content = body.get("content")
    if content is not None:
        content_type = body.get("contentType", "TEXT")
        if not isinstance(content, Mapping) or not isinstance(content_type, str):
            raise bad_request({"content": ["must be an object, with contentType a string"]})
        return content_type, dict(content)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise bad_request({"text": ["give text, or contentType and content"]})
    return "TEXT", {"text": text}
