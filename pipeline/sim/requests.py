"""The fields of a chat completion request that the simulator honours, read and validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.sim.faults import (
    InvalidRequest,
    int_field,
    messages_field,
    model_field,
    number_field,
    stop_field,
)

MAX_N = 128


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """The fields of a chat completion request that the simulator honours."""

    model: str
    messages: tuple[tuple[str, str], ...]
    n: int = 1
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    """The honoured fields of a chat completion body; ``InvalidRequest`` names a bad one."""
    if body.get("stream"):
        raise InvalidRequest("stream=true is not supported by the simulator", "stream")
    max_tokens = int_field(body, "max_completion_tokens", lo=1)
    temperature = number_field(body, "temperature", lo=0.0, hi=2.0)
    return ChatRequest(
        model=model_field(body),
        messages=messages_field(body),
        n=int_field(body, "n", lo=1, hi=MAX_N) or 1,
        temperature=1.0 if temperature is None else temperature,
        seed=int_field(body, "seed", lo=-(2**63), hi=2**63 - 1),
        max_tokens=max_tokens or int_field(body, "max_tokens", lo=1),
        stop=stop_field(body),
    )
