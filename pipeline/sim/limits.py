"""OpenAI-style rate limits for the simulator: token buckets on an injected clock.

OpenAI states limits per minute but enforces them in sub-minute quanta (12,000 RPM behaves like
200 requests per second), so each bucket refills at ``per_minute / 60`` per second and holds
``rate * burst_s`` (at least one unit), starting full (:mod:`pipeline._bucket`'s token bucket,
the one the gateway's limiter is made of). A request is admitted only when every configured
bucket can pay for it; a refused request takes nothing. A request larger than a bucket's
capacity (but within the per-minute limit) is admitted from a full bucket and leaves it in debt;
one larger than the per-minute token limit is refused for good ("Request too large").

Every response of a simulator with a limit carries all six ``x-ratelimit-*`` headers, as OpenAI's
do; a limit that is not configured (only ``--rpm`` or only ``--tpm``) is reported as
:data:`UNCONFIGURED_LIMIT` per minute, all of it remaining. Without any limit there are none, as
from a self-hosted server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pipeline._bucket import TokenBucket

Clock = Callable[[], float]
"""Monotonic seconds."""

LimitKind = Literal["requests", "tokens"]
_KINDS: tuple[LimitKind, ...] = ("requests", "tokens")

DEFAULT_COMPLETION_TOKENS = 256
"""Completion tokens charged per choice at admission when a request sets no ``max_tokens``."""

UNCONFIGURED_LIMIT = 1_000_000_000
"""What the headers say of a limit that is not configured while the other one is: this many per
minute, all of it remaining, reset ``0s``. A client learns it (a reported limit only ever tightens
what a client believes) without being slowed: it is far beyond what the simulator can serve."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``120ms``, ``1.5s``, ``6m0s``.

    Rounded up to the millisecond, so a client that waits this long finds the bucket refilled.
    """
    millis = math.ceil(seconds * 1000 - 1e-6)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    fraction = f".{rest % 1000:03d}".rstrip("0") if rest % 1000 else ""
    head = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{head}{rest // 1000}{fraction}s"


def parse_duration(text: str) -> float:
    """Seconds in a duration written by :func:`format_duration` (``1h2m3.5s``, ``120ms``)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r} (expected e.g. '120ms', '1.5s', '6m0s')")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


@dataclass(frozen=True, kw_only=True)
class Admission:
    """The outcome of :meth:`RateLimiter.admit`; ``headers`` go on the response either way."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    kind: LimitKind | None = None
    retry_after_s: float | None = None
    message: str = ""

    def retry_headers(self) -> dict[str, str]:
        """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` for a refusal."""
        if self.retry_after_s is None:
            return {}
        millis = max(1, math.ceil(self.retry_after_s * 1000))
        return {"retry-after": str(math.ceil(millis / 1000)), "retry-after-ms": str(millis)}

    def error_body(self) -> dict[str, object]:
        """OpenAI's 429 body for a refusal."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets; either may be absent (unlimited)."""

    def __init__(
        self, *, rpm: float | None, tpm: float | None, burst_s: float, clock: Clock
    ) -> None:
        self._buckets: dict[LimitKind, TokenBucket] = {}
        if rpm is not None:
            self._buckets["requests"] = TokenBucket(per_minute=rpm, burst_s=burst_s, clock=clock)
        if tpm is not None:
            self._buckets["tokens"] = TokenBucket(per_minute=tpm, burst_s=burst_s, clock=clock)

    def admit(self, tokens: int) -> Admission:
        """Charge one request and ``tokens`` tokens, or refuse without charging anything."""
        costs: dict[LimitKind, float] = {"requests": 1.0, "tokens": float(tokens)}
        for kind, bucket in self._buckets.items():
            if kind == "tokens" and costs[kind] > bucket.per_minute:
                return self._refusal(kind, None, _too_large(bucket, costs[kind]))
            wait = bucket.wait_for(costs[kind])
            if wait > 0:
                return self._refusal(kind, wait, _reached(kind, bucket, wait))
        for kind, bucket in self._buckets.items():
            bucket.take(costs[kind])
        return Admission(allowed=True, headers=self.headers())

    def headers(self) -> dict[str, str]:
        """All six ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers describing
        the buckets now; a limit that is not configured reads as :data:`UNCONFIGURED_LIMIT`.
        None at all when neither limit is configured."""
        if not self._buckets:
            return {}
        headers: dict[str, str] = {}
        for kind in _KINDS:
            limit, remaining, reset = _describe(self._buckets.get(kind))
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(reset)
        return headers

    def _refusal(self, kind: LimitKind, wait: float | None, message: str) -> Admission:
        return Admission(
            allowed=False, headers=self.headers(), kind=kind, retry_after_s=wait, message=message
        )


def _describe(bucket: TokenBucket | None) -> tuple[int, int, float]:
    """A bucket's limit, what remains and seconds until full; of an absent one, unconfigured."""
    if bucket is None:
        return UNCONFIGURED_LIMIT, UNCONFIGURED_LIMIT, 0.0
    return round(bucket.per_minute), max(0, math.floor(bucket.level())), bucket.time_to_full()


def _reached(kind: LimitKind, bucket: TokenBucket, wait: float) -> str:
    unit = "RPM" if kind == "requests" else "TPM"
    used = max(0, math.ceil(bucket.capacity - bucket.level()))
    return (
        f"Rate limit reached for {kind} in organization org-gpo-sim on {kind} per min ({unit}): "
        f"Limit {round(bucket.per_minute)}, Used {used}. "
        f"Please try again in {format_duration(wait)}."
    )


def _too_large(bucket: TokenBucket, cost: float) -> str:
    return (
        "Request too large in organization org-gpo-sim on tokens per min (TPM): "
        f"Limit {round(bucket.per_minute)}, Requested {math.ceil(cost)}. "
        "The input or output tokens must be reduced in order to run successfully."
    )
