"""Frozen, validated configuration of one model endpoint."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.llm._pricing import Price, lookup_price
from pipeline.llm._secret import Secret

EndpointKind = Literal["openai", "anthropic"]
BatchMode = Literal["off", "eval", "all"]
BatchFallback = Literal["batch", "realtime"]
TIMEOUT_S = 120.0
"""The default floor of the read timeout (see :class:`EndpointConfig`)."""
LOCAL_TIMEOUT_S = 300.0
"""The default floor for a server on a loopback or private-network host."""
MAX_TIMEOUT_S = 600.0
"""The default ceiling of the read timeout."""
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


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
class BatchPolicy:
    """How an endpoint uses its provider's batch API (half price, answers within 24 h).

    ``mode``: "off" (every call realtime), "eval" (the task model's calls of dev and test
    evaluation go into batches), "all" (the optimizer's calls too). Requests from every job in
    flight are coalesced: a batch is created when ``max_requests`` wait, or ``linger_s`` after
    the first one came (whichever is first). A batch is polled every ``poll_s``, backing off by
    half each time up to ``max_poll_s``. A batch that fails or expires, and the requests that
    failed inside a completed batch, are sent again up to ``retries`` times, in a new batch
    (``fallback = "batch"``) or as realtime calls (``"realtime"``). A batch not ended after
    ``max_wait_s`` is cancelled, its unanswered requests go realtime, and so does the rest of
    the run on this endpoint (None: wait out the provider's 24 h window).
    """

    mode: BatchMode = "off"
    max_requests: int = 5000
    linger_s: float = 2.0
    poll_s: float = 2.0
    max_poll_s: float = 60.0
    retries: int = 2
    fallback: BatchFallback = "batch"
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        _require(self.mode in ("off", "eval", "all"), "batch", "'off', 'eval' or 'all'", self.mode)
        _require(self.max_requests >= 1, "batch_size", ">= 1", self.max_requests)
        _require(self.linger_s >= 0, "batch_linger_s", ">= 0", self.linger_s)
        _require(self.poll_s > 0, "batch_poll_s", "> 0", self.poll_s)
        _require(
            self.max_poll_s >= self.poll_s, "batch_max_poll_s", ">= batch_poll_s", self.max_poll_s
        )
        _require(self.retries >= 0, "batch_retries", ">= 0", self.retries)
        _require(
            self.fallback in ("batch", "realtime"),
            "batch_fallback",
            "'batch' or 'realtime'",
            self.fallback,
        )
        wait = self.max_wait_s
        _require(wait is None or wait > 0, "batch_max_wait_s", "> 0 or unset", wait)

    def batches(self, deferrable: bool) -> bool:
        """Whether a call goes into a batch: every call with "all", evaluation's with "eval"."""
        return self.mode == "all" or (self.mode == "eval" and deferrable)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointConfig:
    """One model endpoint: where it is, what it costs and how hard it may be driven.

    ``rpm``/``tpm`` of None mean "learn the limits from the server's headers and 429s".
    ``price`` of None means the price database's price for ``model`` at ``base_url`` (see
    :mod:`pipeline.llm._pricing`); :data:`~pipeline.FREE` for a server that bills nothing.

    The read timeout of each request follows the latency the endpoint shows (see
    :mod:`pipeline.llm._retry`): ``min(ceiling, max(floor, 3 x p95 of the last 64 requests'
    latencies))``, a timed-out request counting as a latency of its wait. The floor is
    ``timeout_s``, by default 120 s, or 300 s for a server on a loopback or private-network host
    (``localhost``, ``127.0.0.1``, ``::1``, ``10.x``, ``172.16-31.x``, ``192.168.x``, a
    one-label name such as a container's, ``*.local``, ``*.internal``); the ceiling is
    ``max_timeout_s``, by default 600 s (never below the floor). ``max_timeout_s = timeout_s``
    makes the timeout fixed. ``supports_n = False`` asks for one choice per request; an endpoint
    that answers a request for ``n`` choices with a 400 naming ``n`` (llama.cpp's server with
    fewer slots than ``n``) is switched to that for the rest of the gateway's life. ``batch``:
    whether and how the provider's batch API is used (:class:`BatchPolicy`).
    """

    name: str
    model: str
    kind: EndpointKind = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    rpm: float | None = None
    tpm: float | None = None
    max_in_flight: int = 64
    timeout_s: float | None = None
    max_timeout_s: float | None = None
    connect_timeout_s: float = 10.0
    price: Price | None = None
    supports_n: bool = True
    default_max_tokens: int = 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    anthropic_version: str = "2023-06-01"
    batch: BatchPolicy = field(default_factory=BatchPolicy)

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
        self._check_timeouts()
        _require(
            self.default_max_tokens >= 1,
            f"{self.name}.default_max_tokens",
            ">= 1",
            self.default_max_tokens,
        )

    def _check_timeouts(self) -> None:
        for key in ("timeout_s", "max_timeout_s"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"{self.name}.{key}", "> 0 or unset", value)
        low, high = self.timeout_s, self.max_timeout_s
        if low is not None and high is not None:
            _require(high >= low, f"{self.name}.max_timeout_s", f">= timeout_s ({low:g})", high)

    @property
    def timeout_floor_s(self) -> float:
        """The least read timeout: ``timeout_s``, else 120 s (300 s for a local server), never
        above an explicit ``max_timeout_s``."""
        if self.timeout_s is not None:
            return self.timeout_s
        default = LOCAL_TIMEOUT_S if is_local(self.base_url) else TIMEOUT_S
        return min(default, self.max_timeout_s or default)

    @property
    def timeout_ceiling_s(self) -> float:
        """The most read timeout: ``max_timeout_s``, else 600 s, never below the floor."""
        return max(self.max_timeout_s or MAX_TIMEOUT_S, self.timeout_floor_s)

    @property
    def effective_price(self) -> Price | None:
        """The configured price, else the price database's; None when neither knows it."""
        return self.price or lookup_price(self.model, self.base_url)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")


def is_local(url: str) -> bool:
    """Whether ``url``'s host is this machine or a private network's: a loopback, private or
    link-local address, ``localhost``, a one-label name, or a name under a local suffix."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def _require(ok: bool, key: str, expected: str, found: object) -> None:
    if not ok:
        raise ConfigError(f"endpoint {key}: expected {expected}, found {found!r}")
