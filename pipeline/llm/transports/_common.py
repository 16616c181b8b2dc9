"""Parsing helpers shared by the wire formats."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.errors import MalformedResponse


def load_object(body: bytes, endpoint: str) -> dict[str, Any]:
    """A response body as a JSON object, or MalformedResponse (retryable, maybe billed)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(
            f"unparseable JSON body: {exc}", endpoint=endpoint, maybe_billed=True
        ) from None
    if not isinstance(data, dict):
        raise MalformedResponse("JSON body is not an object", endpoint=endpoint, maybe_billed=True)
    return data


def to_int(raw: object) -> int | None:
    """An integer from a header or a JSON value ("12", 12.0, "1e3"); None if it is not one."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return int(float(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
