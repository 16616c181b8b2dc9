"""Frozen, validated configuration of one model endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.llm._pricing import Price, lookup_price
from pipeline.llm._secret import Secret

EndpointKind = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded attempts with capped exponential backoff and full jitter."""

    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0
    retry_after_cap_s: float = 120.0

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "retry.max_attempts", ">= 1", self.max_attempts)
        _require(self.base_s >= 0, "retry.base_s", ">= 0", self.base_s)
        _require(self.cap_s >= self.base_s, "retry.cap_s", ">= base_s", self.cap_s)
        _require(
            self.retry_after_cap_s >= 0, "retry.retry_after_cap_s", ">= 0", self.retry_after_cap_s
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointConfig:
    """One model endpoint: where it is, what it costs and how hard it may be driven.

    ``rpm``/``tpm`` of None mean "learn the limits from the server's headers and 429s".
    ``price`` of None means the price database's price for ``model`` at ``base_url`` (see
    :mod:`pipeline.llm._pricing`); :data:`~pipeline.FREE` for a server that bills nothing.
    """

    name: str
    model: str
    kind: EndpointKind = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    rpm: float | None = None
    tpm: float | None = None
    max_in_flight: int = 64
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    price: Price | None = None
    supports_n: bool = True
    default_max_tokens: int = 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    anthropic_version: str = "2023-06-01"

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", "a non-empty string", self.name)
        _require(bool(self.model), f"{self.name}.model", "a non-empty string", self.model)
        _require(
            self.kind in ("openai", "anthropic"),
            f"{self.name}.kind",
            "'openai' or 'anthropic'",
            self.kind,
        )
        _require(
            self.base_url.startswith(("http://", "https://")),
            f"{self.name}.base_url",
            "an http(s) URL",
            self.base_url,
        )
        for key in ("rpm", "tpm"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"{self.name}.{key}", "> 0 or unset", value)
        _require(self.max_in_flight >= 1, f"{self.name}.max_in_flight", ">= 1", self.max_in_flight)
        _require(self.timeout_s > 0, f"{self.name}.timeout_s", "> 0", self.timeout_s)
        _require(
            self.default_max_tokens >= 1,
            f"{self.name}.default_max_tokens",
            ">= 1",
            self.default_max_tokens,
        )

    @property
    def effective_price(self) -> Price | None:
        """The configured price, else the price database's; None when neither knows it."""
        return self.price or lookup_price(self.model, self.base_url)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")


def _require(ok: bool, key: str, expected: str, found: object) -> None:
    if not ok:
        raise ConfigError(f"endpoint {key}: expected {expected}, found {found!r}")
