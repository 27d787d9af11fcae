"""OpenTelemetry tracing of every process: off by default, OTLP when configured.

:func:`setup_tracing` is called once per process, by :func:`~ccbridge.services.runtime.
entry.run_component` (every service and the gateway), right after logging. With tracing
off it installs nothing: no tracer provider, no instrumentation, and every helper below
returns at its first check, so the hot paths pay one attribute read. With
``CCBRIDGE_TRACING=otlp`` (the default as soon as ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set) it installs the SDK's tracer provider with a
batching OTLP/gRPC exporter and the official instrumentations:

- every gRPC hop, client and server (``opentelemetry-instrumentation-grpc``'s ``grpc.aio``
  interceptors; health checks and reflection are left out);
- the gateway's HTTP edge (``opentelemetry-instrumentation-asgi``'s middleware, added by
  :func:`asgi_middleware`; span names and URL attributes carry the *route template*, never
  the raw path, which holds the webhook and media tokens; a public edge, it ignores the
  callers' ``traceparent``/``baggage``: each request starts a trace);
- every far-side call (``opentelemetry-instrumentation-aiohttp-client``: the product's one
  HTTP client; the query string is left out of the recorded URL);
- redis-py commands (``opentelemetry-instrumentation-redis``; it records the command name
  with its arguments replaced by ``?``). The hot paths' pipelined round trips go through
  Session's own RESP writer, which no instrumentation knows: :func:`redis_batch_span`
  gives each one a span in the same shape.

Everything else comes from the standard ``OTEL_*`` variables, read by the SDK itself:
``OTEL_SERVICE_NAME`` (default ``ccbridge-<component>``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG`` (default parent-based always-on),
``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, certificate, insecure, timeout),
``OTEL_BSP_*`` (batching), ``OTEL_PROPAGATORS`` (default W3C trace context + baggage).

Queued messages: a message waits in Redis between the request that queued it and the
delivery. :func:`traceparent` gives the W3C ``traceparent`` of the active span, stored with
the message (``Message.trace_parent``); :func:`delivery_span` starts the delivery's span
as a child of the first message's context, with a link to every message it carries (the
relay carries many), so a trace runs from an Infobip webhook to the CCaaS post and from an
agent reply to Infobip's Create Message. The conversation id is a span attribute
(:data:`CONVERSATION_ID`), never a metric label.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ccbridge.services.runtime.logging import conversation_id_var

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.middleware import Middleware
    from starlette.types import ASGIApp, Receive, Scope, Send

MODES = ("off", "otlp")
# Span (and link) attributes; never metric labels.
CONVERSATION_ID = "ccbridge.conversation_id"
MESSAGE_ID = "ccbridge.message_id"
MESSAGE_COUNT = "ccbridge.message_count"
TRACER_NAME = "ccbridge"
# gRPC services left untraced: probes every second, and operators' tooling.
_UNTRACED_SERVICES = ("grpc.health.", "grpc.reflection.")
# The gateway's routes left untraced (probes and scrapes); a regex list, as
# OTEL_PYTHON_EXCLUDED_URLS.
_UNTRACED_URLS = "/healthz$,/readyz$,/metrics$"

_W3C = TraceContextTextMapPropagator()


class Instrumentor(Protocol):
    """What tracing uses of an OpenTelemetry instrumentor (``BaseInstrumentor``, whose
    module is not type-checked upstream)."""

    def instrument(self, **kwargs: Any) -> None: ...

    def uninstrument(self, **kwargs: Any) -> None: ...


@dataclass
class Tracing:
    """Tracing as installed in this process; :meth:`shutdown` removes the instrumentation
    and flushes what is still batched (called once the component has stopped)."""

    provider: TracerProvider
    tracer: trace.Tracer
    instrumentors: list[Instrumentor] = field(default_factory=list)

    def shutdown(self) -> None:
        global _active
        if _active is self:
            _active = None
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        self.instrumentors.clear()
        self.provider.shutdown()


_active: Tracing | None = None


def active() -> Tracing | None:
    """The process's tracing, None when off."""
    return _active


def setup_tracing(
    component: str,
    mode: str,
    *,
    environ: Mapping[str, str] = os.environ,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> Tracing | None:
    """Installs tracing for this process (see the module docstring); None when off.

    ``exporter``: tests pass an in-memory one (exported span by span) instead of OTLP;
    ``set_global=False`` leaves OpenTelemetry's global tracer provider alone (tests that
    set up tracing more than once in one process)."""
    global _active
    if mode == "off" or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    # Imported only when on: a process with tracing off loads none of the SDK.
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if _active is not None:
        raise RuntimeError("tracing is already set up in this process")
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {SERVICE_NAME: f"ccbridge-{component}"})
    # No sampler given: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    tracing = Tracing(provider, provider.get_tracer(TRACER_NAME))
    traced = negate(any_of(*(service_prefix(name) for name in _UNTRACED_SERVICES)))
    instrumentors: list[tuple[Instrumentor, dict[str, Any]]] = [
        # The grpc instrumentation ships no type information.
        (GrpcAioInstrumentorServer(filter_=traced), {}),  # type: ignore[no-untyped-call]
        (GrpcAioInstrumentorClient(filter_=traced), {}),  # type: ignore[no-untyped-call]
        (AioHttpClientInstrumentor(), {"url_filter": _without_query}),
        (RedisInstrumentor(), {}),
    ]
    try:
        for instrumentor, options in instrumentors:
            instrumentor.instrument(tracer_provider=provider, **options)
            tracing.instrumentors.append(instrumentor)
    except BaseException:
        tracing.shutdown()
        raise
    _active = tracing
    return tracing


def _without_query(url: object) -> str:
    """Far-side URLs as recorded (``url``: aiohttp's yarl URL): a query may carry data
    (e.g. a search by phone number)."""
    return str(url).partition("?")[0].partition("#")[0]


def traceparent() -> str:
    """The W3C ``traceparent`` of the active span ('' when tracing is off or no span is
    active): stored with a queued message to continue its trace at delivery (a trace
    not sampled stays so: its flags go with it)."""
    if _active is None:
        return ""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def bind_conversation(cid: str) -> None:
    """Sets the conversation of the running request or step: the logs' context variable
    and, when tracing, the active span's :data:`CONVERSATION_ID` attribute."""
    conversation_id_var.set(cid)
    if _active is not None and cid:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(CONVERSATION_ID, cid)


class Queued(Protocol):
    """A queued message as a delivery sees it (``common.v1.Message``): its stored
    ``trace_parent`` ('' for messages queued with tracing off, or before it existed)."""

    @property
    def trace_parent(self) -> str: ...

    @property
    def conversation_id(self) -> str: ...

    @property
    def id(self) -> str: ...


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def delivery_span(name: str, carried: Iterable[Queued]) -> contextlib.AbstractContextManager[None]:
    """The span of one delivery of queued messages: a child of the first carried
    message's context (so a message's trace runs on to the far side), linked to every
    carried message's context, each link with the message's conversation and id. With
    one conversation the span has its :data:`CONVERSATION_ID`. With tracing off: nothing
    (``carried`` is not even iterated)."""
    if _active is None:
        return _OFF
    return _delivery_span(_active, name, carried)


@contextlib.contextmanager
def _delivery_span(tracing: Tracing, name: str, carried: Iterable[Queued]) -> Iterator[None]:
    parent = None
    links: list[trace.Link] = []
    conversations: set[str] = set()
    count = 0
    for item in carried:
        count += 1
        conversations.add(item.conversation_id)
        if not item.trace_parent:
            continue
        context = _W3C.extract({"traceparent": item.trace_parent})
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            continue  # not a traceparent: the message is delivered all the same
        if parent is None:
            parent = context
        links.append(
            trace.Link(span_context, {CONVERSATION_ID: item.conversation_id, MESSAGE_ID: item.id})
        )
    attributes: dict[str, str | int] = {MESSAGE_COUNT: count}
    if len(conversations) == 1:
        attributes[CONVERSATION_ID] = next(iter(conversations))
    with tracing.tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.INTERNAL, links=links, attributes=attributes
    ):
        yield


def redis_batch_span(commands: Sequence[Sequence[Any]]) -> contextlib.AbstractContextManager[None]:
    """A client span for one round trip of Session's own pipelined RESP writer
    (services/runtime/redis.py, ``RawPipeline``: the hot paths' Redis calls), which the
    redis-py instrumentation cannot see. Named and described as that instrumentation
    names a pipeline: the command names, never their arguments. Nothing when off."""
    if _active is None:
        return _OFF
    return _redis_batch_span(_active, commands)


@contextlib.contextmanager
def _redis_batch_span(tracing: Tracing, commands: Sequence[Sequence[Any]]) -> Iterator[None]:
    names = dict.fromkeys(_command_name(command) for command in commands)
    with tracing.tracer.start_as_current_span(
        " ".join(list(names)[:_NAMED_COMMANDS]),
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system": "redis", "db.redis.pipeline_length": len(commands)},
    ):
        yield


_NAMED_COMMANDS = 8


def _command_name(command: Sequence[Any]) -> str:
    name = command[0] if command else ""
    return name.decode() if isinstance(name, bytes) else str(name)


def detached() -> contextlib.AbstractContextManager[None]:
    """Runs what it wraps outside the active trace: a long-lived stream opened while
    serving one request belongs to no request's trace (each message on it carries its
    own context). Nothing when off."""
    if _active is None:
        return _OFF
    return _detached()


@contextlib.contextmanager
def _detached() -> Iterator[None]:
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


def asgi_middleware() -> Middleware | None:
    """The gateway's tracing middleware (outermost), None when tracing is off."""
    tracing = _active
    if tracing is None:
        return None
    from starlette.middleware import Middleware

    return Middleware(_PublicEdge, tracing=tracing)


# A caller's trace context and baggage: the gateway is a public edge, so each request
# starts a trace of its own (a caller must not pick trace ids, force sampling or send
# baggage on through every internal hop). Infobip sends none of them.
_CALLER_CONTEXT = frozenset({b"traceparent", b"tracestate", b"baggage"})


class _PublicEdge:
    """OpenTelemetry's ASGI middleware (one server span per request) shown the request
    without the caller's trace headers; the app gets the request as it was sent."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        self.app = app
        self.traced = OpenTelemetryMiddleware(
            self._inner,
            excluded_urls=_UNTRACED_URLS,
            default_span_details=_route_details,
            tracer_provider=tracing.provider,
            # One span per request: no span per body chunk received or sent.
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        view = dict(scope)
        view["headers"] = [h for h in scope["headers"] if h[0] not in _CALLER_CONTEXT]
        view[_SCOPE] = scope
        await self.traced(view, receive, send)

    async def _inner(self, view: Scope, receive: Receive, send: Send) -> None:
        await self.app(view[_SCOPE], receive, send)


_SCOPE = "ccbridge.scope"


def _route_details(scope: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Span name and URL attributes from the route *template* (``POST
    /webhooks/infobip/{token}``): the raw path holds secrets (the webhook token, media
    tokens). These attributes replace the ones the middleware collects from the path."""
    from starlette.routing import Match

    method = str(scope.get("method", "HTTP"))
    template = "unmatched"
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            template = str(getattr(route, "path", template))
            break
    host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host}{template}"
    # Old (default) and new HTTP semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN).
    attributes = {"http.route": template, "http.target": template, "http.url": url}
    attributes |= {"url.path": template, "url.full": url}
    return f"{method} {template}", attributes
