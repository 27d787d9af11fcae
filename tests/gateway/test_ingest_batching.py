"""Concurrent webhooks share Session.Ingest calls (gateway/backends.py IngestBatcher):
every request still answers only after its own messages were stored, with its own
counts, in order; a failed call fails each request in it with 503."""

from __future__ import annotations

import asyncio

import httpx

from ccbridge.services.runtime.errors import Unavailable
from ccbridge.session.v1 import session_pb2
from tests.gateway.conftest import WEBHOOK_TOKEN, Peers, assert_error
from tests.gateway.test_infobip_legacy import CONV, infobip_message, ingested

URL = f"/webhooks/infobip/{WEBHOOK_TOKEN}"


async def test_concurrent_webhooks_share_ingest_calls(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    peers.session.delay_s = 0.2  # calls stay in flight while more requests arrive
    bodies = [
        [infobip_message(f"r{r}-m{m}") for m in range(3)] if r % 2 else infobip_message(f"r{r}")
        for r in range(12)
    ]
    answers = await asyncio.gather(*(gateway.post(URL, json=body) for body in bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        size = len(body) if isinstance(body, list) else 1
        assert answer.json() == {"accepted": size, "duplicates": 0, "ignored": 0}
    calls = peers.session.rpc_calls("Ingest")
    assert len(calls) < len(bodies)  # batched
    ids = [m.id for m in ingested(peers)]
    assert sorted(ids) == sorted(
        m["id"] for body in bodies for m in (body if isinstance(body, list) else [body])
    )
    for r in range(1, 12, 2):  # one request's messages stay together and in order
        start = ids.index(f"r{r}-m0")
        assert ids[start : start + 3] == [f"r{r}-m0", f"r{r}-m1", f"r{r}-m2"]


async def test_a_failed_batch_fails_each_request_with_503(
    gateway: httpx.AsyncClient, peers: Peers
) -> None:
    peers.session.open(CONV)
    peers.session.delay_s = 0.1
    peers.session.error = Unavailable("redis down")
    answers = await asyncio.gather(
        *(gateway.post(URL, json=infobip_message(f"f{i}")) for i in range(6))
    )
    for answer in answers:
        assert_error(answer, 503, "unavailable")
        assert answer.headers["retry-after"] == "1"
    peers.session.error = None
    peers.session.delay_s = 0.0
    retried = await gateway.post(URL, json=infobip_message("f0"))
    assert retried.status_code == 200
    assert retried.json()["accepted"] == 1
    assert all(isinstance(c.request, session_pb2.IngestRequest) for c in peers.session.calls)
