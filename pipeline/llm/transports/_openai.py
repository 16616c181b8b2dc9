"""OpenAI-compatible Chat Completions and Embeddings: request bodies and response parsing.

Pure functions; the HTTP transport does the I/O. Tolerates what compatible servers (vLLM,
Ollama, LiteLLM, llama.cpp) do differently: missing ``usage``, fewer choices than ``n``. A choice
with ``null`` content is a :class:`~pipeline.errors.MalformedResponse` (retried, never cached).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.errors import MalformedResponse
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

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class OpenAIWire:
    """The :class:`~pipeline.llm.transports._protocol.Wire` of OpenAI-compatible servers."""

    chat_path = "/chat/completions"
    embeddings_path = "/embeddings"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def chat_body(self, request: ChatRequest) -> bytes:
        return chat_body(request)

    def embeddings_body(self, request: EmbeddingRequest) -> bytes:
        return embeddings_body(request)

    def parse_chat(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> TransportReply:
        return parse_chat(body, headers, endpoint=endpoint)

    def parse_embeddings(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> EmbeddingReply:
        return parse_embeddings(body, headers, endpoint=endpoint)


def chat_body(request: ChatRequest) -> bytes:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
    }
    if request.n != 1:
        body["n"] = request.n
    optional = {"max_tokens": request.max_tokens, "top_p": request.top_p, "seed": request.seed}
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stop:
        body["stop"] = list(request.stop)
    return orjson.dumps(body)


def embeddings_body(request: EmbeddingRequest) -> bytes:
    return orjson.dumps({"model": request.model, "input": list(request.inputs)})


def parse_chat(body: bytes, headers: Mapping[str, str], *, endpoint: str) -> TransportReply:
    data = load_object(body, endpoint)
    try:
        raw = sorted(data["choices"], key=lambda c: c.get("index", 0))
        choices = tuple(_choice(c) for c in raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedResponse(
            f"no usable choices: {exc!r}", endpoint=endpoint, maybe_billed=True
        ) from None
    if not choices:
        raise MalformedResponse("response has no choices", endpoint=endpoint, maybe_billed=True)
    return TransportReply(
        choices=choices,
        usage=_usage(data.get("usage"), "completion_tokens"),
        model=str(data.get("model") or ""),
        limits=parse_limits(headers),
    )


def parse_embeddings(body: bytes, headers: Mapping[str, str], *, endpoint: str) -> EmbeddingReply:
    data = load_object(body, endpoint)
    try:
        items = sorted(data["data"], key=lambda d: d.get("index", 0))
        vectors = tuple(tuple(float(x) for x in item["embedding"]) for item in items)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponse(
            f"no usable embeddings: {exc!r}", endpoint=endpoint, maybe_billed=True
        ) from None
    return EmbeddingReply(
        vectors=vectors, usage=_usage(data.get("usage"), None), limits=parse_limits(headers)
    )


def parse_limits(headers: Mapping[str, str]) -> RateLimitInfo:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers."""
    h = headers.get
    return RateLimitInfo(
        limit_requests=to_int(h("x-ratelimit-limit-requests")),
        remaining_requests=to_int(h("x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(h("x-ratelimit-reset-requests")),
        limit_tokens=to_int(h("x-ratelimit-limit-tokens")),
        remaining_tokens=to_int(h("x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(h("x-ratelimit-reset-tokens")),
    )


def parse_duration(raw: str | None) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"120ms"`` or plain ``"2"`` -> seconds; None if unreadable."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _choice(raw: Mapping[str, Any]) -> Choice:
    """A choice's text: ``message.content``, else the legacy ``text``. Without either (``null``
    content, e.g. a refusal or a reasoning model out of tokens) there is no answer to score or
    cache: ``KeyError``, so the reply is malformed and retried. ``""`` is a valid empty answer."""
    message = raw.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        content = raw.get("text")
    if content is None:
        raise KeyError(f"choice {raw.get('index', 0)} has no content")
    return Choice(text=str(content), finish_reason=raw.get("finish_reason"))


def _usage(raw: object, output_key: str | None) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = to_int(raw.get("prompt_tokens"))
    if prompt is None:
        return None
    output = to_int(raw.get(output_key)) if output_key else 0
    if output is None:  # incomplete usage: treat as unknown, the budget keeps the reservation
        return None
    return Usage(input_tokens=prompt, output_tokens=output)
