"""The simulators' JSON answers, written by orjson (ccbridge's one JSON library): compact
UTF-8, the bytes Starlette's stdlib-based JSONResponse writes for the same plain values."""

from __future__ import annotations

import orjson
from starlette.responses import Response


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)
