"""The one nesting limit of JSON that comes in over HTTP: the gateway's JSON routes and
the CCaaS webhooks the connector parses answer 400 / INVALID_ARGUMENT beyond it.

Real payloads nest a handful of levels; deep documents only cost stack and CPU further
on (orjson refuses to serialize beyond 254 levels, which would be a 5xx).
"""

from __future__ import annotations

MAX_JSON_DEPTH = 64


def too_deep(body: bytes, doc: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``doc`` (parsed from ``body``) nests arrays and objects over ``limit``
    levels (``[]`` and ``{}`` are one level)."""
    # Cheap first: a document cannot be deeper than it has opening brackets.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    level: list[dict[object, object] | list[object]] = [doc] if isinstance(doc, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[dict[object, object] | list[object]] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            below.extend(c for c in children if isinstance(c, dict | list))
        level = below
    return False
