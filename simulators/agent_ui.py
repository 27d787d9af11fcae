"""The simulators' agent pages: each simulator's own ``ui.html`` at ``/_sim/ui``, and the
stylesheet and script they share (``agent_ui.css``, ``agent_ui.js``, package data) at
``/_sim/ui.css`` and ``/_sim/ui.js``."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

_HERE = Path(__file__).parent
SHARED_CSS = _HERE / "agent_ui.css"
SHARED_JS = _HERE / "agent_ui.js"


def routes(page: Path) -> list[Route]:
    """GET ``/_sim/ui`` (``page``), ``/_sim/ui.css`` and ``/_sim/ui.js`` (read here, once)."""
    html = page.read_text(encoding="utf-8")
    style = SHARED_CSS.read_text(encoding="utf-8")
    script = SHARED_JS.read_text(encoding="utf-8")

    async def ui(request: Request) -> Response:
        return HTMLResponse(html)

    async def css(request: Request) -> Response:
        return Response(style, media_type="text/css")

    async def js(request: Request) -> Response:
        return Response(script, media_type="text/javascript")

    return [
        Route("/_sim/ui", ui, methods=["GET"]),
        Route("/_sim/ui.css", css, methods=["GET"]),
        Route("/_sim/ui.js", js, methods=["GET"]),
    ]
