"""Anthropic Messages API: request bodies and response parsing.

Pure; the HTTP transport does the I/O. Differences from the OpenAI wire that callers see:

* ``max_tokens`` is required and ``n`` must be 1 (the gateway sends ``n`` requests instead);
  both are checked here with ``ValueError`` before anything is sent.
* System messages are lifted out of ``messages`` into the top-level ``system`` string.
* ``temperature`` above Anthropic's maximum of 1.0 is clamped to 1.0; ``seed`` is not sent.
* Rate-limit resets come as RFC 3339 timestamps and are turned into seconds from the injected
  wall clock.
* There is no embeddings API: both embedding methods raise :class:`~pipeline.errors.NotFound`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from pipeline.errors import MalformedResponse, NotFound
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    EmbeddingReply,
    EmbeddingRequest,
    RateLimitInfo,
    TransportReply,
    Usage,
)
from pipeline.llm.transports._common import load_object, to_int

MAX_TEMPERATURE = 1.0
NO_EMBEDDINGS = (
    "Anthropic endpoints have no embeddings API; configure an OpenAI-compatible embeddings endpoint"
)
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_PREFIX = "anthropic-ratelimit-"

# (limit, remaining, reset seconds) of one rate-limit window.
_Window = tuple[int | None, int | None, float | None]


class AnthropicWire:
    """The :class:`~pipeline.llm.transports._protocol.Wire` of Anthropic's Messages API."""

    chat_path = "/messages"
    embeddings_path = "/embeddings"

    def __init__(
        self, *, version: str = "2023-06-01", wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._version = version
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"AnthropicWire(version={self._version!r})"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"anthropic-version": self._version, "Content-Type": "application/json"}
        return {"x-api-key": api_key, **headers} if api_key else headers

    def chat_body(self, request: ChatRequest) -> bytes:
        return chat_body(request)

    def embeddings_body(self, request: EmbeddingRequest) -> bytes:
        raise NotFound(NO_EMBEDDINGS)

    def parse_chat(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> TransportReply:
        return parse_chat(body, headers, endpoint=endpoint, now=self._wall_clock())

    def parse_embeddings(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> EmbeddingReply:
        raise NotFound(NO_EMBEDDINGS, endpoint=endpoint)


def chat_body(request: ChatRequest) -> bytes:
    """The Messages API body. Raises ``ValueError`` for what Anthropic cannot express."""
    _check_sendable(request)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ],
        "temperature": min(request.temperature, MAX_TEMPERATURE),
    }
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    if system:
        body["system"] = system
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    return orjson.dumps(body)


def _check_sendable(request: ChatRequest) -> None:
    if request.n != 1:
        raise ValueError(f"Anthropic returns one choice per request; got n={request.n}")
    if request.max_tokens is None:
        raise ValueError("Anthropic requires max_tokens; the request has none")
    if all(m.role == "system" for m in request.messages):
        raise ValueError("Anthropic needs at least one user or assistant message")


def parse_chat(
    body: bytes, headers: Mapping[str, str], *, endpoint: str, now: float
) -> TransportReply:
    data = load_object(body, endpoint)
    try:
        text = _text(data["content"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedResponse(
            f"no usable content: {exc!r}", endpoint=endpoint, maybe_billed=True
        ) from None
    choice = Choice(text=text, finish_reason=finish_reason(data.get("stop_reason")))
    return TransportReply(
        choices=(choice,),
        usage=_usage(data.get("usage")),
        model=str(data.get("model") or ""),
        limits=parse_limits(headers, now=now),
    )


def finish_reason(stop_reason: object) -> str | None:
    """Anthropic's ``stop_reason`` in OpenAI's vocabulary; unknown reasons pass through."""
    if not isinstance(stop_reason, str):
        return None
    return _FINISH.get(stop_reason, stop_reason)


def _text(content: Any) -> str:
    """The text blocks joined. Without any (empty content, only tool use or thinking) there is
    no answer to score or cache: ``KeyError``, so the reply is malformed and retried."""
    if not isinstance(content, list):
        raise TypeError(f"content is {type(content).__name__}, not a list")
    texts = [str(b["text"]) for b in content if b.get("type") == "text"]
    if not texts:
        raise KeyError("no text content block")
    return "".join(texts)


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    given = to_int(raw.get("input_tokens"))
    if given is None:
        return None
    cached = sum(
        to_int(raw.get(k)) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(input_tokens=given + cached, output_tokens=to_int(raw.get("output_tokens")) or 0)


def parse_limits(headers: Mapping[str, str], *, now: float) -> RateLimitInfo:
    """``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; resets from ``now``.

    Without ``tokens-*`` headers the tighter of the ``input-tokens-*`` and ``output-tokens-*``
    windows stands for the token limit.
    """
    requests = _window(headers, "requests", now)
    tokens = _window(headers, "tokens", now)
    if tokens == (None, None, None):
        tokens = _tighter(
            _window(headers, "input-tokens", now), _window(headers, "output-tokens", now)
        )
    return RateLimitInfo(
        limit_requests=requests[0],
        remaining_requests=requests[1],
        reset_requests_s=requests[2],
        limit_tokens=tokens[0],
        remaining_tokens=tokens[1],
        reset_tokens_s=tokens[2],
    )


def _window(headers: Mapping[str, str], name: str, now: float) -> _Window:
    return (
        to_int(headers.get(f"{_PREFIX}{name}-limit")),
        to_int(headers.get(f"{_PREFIX}{name}-remaining")),
        reset_seconds(headers.get(f"{_PREFIX}{name}-reset"), now=now),
    )


def _tighter(a: _Window, b: _Window) -> _Window:
    """The window with less room left: by remaining fraction when both limits are known."""
    (a_limit, a_left, _), (b_limit, b_left, _) = a, b
    if a_left is None or b_left is None:
        return b if a_left is None and b_left is not None else a
    if a_limit and b_limit:
        return a if a_left / a_limit <= b_left / b_limit else b
    return a if a_left <= b_left else b


def reset_seconds(raw: str | None, *, now: float) -> float | None:
    """An RFC 3339 timestamp as seconds after ``now`` (epoch seconds), never negative."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)
