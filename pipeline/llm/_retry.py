"""How long to wait before the next attempt: capped exponential backoff with full jitter."""

from __future__ import annotations

import random

from pipeline.errors import LLMError
from pipeline.llm._endpoint import RetryPolicy


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]. ``attempt`` starts at 1."""
    ceiling = min(policy.cap_s, policy.base_s * 2 ** (attempt - 1))
    return rng.uniform(0.0, ceiling)


def delay_s(policy: RetryPolicy, error: LLMError, attempt: int, rng: random.Random) -> float:
    """The server's ``retry-after`` (capped) when it gave one, else the backoff."""
    if error.retry_after is not None:
        return min(error.retry_after, policy.retry_after_cap_s)
    return backoff_s(policy, attempt, rng)
