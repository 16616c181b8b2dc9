"""How a chat request's samples are named, seeded and stored in the response cache."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline._seeds import derive_seed
from pipeline.llm._values import ChatRequest, Choice


def sample_seed(seed: int | None, index: int) -> int | None:
    """The seed for a request whose first sample is ``index`` (top-ups must not repeat samples)."""
    if seed is None or index == 0:
        return seed
    return derive_seed(seed, index)


def chat_identity(kind: str, req: ChatRequest) -> dict[str, Any]:
    """What identifies a chat request for the cache: everything but ``n``."""
    return {
        "kind": kind,
        "model": req.model,
        "messages": [[m.role, m.content] for m in req.messages],
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "seed": req.seed,
        "stop": list(req.stop),
    }


def encode_choice(choice: Choice) -> bytes:
    return orjson.dumps({"text": choice.text, "finish_reason": choice.finish_reason})


def decode_choice(raw: bytes | None) -> Choice | None:
    if raw is None:
        return None
    data = orjson.loads(raw)
    return Choice(text=data["text"], finish_reason=data["finish_reason"])
