"""The operator console's HTML: one layout, tables and forms, server-rendered.

No template engine, no JavaScript: every value goes through :func:`esc` (``html.escape``
with quotes) before it is placed in the page, and the pages' Content-Security-Policy
forbids scripts altogether (gateway/console.py). Times are UTC with an age beside them.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header b{margin-right:16px}
header form{margin-left:auto}main{padding:16px}
h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:8px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}td.num{text-align:right}
.err{color:#cf222e}.muted{color:#57606a}.notice{background:#dafbe1;padding:8px}
.alert{background:#ffebe9;padding:8px}.redacted{color:#57606a;font-style:italic}
form.inline{display:inline}button{cursor:pointer}
label{display:block;margin-top:8px}input,textarea{font:inherit;width:28em;max-width:100%}
"""


def esc(value: object) -> str:
    """The value as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def when(ms: int, now_ms: int | None = None) -> str:
    """``2026-12-06 11:20:03Z (3m 12s ago)``; ``-`` for unset."""
    if ms <= 0:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} <span class=muted>({esc(age(ms, now_ms))} ago)</span>"


def age(ms: int, now_ms: int | None = None) -> str:
    """A duration since ``ms`` in its two largest units (``2d 3h``, ``5m 2s``)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    seconds = max(0, (now - ms) // 1000)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def csrf_field(csrf: str) -> str:
    return f'<input type=hidden name=csrf value="{esc(csrf)}">'


def button_form(action: str, label: str, csrf: str, *, extra: str = "") -> str:
    """A one-button POST form with the CSRF token."""
    return (
        f'<form class=inline method=post action="{esc(action)}">{csrf_field(csrf)}{extra}'
        f"<button type=submit>{esc(label)}</button></form>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """A table of already-escaped cells (``rows``); ``empty`` when there are none."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f"<p class=muted>{esc(empty)}</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, *, csrf: str = "", notice: str = "", error: str = "") -> str:
    """The layout: navigation (and logout) when logged in, a notice or error, the body."""
    nav = ""
    if csrf:
        nav = (
            "<a href=/handovers>Handovers</a><a href=/dead-letters>Dead letters</a>"
            "<a href=/explain>Routing explain</a>" + button_form("/logout", "Log out", csrf)
        )
    banner = ""
    if notice:
        banner += f"<p class=notice role=status>{esc(notice)}</p>"
    if error:
        banner += f"<p class=alert role=alert>{esc(error)}</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · ccbridge console</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><header><b>ccbridge console</b>{nav}</header>"
        f"<main><h1>{esc(title)}</h1>{banner}{body}</main></body></html>"
    )


def login_page(nonce: str, *, error: str = "") -> str:
    form = (
        f"<form method=post action=/login>{csrf_field(nonce)}"
        "<label>Admin token <input type=password name=token autocomplete=current-password "
        "required autofocus></label><p><button type=submit>Log in</button></p></form>"
    )
    return page("Log in", form, error=error)
