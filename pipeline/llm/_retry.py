"""How long to wait: before the next attempt (capped exponential backoff with full jitter), and
for an answer (the read timeout, which follows the latency the endpoint shows)::

    timeout = min(ceiling, max(floor, 3 x the p95 latency of its last 64 requests))

``floor`` and ``ceiling`` come from the endpoint's configuration
(:attr:`~pipeline.llm.EndpointConfig.timeout_floor_s`, ``timeout_ceiling_s``). A request that
timed out counts as a latency of the time it waited (its answer would have taken at least that),
so a server slower than the timeout raises it for the next attempts. A slow local server under
load (minutes per answer with every slot busy) is thus waited for, while a healthy API keeps a
short timeout; equal bounds make it fixed.
"""

from __future__ import annotations

import random
from collections import deque

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


WINDOW = 64
"""Latencies remembered: the last 64 requests."""
FACTOR = 3.0
QUANTILE = 0.95


class ReadTimeout:
    """One endpoint's read timeout, raised and lowered by the latencies it observes."""

    def __init__(self, *, floor_s: float, ceiling_s: float) -> None:
        self.floor_s = floor_s
        self.ceiling_s = max(ceiling_s, floor_s)
        self._recent: deque[float] = deque(maxlen=WINDOW)
        self._seconds = floor_s

    def seconds(self) -> float:
        """The timeout of the next request, in seconds."""
        return self._seconds

    def observe(self, latency_s: float) -> None:
        """Count the latency of an answered request, or the wait of a timed-out one."""
        self._recent.append(latency_s)
        ordered = sorted(self._recent)
        high = ordered[min(len(ordered) - 1, int(QUANTILE * len(ordered)))]
        self._seconds = min(self.ceiling_s, max(self.floor_s, FACTOR * high))
