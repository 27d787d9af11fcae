"""The floor: the least an HTTP edge can do for one inbound Infobip webhook, to compare
the mesh against in the same run.

A bare Starlette app on uvicorn with the gateway's HTTP stack settings (uvloop,
httptools, no access log, no WebSocket parser). Its handler reads the body, parses the
same webhook JSON with orjson, and does the durable Redis write the mesh does for one
inbound message: Session's own ingest Lua script (state check, dedupe SADD + EXPIRE,
RPUSH), one round trip, then answers 200. No validation beyond the two ids, no gRPC,
no metrics, no translation to protobuf.

``python -m bench.floor --port N --redis-url URL [--prefix flr]``
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccbridge.services.session.store import _INGEST

DEDUPE_TTL_S = 7 * 86400


def create_app(redis_url: str, prefix: str) -> Starlette:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A blocking pool (waits for a free connection) so that a burst above 64
        # requests in flight queues instead of failing: the floor never answers 5xx.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=64, timeout=5.0, socket_timeout=5.0
        )
        redis = aioredis.Redis(connection_pool=pool)
        state["script"] = redis.register_script(_INGEST)
        try:
            yield
        finally:
            await redis.aclose()
            await pool.disconnect()

    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            doc = orjson.loads(body)
            mid, cid = doc["id"], doc["conversationId"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Response(b'{"error":"invalid"}', 400, media_type="application/json")
        if not isinstance(mid, str) or not isinstance(cid, str):
            return Response(b'{"error":"invalid"}', 400, media_type="application/json")
        outcome = await state["script"](
            keys=[f"{prefix}:h:{{{cid}}}", f"{prefix}:in:{{{cid}}}", f"{prefix}:seen:{{{cid}}}"],
            args=[
                mid,
                body,
                DEDUPE_TTL_S,
                doc.get("channel") or "",
                doc.get("from") or "",
                doc.get("to") or "",
                0,
            ],
        )
        accepted = int(outcome) == 1
        return Response(
            orjson.dumps({"accepted": int(accepted), "ignored": int(not accepted)}),
            media_type="application/json",
        )

    return Starlette(
        routes=[Route("/webhooks/infobip/{token}", webhook, methods=["POST"])], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="flr")
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(args.redis_url, args.prefix),
        host="127.0.0.1",
        port=args.port,
        loop="auto",
        http="auto",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=75,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
