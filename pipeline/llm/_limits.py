"""Per-endpoint admission: pause gate, requests/min, tokens/min and requests in flight.

Order for each HTTP request: concurrency slot -> wait out an endpoint-wide pause (set by a 429 or
by headers that say nothing is left) -> requests/min (aiolimiter), then tokens/min (the token
bucket of :mod:`pipeline._bucket`, on the injected clock; tokens are reserved, then settled to
usage) -> send at once. The
slot comes first so that a request leaves the moment its rate capacity is granted: capacity taken
while waiting for a slot would bunch requests into bursts the server's own bucket refuses. The
rate steps run one caller at a time behind a FIFO lock, so a request for many tokens is never
starved by a stream of small ones.

Providers enforce a per-minute limit as a bucket holding ``burst_s`` of refill (12,000 RPM behaves
like 200 requests per second). Our buckets refill at the same rate but hold only
:data:`SERVER_SHARE` of that, so at the limit the server's bucket keeps the rest as a margin:
requests that reach it up to ``(1 - SERVER_SHARE) * burst_s`` out of step with their sending
(network and scheduling jitter) still find it non-empty. Only the opening burst is smaller; the
sustained rate is the limit. Unconfigured limits are learned from ``x-ratelimit-limit-*``
headers (keeping the same margin below what the server says remains); configured ones are only
ever tightened, never raised, by what a server says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
from aiolimiter import AsyncLimiter

from pipeline._bucket import TokenBucket
from pipeline._log import get_logger
from pipeline.clock import Clock
from pipeline.llm._values import RateLimitInfo

log = get_logger("gpo.limits")

SERVER_SHARE = 0.5
"""The share of a server's bucket (``burst_s`` of refill) that an endpoint's buckets hold."""


class RequestLimiter:
    """Requests per minute on aiolimiter's leaky bucket (the event loop's clock), holding
    ``share`` of the server's bucket of ``per_minute / 60 * burst_s`` requests; the rest is the
    ``margin``."""

    def __init__(self, per_minute: float, *, burst_s: float = 1.0, share: float = 1.0) -> None:
        self.per_minute = per_minute
        server = max(1.0, per_minute / 60.0 * burst_s)
        self.capacity = max(1.0, server * share)
        self.margin = server - self.capacity
        self._limiter = AsyncLimiter(
            max_rate=self.capacity, time_period=self.capacity * 60.0 / per_minute
        )
        self._debt = 0.0

    async def acquire(self) -> None:
        debt, self._debt = min(self._debt, self.capacity - 1), 0.0
        await self._limiter.acquire(1 + debt)

    def tighten(self, remaining: float) -> None:
        """The server says only ``remaining`` requests are left: a new limiter starts full, so
        the next request also takes what the server no longer has, less the margin."""
        self._debt = max(0.0, self.capacity - (remaining - self.margin))


class SharedLimits(Protocol):
    """An endpoint's requests/min and tokens/min buckets and pause, shared with every process
    that uses the same account (``pipeline.coord``, over Redis). Its methods that return
    nothing apply shortly, in the background."""

    async def admit(self, tokens: int) -> None:
        """Return once no pause holds and the shared buckets paid 1 request and ``tokens``."""

    def refund_soon(self, tokens: int) -> None: ...

    def pause_soon(self, seconds: float) -> None: ...

    def learn_soon(self, rpm: float | None, tpm: float | None) -> None: ...

    def tighten_soon(self, remaining_tokens: float) -> None: ...


@dataclass(frozen=True, slots=True)
class LimitState:
    rpm: float | None
    tpm: float | None
    rpm_learned: bool
    tpm_learned: bool
    paused_for_s: float
    tokens_available: float | None


PROBE_REQUESTS = 8
"""Requests an endpoint with no configured limits gets before its first answer, whose headers
(if any) say what its limits are: a run does not open with a burst the server refuses."""


class _Probe:
    """At most ``size`` requests at once until :meth:`open`; no limit after it (or at all when
    ``size`` is None)."""

    def __init__(self, size: int | None) -> None:
        self._size = size
        self._gate = anyio.Semaphore(size) if size else None

    async def __aenter__(self) -> None:
        if self._gate is not None:
            await self._gate.acquire()

    async def __aexit__(self, *_: object) -> None:
        if self._gate is not None:
            self._gate.release()

    def open(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            for _ in range(gate.statistics().tasks_waiting):  # wake every waiter
                gate.release()


class EndpointLimiter:
    """Admission control for one endpoint; shared by every job that uses the endpoint."""

    def __init__(
        self,
        *,
        rpm: float | None,
        tpm: float | None,
        max_in_flight: int,
        clock: Clock,
        burst_s: float = 1.0,
        max_pause_s: float = 120.0,
        shared: SharedLimits | None = None,
    ) -> None:
        self._clock = clock
        self._shared = shared
        self._burst_s = burst_s
        self._max_pause_s = max_pause_s
        self._fifo = anyio.Lock(fast_acquire=True)
        self._slots = anyio.Semaphore(max_in_flight, fast_acquire=True)
        self._paused_until = 0.0
        self.pauses = 0
        self._open = anyio.Event()
        self._open.set()
        unlimited = rpm is None and tpm is None
        self._probe = _Probe(min(PROBE_REQUESTS, max_in_flight) if unlimited else None)
        self._rpm_cfg, self._tpm_cfg = rpm, tpm
        self._rpm = None if rpm is None else self._new_request_limiter(rpm)
        self._tpm = None if tpm is None else self._new_bucket(tpm)

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        """Hold admission for one HTTP request expected to use ``tokens`` tokens."""
        async with self._slots, self._probe:
            async with self._fifo:
                await self._wait_pause()
                if self._shared is not None:
                    await self._shared.admit(tokens)
                else:
                    await self._take_rates(tokens)
                await self._wait_pause()  # a 429 may have paused the endpoint meanwhile
            await self._open.wait()
            yield

    async def _take_rates(self, tokens: int) -> None:
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            await self._take_tokens(self._tpm, tokens)

    def hold(self) -> None:
        """Send nothing more: new requests wait here until cancelled (a graceful stop lets the
        requests already sent finish, so that they are paid once and cached)."""
        self._open = anyio.Event()

    def settle_tokens(self, reserved: int, used: int) -> None:
        """Give back what a request reserved but did not use."""
        if self._shared is not None and used < reserved:
            self._shared.refund_soon(reserved - used)
        elif self._tpm is not None and used < reserved:
            self._tpm.refund(reserved - used)

    def pause(self, seconds: float, *, reason: str) -> None:
        """Hold every new request on this endpoint for ``seconds`` (capped)."""
        seconds = min(max(0.0, seconds), self._max_pause_s)
        until = self._clock.now() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1
            if self._shared is not None:
                self._shared.pause_soon(seconds)

    def observe(self, info: RateLimitInfo) -> None:
        """Learn and tighten limits from a response's rate-limit headers."""
        self._probe.open()
        if info.empty:
            return
        self._learn(info)
        if info.remaining_requests is not None and info.remaining_requests <= 0:
            self.pause(self._one_request_refill(info), reason="no_requests_remaining")
        if self._tpm is not None and info.remaining_tokens is not None:
            self._tpm.tighten(info.remaining_tokens)
            if self._shared is not None:
                self._shared.tighten_soon(info.remaining_tokens)

    def state(self) -> LimitState:
        return LimitState(
            rpm=self._rpm.per_minute if self._rpm else None,
            tpm=self._tpm.per_minute if self._tpm else None,
            rpm_learned=self._rpm_cfg is None and self._rpm is not None,
            tpm_learned=self._tpm_cfg is None and self._tpm is not None,
            paused_for_s=max(0.0, self._paused_until - self._clock.now()),
            tokens_available=self._tpm.level() if self._tpm else None,
        )

    def _learn(self, info: RateLimitInfo) -> None:
        limit_rpm, limit_tpm = info.limit_requests, info.limit_tokens
        if limit_rpm and (self._rpm is None or limit_rpm < self._rpm.per_minute):
            log.info("rate_limit_learned", kind="requests", per_minute=limit_rpm)
            self._rpm = self._new_request_limiter(limit_rpm)
            if self._shared is not None:
                self._shared.learn_soon(limit_rpm, None)
            if info.remaining_requests is not None:
                # a new bucket starts full; the server's is as empty as it says
                self._rpm.tighten(info.remaining_requests)
        if limit_tpm and (self._tpm is None or limit_tpm < self._tpm.per_minute):
            log.info("rate_limit_learned", kind="tokens", per_minute=limit_tpm)
            self._tpm = self._new_bucket(limit_tpm)
            if self._shared is not None:
                self._shared.learn_soon(None, limit_tpm)

    def _one_request_refill(self, info: RateLimitInfo) -> float:
        per_request = 60.0 / info.limit_requests if info.limit_requests else 1.0
        reset = info.reset_requests_s if info.reset_requests_s is not None else per_request
        return min(reset, per_request)

    def _new_request_limiter(self, per_minute: float) -> RequestLimiter:
        return RequestLimiter(float(per_minute), burst_s=self._burst_s, share=SERVER_SHARE)

    def _new_bucket(self, per_minute: float) -> TokenBucket:
        return TokenBucket(
            float(per_minute), clock=self._clock.now, burst_s=self._burst_s, share=SERVER_SHARE
        )

    async def _take_tokens(self, bucket: TokenBucket, amount: float) -> None:
        """Take ``amount``, sleeping on the injected clock for the refill it needs first."""
        while (wait := bucket.wait_for(amount)) > 0:
            await self._clock.sleep(wait)
        bucket.take(amount)

    async def _wait_pause(self) -> None:
        while (left := self._paused_until - self._clock.now()) > 0:
            await self._clock.sleep(left)
