"""The operator console: server-rendered pages on the gateway's admin listener.

A separate Starlette app (:func:`create_console_app`), served by gateway/__main__.py on
``CCBRIDGE_ADMIN_BIND_HOST:CCBRIDGE_ADMIN_PORT`` only when ``CCBRIDGE_ADMIN_TOKEN`` is
set; the public app (gateway/app.py) has none of these routes. Login, session cookie and
CSRF: gateway/console_auth.py. Pages: handovers by state (age, backlog, last error), one
handover with its timeline and dead letters, the dead letters with replay, discard and
"show text", and a routing "explain" form.

The console calls Session and Routing as the mesh identity ``operator`` (its own
channels, with ``CCBRIDGE_ADMIN_TLS_CERT``/``KEY``), so the servers' per-caller
authorization (services/runtime/authz.py) decides what it may do, exactly as for the
``ccbridge`` CLI. Message text is never shown unless the operator asks for one dead
letter's text (a POST, logged with the letter's id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import parse_qs, quote

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ccbridge.common.v1 import common_pb2
from ccbridge.gateway.console_auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionSigner,
    new_nonce,
    same,
    token_matches,
)
from ccbridge.gateway.console_html import (
    button_form,
    esc,
    login_page,
    page,
    table,
    when,
)
from ccbridge.gateway.errors import GRPC_TO_HTTP, INTERNAL
from ccbridge.gateway.settings import ConsoleSettings, GatewaySettings
from ccbridge.routing.v1 import routing_pb2, routing_pb2_grpc
from ccbridge.services.runtime.channels import create_channel
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

Resp = TypeVar("Resp")
T = TypeVar("T")

MAX_FORM_BYTES = 64 * 1024
PAGE_SIZE = 25
DEAD_LETTER_PAGE = 50
TIMELINE_LIMIT = 500
STATES = ("OPENING", "ACTIVE", "CLOSING", "FAILED", "REJECTED", "CLOSED")
NOTICES = {
    "replayed": "Dead letter queued for delivery again.",
    "discarded": "Dead letter discarded.",
    "logged_out": "Logged out.",
}
_SECURITY_HEADERS = {
    # No scripts at all; styles only inline; forms post only here; never framed.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the
    # console's own form posts, and the Origin check refuses them.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_LANES = {"inbox": "inbox → CCaaS", "outbox": "outbox → end user", "": "handover"}


class ConsoleError(Exception):
    """A page-level error: HTTP status and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FormError(ConsoleError):
    """A malformed or oversized form (400/413)."""


def _grpc_error(exc: grpc.aio.AioRpcError) -> ConsoleError:
    code = exc.code()
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return ConsoleError(
            502,
            "Session or Routing refused the console's mesh identity: CCBRIDGE_ADMIN_TLS_CERT "
            "must be an operator certificate (spiffe://ccbridge/operator)",
        )
    status, _name, generic = GRPC_TO_HTTP.get(code, INTERNAL)
    if status >= 500:
        return ConsoleError(502 if status == 500 else status, generic or "backend error")
    return ConsoleError(status, (exc.details() or code.name)[:300])


class ConsoleBackends:
    """The console's own channels to Session and Routing, as the operator identity."""

    def __init__(self, settings: GatewaySettings, console: ConsoleSettings) -> None:
        self._settings = settings
        self._console = console
        self._channels: list[grpc.aio.Channel] = []
        self.session: session_pb2_grpc.SessionServiceAsyncStub | None = None
        self.routing: routing_pb2_grpc.RoutingServiceAsyncStub | None = None

    async def open(self) -> None:
        keepalive = self._settings.common.grpc_keepalive_ms
        session = create_channel(
            self._settings.session_addr, self._console.tls, "session", keepalive_ms=keepalive
        )
        routing = create_channel(
            self._console.routing_addr, self._console.tls, "routing", keepalive_ms=keepalive
        )
        self._channels = [session, routing]
        self.session = session_pb2_grpc.SessionServiceStub(session)
        self.routing = routing_pb2_grpc.RoutingServiceStub(routing)

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        self.session = self.routing = None
        for channel in reversed(channels):
            await channel.close()

    async def call(self, method: Callable[..., Awaitable[Resp]], request: object) -> Resp:
        """One unary call with the gateway's deadline; a failure is a :class:`ConsoleError`."""
        try:
            return await method(request, timeout=self._settings.grpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.warning("console call failed: %s", exc.code().name)
            raise _grpc_error(exc) from None

    @property
    def sessions(self) -> session_pb2_grpc.SessionServiceAsyncStub:
        if self.session is None:
            raise ConsoleError(503, "the console is starting or stopping")
        return self.session

    @property
    def router(self) -> routing_pb2_grpc.RoutingServiceAsyncStub:
        if self.routing is None:
            raise ConsoleError(503, "the console is starting or stopping")
        return self.routing


def _html(content: str, status: int = 200) -> Response:
    return HTMLResponse(content, status_code=status, headers=_SECURITY_HEADERS)


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


def _ms(ts: object) -> int:
    to_ms = getattr(ts, "ToMilliseconds", None)
    return int(to_ms()) if to_ms is not None else 0


def _state_name(value: session_pb2.HandoverState.ValueType) -> str:
    return session_pb2.HandoverState.Name(value).removeprefix("HANDOVER_STATE_")


def _cid_link(cid: str) -> str:
    return f'<a href="/handovers/{esc(quote(cid, safe=""))}">{esc(cid)}</a>'


def _settled(results: Sequence[T | BaseException]) -> list[T]:
    """The results of calls made together, once every one has ended (none is left
    running, or cancelled half-way, behind an error page); raises the first error."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


def _hidden(name: str, value: str) -> str:
    return f'<input type=hidden name={name} value="{esc(value)}">'


def _local_path(value: str, default: str) -> str:
    """A path of this console to go back to (never another site: no open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _message_text(message: common_pb2.Message) -> str:
    """What a person reads of a message: the content's text, else its JSON."""
    try:
        content = orjson.loads(message.content_json or "{}")
    except orjson.JSONDecodeError:
        return message.content_json
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return str(content["text"])
    return message.content_json


class Console:
    """The console's routes over one :class:`ConsoleBackends`."""

    def __init__(self, settings: GatewaySettings, console: ConsoleSettings) -> None:
        self.console = console
        self.backends = ConsoleBackends(settings, console)
        self.signer = SessionSigner(console.token)
        self.throttle = LoginThrottle()

    # -- plumbing ------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/handovers", self.handovers, methods=["GET"]),
            Route("/handovers/{cid:str}", self.handover, methods=["GET"]),
            Route("/dead-letters", self.dead_letters, methods=["GET"]),
            Route("/dead-letters/{dl_id:str}/replay", self.replay, methods=["POST"]),
            Route("/dead-letters/{dl_id:str}/discard", self.discard, methods=["POST"]),
            Route("/dead-letters/{dl_id:str}/text", self.show_text, methods=["POST"]),
            Route("/explain", self.explain_form, methods=["GET"]),
            Route("/explain", self.explain, methods=["POST"]),
        ]

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.console.cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def session_of(self, request: Request) -> Session | None:
        return self.signer.verify(request.cookies.get(SESSION_COOKIE, ""))

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        """The urlencoded form (first value of each field); bad or huge → FormError."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                raise FormError(413, "form too large")
            chunks.append(chunk)
        try:
            fields = parse_qs(
                b"".join(chunks).decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=200,
            )
        except (UnicodeDecodeError, ValueError):
            raise FormError(400, "malformed form") from None
        return {key: values[0] for key, values in fields.items()}

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """A POST's Origin (when sent) must be this console's own."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    async def _authorized_form(self, request: Request) -> tuple[Session, dict[str, str]]:
        """The session and form of a POST that passed the login and CSRF checks."""
        session = self.session_of(request)
        if session is None:
            raise ConsoleError(403, "not logged in (or the session expired): log in again")
        form = await self._form(request)
        if not self._same_origin(request) or not same(form.get("csrf", ""), session.csrf):
            log.warning("console: a POST failed the CSRF check")
            raise ConsoleError(403, "CSRF check failed: reload the page and try again")
        return session, form

    async def _guard(
        self, request: Request, render: Callable[[Session], Awaitable[Response]]
    ) -> Response:
        """GET pages: log in first; errors as a page."""
        session = self.session_of(request)
        if session is None:
            return _redirect("/login")
        try:
            return await render(session)
        except ConsoleError as exc:
            return _html(page("Error", "", csrf=session.csrf, error=exc.message), exc.status)

    async def _post(
        self,
        request: Request,
        act: Callable[[Session, dict[str, str]], Awaitable[Response]],
    ) -> Response:
        csrf = ""
        try:
            session, form = await self._authorized_form(request)
            csrf = session.csrf
            return await act(session, form)
        except ConsoleError as exc:
            return _html(page("Error", "", csrf=csrf, error=exc.message), exc.status)

    # -- login -----------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return _redirect("/handovers" if self.session_of(request) else "/login")

    async def login_form(self, request: Request) -> Response:
        nonce = new_nonce()
        response = _html(login_page(nonce))
        self._cookie(response, LOGIN_COOKIE, nonce, 3600)
        return response

    async def login(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except FormError as exc:
            return _html(page("Error", "", error=exc.message), exc.status)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not self._same_origin(request) or not same(form.get("csrf", ""), nonce):
            log.warning(
                "console: a login failed the CSRF check (%s)",
                "another origin"
                if not self._same_origin(request)
                else "no login cookie: behind plain http on a name other than localhost, "
                "set CCBRIDGE_ADMIN_COOKIE_SECURE=false or serve it over https"
                if not nonce
                else "the form's token does not match",
            )
            fresh = new_nonce()
            response = _html(login_page(fresh, error="Reload the page and log in again."), 403)
            self._cookie(response, LOGIN_COOKIE, fresh, 3600)
            return response
        if not self.throttle.allowed():
            log.warning("console: a login refused unchecked: too many wrong tokens lately")
            fresh = new_nonce()
            wait_s = self.throttle.retry_after_s()
            response = _html(
                login_page(fresh, error=f"Too many failed logins. Try again in {wait_s} s."), 429
            )
            response.headers["Retry-After"] = str(wait_s)
            self._cookie(response, LOGIN_COOKIE, fresh, 3600)
            return response
        if not token_matches(form.get("token", ""), self.console.token):
            self.throttle.failed()
            log.warning("console: a login with a wrong token")
            fresh = new_nonce()
            response = _html(login_page(fresh, error="Wrong token."), 401)
            self._cookie(response, LOGIN_COOKIE, fresh, 3600)
            return response
        value, _session = self.signer.issue()
        log.info("console: an operator logged in")
        response = _redirect("/handovers")
        self._cookie(response, SESSION_COOKIE, value, self.signer.ttl_s)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        async def act(session: Session, form: dict[str, str]) -> Response:
            response = _redirect("/login")
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response

        return await self._post(request, act)

    # -- handovers -------------------------------------------------------------------------
    async def _list(self, state: str, token: str, size: int) -> session_pb2.ListHandoversResponse:
        request = session_pb2.ListHandoversRequest(
            state=session_pb2.HandoverState.Value(f"HANDOVER_STATE_{state}"),
            page_size=size,
            page_token=token,
        )
        return await self.backends.call(self.backends.sessions.ListHandovers, request)

    @staticmethod
    def _handover_rows(handovers: list[session_pb2.Handover]) -> list[list[str]]:
        return [
            [
                _cid_link(h.conversation_id),
                esc(_state_name(h.state)),
                esc(h.connector or "-"),
                esc(h.external_id or "-"),
                esc(h.channel or "-"),
                when(_ms(h.created_at)),
                when(_ms(h.updated_at)),
                esc(h.inbox_pending),
                esc(h.outbox_pending),
                f"<span class=err>{esc(h.dead_letters)}</span>" if h.dead_letters else "0",
                f"<span class=err>{esc(h.failure_reason)}</span>" if h.failure_reason else "",
            ]
            for h in handovers
        ]

    _HANDOVER_HEADERS = (
        "Conversation",
        "State",
        "Connector",
        "Case",
        "Channel",
        "Created",
        "Last change",
        "Inbox backlog",
        "Outbox backlog",
        "Dead letters",
        "Last error",
    )

    async def handovers(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        token = request.query_params.get("page", "")
        notice = NOTICES.get(request.query_params.get("notice", ""), "")

        async def render(session: Session) -> Response:
            if state:
                if state not in STATES:
                    raise ConsoleError(400, f"unknown state; one of {', '.join(STATES)}")
                reply = await self._list(state, token, 100)
                more = ""
                if reply.next_page_token:
                    more = (
                        f'<p><a href="/handovers?state={esc(state)}&amp;page='
                        f'{esc(quote(reply.next_page_token))}">Next page</a></p>'
                    )
                body = (
                    table(
                        self._HANDOVER_HEADERS,
                        self._handover_rows(list(reply.handovers)),
                        empty=f"No {state} handovers.",
                    )
                    + more
                )
                return _html(page(f"{state} handovers", body, csrf=session.csrf, notice=notice))
            replies = _settled(
                await asyncio.gather(
                    *(self._list(s, "", PAGE_SIZE) for s in STATES), return_exceptions=True
                )
            )
            sections = []
            for name, reply in zip(STATES, replies, strict=True):
                count = f"{len(reply.handovers)}{'+' if reply.next_page_token else ''}"
                more = (
                    f' <a href="/handovers?state={esc(name)}">all {esc(name)}</a>'
                    if reply.next_page_token
                    else ""
                )
                sections.append(
                    f'<h2 id="{esc(name)}">{esc(name)} ({esc(count)}){more}</h2>'
                    + table(
                        self._HANDOVER_HEADERS,
                        self._handover_rows(list(reply.handovers)),
                        empty=f"No {name} handovers.",
                    )
                )
            return _html(page("Handovers", "".join(sections), csrf=session.csrf, notice=notice))

        return await self._guard(request, render)

    async def handover(self, request: Request) -> Response:
        cid = str(request.path_params["cid"])
        notice = NOTICES.get(request.query_params.get("notice", ""), "")

        async def render(session: Session) -> Response:
            sessions = self.backends.sessions
            # One after the other: a missing handover stops at the first call, and no
            # call is left running behind an error page.
            got = await self.backends.call(
                sessions.GetHandover, session_pb2.GetHandoverRequest(conversation_id=cid)
            )
            timeline = await self.backends.call(
                sessions.GetTimeline,
                session_pb2.GetTimelineRequest(conversation_id=cid, limit=TIMELINE_LIMIT),
            )
            letters = await self.backends.call(
                sessions.ListDeadLetters,
                session_pb2.ListDeadLettersRequest(conversation_id=cid, page_size=DEAD_LETTER_PAGE),
            )
            h = got.handover
            summary = table(
                self._HANDOVER_HEADERS, self._handover_rows([h]), empty="No such handover."
            )
            events = [
                [
                    when(_ms(e.at)),
                    esc(
                        session_pb2.TimelineEventKind.Name(e.kind)
                        .removeprefix("TIMELINE_EVENT_KIND_")
                        .lower()
                        .replace("_", "-")
                    ),
                    esc(_LANES.get(e.queue, e.queue)),
                    esc(e.message_id or ""),
                    esc(e.state or ""),
                    esc(e.detail or ""),
                ]
                for e in timeline.events
            ]
            body = (
                summary
                + "<h2>Timeline (newest first)</h2>"
                + table(
                    ("Time", "Event", "Direction", "Message id", "State", "Detail"),
                    events,
                    empty="No events recorded.",
                )
                + "<h2>Dead letters</h2>"
                + self._letters_table(
                    list(letters.dead_letters), session.csrf, back=f"/handovers/{quote(cid)}"
                )
            )
            return _html(page(f"Handover {cid}", body, csrf=session.csrf, notice=notice))

        return await self._guard(request, render)

    # -- dead letters ----------------------------------------------------------------------
    def _letters_table(
        self,
        letters: list[session_pb2.DeadLetter],
        csrf: str,
        *,
        back: str,
        revealed: str = "",
    ) -> str:
        rows = []
        for d in letters:
            path = f"/dead-letters/{quote(d.id, safe='')}"
            back_field = _hidden("back", back)
            if d.id == revealed:
                text = f"<pre>{esc(_message_text(d.message))}</pre>"
            else:
                text = "<span class=redacted>hidden</span> " + button_form(
                    f"{path}/text",
                    "Show text",
                    csrf,
                    extra=_hidden("conversation_id", d.conversation_id),
                )
            rows.append(
                [
                    when(_ms(d.dead_at)),
                    _cid_link(d.conversation_id),
                    esc(_LANES.get(d.queue, d.queue)),
                    esc(d.attempts),
                    f"<span class=err>{esc(d.reason)}</span>",
                    esc(d.message.id),
                    esc(d.message.content_type or "-"),
                    text,
                    button_form(f"{path}/replay", "Replay", csrf, extra=back_field)
                    + " "
                    + button_form(f"{path}/discard", "Discard", csrf, extra=back_field),
                ]
            )
        return table(
            (
                "Dead at",
                "Conversation",
                "Direction",
                "Attempts",
                "Last error",
                "Message id",
                "Type",
                "Text",
                "Actions",
            ),
            rows,
            empty="No dead letters.",
        )

    async def dead_letters(self, request: Request) -> Response:
        token = request.query_params.get("page", "")
        notice = NOTICES.get(request.query_params.get("notice", ""), "")

        async def render(session: Session) -> Response:
            reply = await self.backends.call(
                self.backends.sessions.ListDeadLetters,
                session_pb2.ListDeadLettersRequest(page_size=DEAD_LETTER_PAGE, page_token=token),
            )
            more = ""
            if reply.next_page_token:
                more = (
                    f'<p><a href="/dead-letters?page={esc(quote(reply.next_page_token))}">'
                    "Next page</a></p>"
                )
            body = (
                "<p class=muted>Message text is hidden; “Show text” reveals one letter's "
                "text and is logged.</p>"
                + self._letters_table(list(reply.dead_letters), session.csrf, back="/dead-letters")
                + more
            )
            return _html(page("Dead letters", body, csrf=session.csrf, notice=notice))

        return await self._guard(request, render)

    async def replay(self, request: Request) -> Response:
        dl_id = str(request.path_params["dl_id"])

        async def act(session: Session, form: dict[str, str]) -> Response:
            await self.backends.call(
                self.backends.sessions.ReplayDeadLetter,
                session_pb2.ReplayDeadLetterRequest(id=dl_id),
            )
            log.info("console: dead letter %s replayed", dl_id)
            back = _local_path(form.get("back", ""), "/dead-letters")
            return _redirect(f"{back}?notice=replayed")

        return await self._post(request, act)

    async def discard(self, request: Request) -> Response:
        dl_id = str(request.path_params["dl_id"])

        async def act(session: Session, form: dict[str, str]) -> Response:
            await self.backends.call(
                self.backends.sessions.DiscardDeadLetter,
                session_pb2.DiscardDeadLetterRequest(id=dl_id),
            )
            log.info("console: dead letter %s discarded", dl_id)
            back = _local_path(form.get("back", ""), "/dead-letters")
            return _redirect(f"{back}?notice=discarded")

        return await self._post(request, act)

    async def show_text(self, request: Request) -> Response:
        dl_id = str(request.path_params["dl_id"])

        async def act(session: Session, form: dict[str, str]) -> Response:
            cid = form.get("conversation_id", "")
            reply = await self.backends.call(
                self.backends.sessions.ListDeadLetters,
                session_pb2.ListDeadLettersRequest(conversation_id=cid, page_size=1000),
            )
            letters = list(reply.dead_letters)
            if not any(d.id == dl_id for d in letters):
                raise ConsoleError(404, "no such dead letter (replayed, discarded or expired)")
            # Who saw what: the reveal is logged (the letter's id, never the text).
            log.warning("console: an operator revealed the text of dead letter %s", dl_id)
            body = self._letters_table(letters, session.csrf, back="/dead-letters", revealed=dl_id)
            return _html(page(f"Dead letters of {cid}", body, csrf=session.csrf))

        return await self._post(request, act)

    # -- routing explain -------------------------------------------------------------------
    @staticmethod
    def _explain_page(csrf: str, form: dict[str, str], result: str = "") -> str:
        def field(name: str, label: str, hint: str = "") -> str:
            return (
                f'<label>{esc(label)} <input name={name} value="{esc(form.get(name, ""))}">'
                f"{f' <span class=muted>{esc(hint)}</span>' if hint else ''}</label>"
            )

        body = (
            "<form method=post action=/explain>"
            + f'<input type=hidden name=csrf value="{esc(csrf)}">'
            + field("conversation_id", "Conversation id")
            + field("channel", "Channel", "e.g. WHATSAPP")
            + field("tags", "Tags", "comma-separated")
            + "<label>Metadata <textarea name=metadata rows=3>"
            + esc(form.get("metadata", ""))
            + "</textarea> <span class=muted>one key=value a line</span></label>"
            + field("end_user", "End user")
            + field("business_sender", "Business sender")
            + field("language", "Language")
            + "<p><button type=submit>Explain</button></p></form>"
            + result
        )
        return page("Routing explain", body, csrf=csrf)

    async def explain_form(self, request: Request) -> Response:
        async def render(session: Session) -> Response:
            return _html(self._explain_page(session.csrf, {}))

        return await self._guard(request, render)

    async def explain(self, request: Request) -> Response:
        async def act(session: Session, form: dict[str, str]) -> Response:
            metadata: dict[str, str] = {}
            for line in form.get("metadata", "").splitlines():
                if not line.strip():
                    continue
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    raise ConsoleError(400, f"metadata line without key=value: {line[:80]}")
                metadata[key.strip()] = value.strip()
            context = common_pb2.ConversationContext(
                conversation_id=form.get("conversation_id", "").strip(),
                channel=form.get("channel", "").strip(),
                tags=[t.strip() for t in form.get("tags", "").split(",") if t.strip()],
                metadata=metadata,
                end_user=form.get("end_user", "").strip(),
                business_sender=form.get("business_sender", "").strip(),
                language=form.get("language", "").strip(),
            )
            reply = await self.backends.call(
                self.backends.router.Explain, routing_pb2.ExplainRequest(context=context)
            )
            decision = MessageToDict(reply.decision, preserving_proto_field_name=True)
            result = (
                "<h2>Decision</h2>"
                + table(
                    ("Field", "Value"),
                    ([esc(k), esc(v)] for k, v in decision.items()),
                    empty="(default route, no fields set)",
                )
                + "<p class=muted>Rules file: "
                + esc(reply.rules_source or "none (default route)")
                + "</p>"
                + "<h2>Rules evaluated</h2>"
                + table(
                    ("Rule", "Matched", "Reasons"),
                    (
                        [
                            esc(ev.rule),
                            "yes" if ev.matched else "no",
                            "<br>".join(esc(r) for r in ev.reasons),
                        ]
                        for ev in reply.evaluations
                    ),
                    empty="No rules (the default route).",
                )
            )
            return _html(self._explain_page(session.csrf, form, result))

        return await self._post(request, act)


def create_console_app(settings: GatewaySettings) -> Starlette:
    """The console app (``settings.console`` must be set); its lifespan opens the
    operator channels. ``app.state.console`` is the :class:`Console`."""
    if settings.console is None:
        raise ValueError("the console is off (CCBRIDGE_ADMIN_TOKEN is not set)")
    console = Console(settings, settings.console)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.backends.open()
        try:
            yield
        finally:
            await console.backends.close()

    app = Starlette(routes=console.routes(), lifespan=lifespan)
    app.router.redirect_slashes = False
    app.state.console = console
    return app
