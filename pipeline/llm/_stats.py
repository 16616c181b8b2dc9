"""Counters per endpoint, read with ``Gateway.statistics()``."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from pipeline.llm._values import Usage

_WINDOW = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointStatistics:
    """A snapshot. Latency percentiles cover the last 4,096 HTTP requests that got an answer."""

    endpoint: str
    calls: int
    requests: int
    retries: dict[str, int]
    rate_limited: int
    failures: int
    cache_hits: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    usage_raised: int
    """Replies whose reported usage was below what their texts must have used, and so raised."""
    usage_raised_tokens: int
    n_split: bool
    """The endpoint refused ``n`` choices in one request (a 400 naming ``n``) and has since been
    asked for one choice per request."""
    n_split_requests: int
    """Answered requests for one choice of a call that wanted several (the endpoint split, or it
    has no ``n``: ``supports_n = false``, Anthropic)."""
    in_flight: int
    batches: int = 0
    """Provider batches created (the batch API: ``EndpointConfig.batch``)."""
    batch_requests: int = 0
    """Requests answered in provider batches (adopted batches' included)."""
    batches_adopted: int = 0
    """Batches of an earlier session polled again, or found by their tag, after a resume."""
    batch_retries: int = 0
    """Requests sent again after their batch failed or expired, or they failed in it."""
    batch_realtime: int = 0
    """Requests meant for a batch that went realtime (fallback, or ``max_wait_s`` passed)."""
    read_timeout_s: float
    """The timeout the endpoint's next request gets (it follows the latency: see
    :class:`~pipeline.llm.EndpointConfig`)."""
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None

    @property
    def retries_total(self) -> int:
        return sum(self.retries.values())


@dataclass(slots=True)
class StatsRecorder:
    """Mutable counters owned by one endpoint."""

    endpoint: str
    calls: int = 0
    requests: int = 0
    rate_limited: int = 0
    failures: int = 0
    cache_hits: int = 0
    in_flight: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    usage_raised: int = 0
    usage_raised_tokens: int = 0
    n_split: bool = False
    n_split_requests: int = 0
    batches: int = 0
    batch_requests: int = 0
    batches_adopted: int = 0
    batch_retries: int = 0
    batch_realtime: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def answered(self, latency_s: float, usage: Usage, cost_usd: float) -> None:
        self.latencies.append(latency_s)
        self.usage = self.usage + usage
        self.cost_usd += cost_usd

    def retried(self, reason: str) -> None:
        self.retries[reason] += 1
        if reason == "rate_limited":
            self.rate_limited += 1

    def snapshot(self, *, read_timeout_s: float) -> EndpointStatistics:
        ordered = sorted(self.latencies)
        return EndpointStatistics(
            endpoint=self.endpoint,
            calls=self.calls,
            requests=self.requests,
            retries=dict(self.retries),
            rate_limited=self.rate_limited,
            failures=self.failures,
            cache_hits=self.cache_hits,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cost_usd=self.cost_usd,
            usage_raised=self.usage_raised,
            usage_raised_tokens=self.usage_raised_tokens,
            n_split=self.n_split,
            n_split_requests=self.n_split_requests,
            in_flight=self.in_flight,
            batches=self.batches,
            batch_requests=self.batch_requests,
            batches_adopted=self.batches_adopted,
            batch_retries=self.batch_retries,
            batch_realtime=self.batch_realtime,
            read_timeout_s=read_timeout_s,
            latency_p50_s=_percentile(ordered, 0.50),
            latency_p95_s=_percentile(ordered, 0.95),
            latency_p99_s=_percentile(ordered, 0.99),
        )


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
