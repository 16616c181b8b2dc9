"""Immutable request and response values exchanged with the gateway and transports."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat completion request. ``n`` choices are wanted; ``seed`` makes sampling repeatable."""

    messages: tuple[Message, ...]
    model: str = ""
    n: int = 1
    temperature: float = 1.0
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("ChatRequest needs at least one message")
        if self.n < 1:
            raise ValueError(f"ChatRequest.n must be >= 1, got {self.n}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"ChatRequest.max_tokens must be >= 1, got {self.max_tokens}")

    def with_(self, **changes: object) -> ChatRequest:
        return replace(self, **changes)  # type: ignore[arg-type]

    @staticmethod
    def of(prompt: str, *, system: str | None = None, **kwargs: object) -> ChatRequest:
        """Shorthand: a request with an optional system message and one user message."""
        msgs = [Message(role="system", content=system)] if system else []
        msgs.append(Message(role="user", content=prompt))
        return ChatRequest(messages=tuple(msgs), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitInfo:
    """What a response's rate-limit headers said. Resets are seconds from when it was received."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    @property
    def empty(self) -> bool:
        return self == _NO_LIMIT_INFO


_NO_LIMIT_INFO = RateLimitInfo()


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportReply:
    """What a transport returns for one successful HTTP exchange."""

    choices: tuple[Choice, ...]
    usage: Usage | None
    model: str = ""
    limits: RateLimitInfo = field(default_factory=RateLimitInfo)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The gateway's answer to a :class:`ChatRequest`: exactly ``n`` choices, in sample order."""

    choices: tuple[Choice, ...]
    usage: Usage
    cost_usd: float
    latency_s: float
    attempts: int
    requests: int
    cached: bool
    model: str = ""

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(c.text for c in self.choices)

    @property
    def text(self) -> str:
        return self.choices[0].text


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingRequest:
    inputs: tuple[str, ...]
    model: str = ""

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("EmbeddingRequest needs at least one input")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingReply:
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage | None
    limits: RateLimitInfo = field(default_factory=RateLimitInfo)


@dataclass(frozen=True, slots=True, kw_only=True)
class Embeddings:
    """The gateway's answer to an :class:`EmbeddingRequest`, one vector per input, in order."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    cost_usd: float
    cached: bool
