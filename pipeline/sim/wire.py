"""Small JSON-over-HTTP helpers shared by the simulator's batch routes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pipeline.sim.faults import InvalidRequest

DEFAULT_PAGE = 20


def json_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    """``payload`` as an ``application/json`` response."""
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request's body, which must be a JSON object (``InvalidRequest`` otherwise)."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def page_limit(raw: str | None, *, hi: int) -> int:
    """A list route's ``limit`` query parameter: 1..``hi``, :data:`DEFAULT_PAGE` when absent."""
    if raw is None:
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= hi:
        raise InvalidRequest(f"limit must be an integer between 1 and {hi}, got {raw!r}", "limit")
    return limit
