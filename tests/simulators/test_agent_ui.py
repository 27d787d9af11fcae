"""The simulators' agent pages share one stylesheet and one script (simulators/agent_ui.py):
each page loads them, none defines their helpers again, and they are served."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from ccbridge.simulators import agent_ui

PAGES = sorted(Path(agent_ui.__file__).parent.glob("*/ui.html"))
SHARED = re.findall(r"^(?:async )?function (\w+)", agent_ui.SHARED_JS.read_text(), re.M)


def test_every_simulator_has_a_page() -> None:
    assert {p.parent.name for p in PAGES} >= {"ccaas", "genesys", "zendesk"}
    assert {"el", "post", "safeUrl", "fileNode", "wireUpDown"} <= set(SHARED)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name)
def test_pages_load_the_shared_files_and_repeat_none_of_them(page: Path) -> None:
    html = page.read_text()
    assert '<link rel="stylesheet" href="/_sim/ui.css">' in html
    assert html.index('<script src="/_sim/ui.js"></script>') < html.index("<script>")
    defined = re.findall(r"^(?:async )?function (\w+)", html, re.M)
    assert not set(defined) & set(SHARED)
    assert "const drafts" not in html


async def test_the_shared_files_are_served() -> None:
    page = PAGES[0]
    app = Starlette(routes=agent_ui.routes(page))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        ui = await client.get("/_sim/ui")
        css = await client.get("/_sim/ui.css")
        js = await client.get("/_sim/ui.js")
    assert ui.text == page.read_text() and ui.headers["content-type"].startswith("text/html")
    assert css.text == agent_ui.SHARED_CSS.read_text()
    assert css.headers["content-type"].startswith("text/css")
    assert js.text == agent_ui.SHARED_JS.read_text()
    assert js.headers["content-type"].startswith("text/javascript")
