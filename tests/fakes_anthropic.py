"""An in-process fake of Anthropic's Messages API, speaking its documented wire format.

Checks ``x-api-key`` and ``anthropic-version`` (401 ``authentication_error``), validates the body
like the real API (400 ``invalid_request_error``), answers with content blocks, usage and
``anthropic-ratelimit-*`` headers whose resets are RFC 3339 timestamps taken from ``now``, and can
be told to fail the next requests with any status, error type and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

NOW = 1_717_243_200.0  # 2024-06-01T12:00:00Z, the fake's (and the tests') wall clock
_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "stream",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class FakeAnthropic:
    """State of the fake: what it accepts, what it was sent and what it must fail with."""

    api_key: str = "sk-ant-test"
    versions: frozenset[str] = frozenset({"2023-06-01"})
    now: float = NOW
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        type_: str,
        message: str = "failure",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.failures.append(
            Failure(status=status, type=type_, message=message, headers=headers or {})
        )

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != self.api_key:
            return error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") not in self.versions:
            return error(400, "invalid_request_error", "anthropic-version: invalid or missing")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(400, "invalid_request_error", "request body is not valid JSON")
        problem = body_problem(body)
        if problem:
            return error(400, "invalid_request_error", problem)
        self.received.append(body)
        if self.failures:
            failure = self.failures.pop(0)
            return error(failure.status, failure.type, failure.message, failure.headers)
        return self.message(body)

    def message(self, body: dict[str, Any]) -> web.Response:
        last = body["messages"][-1]["content"]
        text = f"echo: {last}"
        payload = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": len(orjson.dumps(body["messages"])) // 4,
                "output_tokens": len(text) // 4,
                "cache_read_input_tokens": 0,
            },
        }
        return web.Response(
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=self.limit_headers(),
        )

    def limit_headers(self) -> dict[str, str]:
        p = "anthropic-ratelimit-"
        return {
            "request-id": "req_fake",
            f"{p}requests-limit": "50",
            f"{p}requests-remaining": "49",
            f"{p}requests-reset": rfc3339(self.now + 1.2),
            f"{p}tokens-limit": "40000",
            f"{p}tokens-remaining": "39500",
            f"{p}tokens-reset": rfc3339(self.now + 0.75),
        }


def body_problem(body: object) -> str | None:
    """What the real API would reject in ``body``, as its message; None if it is acceptable."""
    if not isinstance(body, dict):
        return "body: Input should be an object"
    for check in (_extra_fields, _model, _max_tokens, _messages, _sampling):
        problem = check(body)
        if problem:
            return problem
    return None


def _extra_fields(body: dict[str, Any]) -> str | None:
    extra = sorted(body.keys() - _FIELDS)
    return f"{extra[0]}: Extra inputs are not permitted" if extra else None


def _model(body: dict[str, Any]) -> str | None:
    ok = isinstance(body.get("model"), str) and body["model"]
    return None if ok else "model: Field required"


def _max_tokens(body: dict[str, Any]) -> str | None:
    value = body.get("max_tokens")
    if value is None:
        return "max_tokens: Field required"
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else "max_tokens: Input should be an integer >= 1"


def _messages(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if not isinstance(m.get("content"), str | list) or not m["content"]:
            return f"messages.{i}.content: text content blocks must be non-empty"
    if not isinstance(body.get("system", ""), str | list):
        return "system: Input should be a valid string"
    return None


def _sampling(body: dict[str, Any]) -> str | None:
    for key in ("temperature", "top_p"):
        value = body.get(key, 0.5)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            return f"{key}: Input should be less than or equal to 1 and at least 0"
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "stop_sequences: Input should be a valid list of strings"
    return None


def error(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    payload = {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": "req_fake",
    }
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


@asynccontextmanager
async def running(fake: FakeAnthropic) -> AsyncIterator[FakeAnthropic]:
    """Serve ``fake`` on 127.0.0.1 (a free port); ``fake.url`` is its ``base_url``."""
    app = web.Application()
    app.router.add_post("/v1/messages", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        fake.url = str(server.make_url("/v1"))
        yield fake
    finally:
        await server.close()
