"""One logging stack for every process: stdlib logging with a JSON formatter.

Request context (request id, conversation id, rpc) lives in contextvars, set by the gRPC
interceptor and the gateway middleware, and is added to every record, with the trace and
span ids (``trace_id``, ``span_id``: W3C hex) of the active span when tracing records one
(services/runtime/tracing.py). Message text is
never put into log records by ccbridge code; secrets are wrapped in ``Secret``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson
from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
conversation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "conversation_id", default=""
)
rpc_var: contextvars.ContextVar[str] = contextvars.ContextVar("rpc", default="")

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line, with the context variables."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("conversation_id", conversation_id_var),
            ("rpc", rpc_var),
        ):
            value = var.get()
            if value:
                doc[key] = value
        ids = trace_ids()
        if ids is not None:
            doc["trace_id"], doc["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(doc, default=str, option=_DUMPS).decode()
        except orjson.JSONEncodeError:
            # A lone surrogate (text decoded with surrogateescape) or an integer beyond 64
            # bits: the record is still written, every value as escaped text.
            return orjson.dumps({key: _escaped(value) for key, value in doc.items()}).decode()


# Dataclasses and datetimes go through default=str like any other object: their str is
# what the code chose to show (Secret, a dataclass, shows '***'; orjson would write its
# fields).
_DUMPS = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
)


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the active span as W3C hex, None when no span records
    (always None with tracing off: no provider, no span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _escaped(value: object) -> str:
    return str(value).encode("utf-8", "backslashreplace").decode()


class ConsoleFormatter(logging.Formatter):
    """Human-readable single-line format for local runs."""

    def __init__(self, component: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + component + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        cid = conversation_id_var.get()
        if cid:
            text = f"{text} [conversation={cid}]"
        ids = trace_ids()
        return f"{text} [trace={ids[0]} span={ids[1]}]" if ids is not None else text


def configure_logging(component: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configures the root logger once for this process (call from ``__main__``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component) if fmt == "json" else ConsoleFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would carry URLs with secrets (webhook path token). The HTTP
    # client (aiohttp) logs no request lines.
    logging.getLogger("uvicorn.access").disabled = True
