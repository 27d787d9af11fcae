"""The webhook adapter as deployed: no injected transport, so its POSTs go through the
lean aiohttp client (services/runtime/http.py) to real HTTP servers on loopback — the
CCaaS simulator, and small apps for the far side's failure modes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.services.connector.adapters.webhook import MAX_RESPONSE_BYTES, WebhookAdapter
from ccbridge.services.runtime.http import LeanPoster, PostFailed, PostTimeout
from ccbridge.simulators.ccaas import CcaasState, create_app
from tests.services.connector.test_webhook_batch import (
    SECRET,
    Far,
    case,
    customer_ids,
    open_cases,
    settings,
)
from tests.simulators.ccaas.support import serve_app

TWO = 2


@pytest.fixture
async def sim() -> AsyncIterator[Far]:
    state = CcaasState()
    async with serve_app(create_app(state, secret=SECRET, bridge_webhook_url=None)) as url:
        yield Far(state, f"{url}/webhook", float(int(time.time())))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_batches_and_single_events_through_the_lean_client(sim: Far) -> None:
    far = sim
    adapter = WebhookAdapter(settings(far.url, 10), clock=lambda: far.now)
    try:
        assert adapter._lean is not None  # the deployed path, not httpx
        a, b = await open_cases(adapter, "conv-a", "conv-b")
        far.state.close_by_agent(b, "resolved")
        results = await adapter.post_customer_messages(
            [case(a, "conv-a", "a1", "a2"), case(b, "conv-b", "b1")]
        )
        assert [r.delivered for r in results] == [2, 0]
        closed = results[1].error
        assert closed is not None and (closed.status, closed.retryable) == (409, False)
        assert customer_ids(far.state, a) == ["a1", "a2"]
        # The CCaaS's 503 with Retry-After reaches the caller as a retryable error.
        far.state.inject_failures(1, 503, retry_after=3)
        (busy,) = await adapter.post_customer_messages([case(a, "conv-a", "a3")])
        assert busy.error is not None
        assert (busy.error.retryable, busy.error.retry_after) == (True, 3.0)
        # Single events (case.open replayed by key, case.close) work the same way.
        assert (await open_cases(adapter, "conv-a")) == [a]
        assert await adapter.close_case(a, "conv-a", "done", "close:conv-a") is False
    finally:
        await adapter.aclose()


async def test_the_far_sides_failure_modes() -> None:
    async def huge(request: Request) -> Response:
        return Response(b"[" + b"1," * MAX_RESPONSE_BYTES + b"1]", media_type="application/json")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(2.0)
        return Response(b"{}")

    app = Starlette(
        routes=[Route("/huge", huge, methods=["POST"]), Route("/slow", slow, methods=["POST"])]
    )
    async with serve_app(app) as url:
        poster = LeanPoster(timeout_s=0.3, headers={"User-Agent": "test"})
        try:
            status, raw, _ = await poster.post(
                f"{url}/huge", b"{}", {}, max_answer_bytes=MAX_RESPONSE_BYTES
            )
            assert status == 200 and raw is None  # reading stopped at the limit
            try:
                await poster.post(f"{url}/slow", b"{}", {}, max_answer_bytes=1024)
            except PostTimeout:
                pass
            else:
                raise AssertionError("a slow far side must time out")
        finally:
            await poster.aclose()
    poster = LeanPoster(timeout_s=1.0, headers={})
    try:
        try:
            await poster.post(
                f"http://127.0.0.1:{_closed_port()}/x", b"{}", {}, max_answer_bytes=1024
            )
        except PostFailed as exc:
            assert "Connect" in str(exc) or "Connection" in str(exc)
        else:
            raise AssertionError("a closed port must fail")
    finally:
        await poster.aclose()
    # Through the adapter, both become retryable far-side errors.
    adapter = WebhookAdapter(settings(f"http://127.0.0.1:{_closed_port()}/webhook", 10))
    try:
        results = await adapter.post_customer_messages(
            [case("CASE-1", "conv-a", "a1"), case("CASE-2", "conv-b", "b1")]
        )
        assert len(results) == TWO
        for result in results:
            assert result.delivered == 0 and result.error is not None and result.error.retryable
    finally:
        await adapter.aclose()
