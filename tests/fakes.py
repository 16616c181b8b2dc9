"""Shared test doubles for the gateway tests: an injected clock, scripted chat handlers, helpers.

``FakeClock`` replaces :class:`pipeline.clock.SystemClock`. By default its ``sleep`` advances time
instantly (and yields once, so other tasks run); with ``manual=True`` sleepers wait until the test
calls :meth:`FakeClock.advance` past their deadline. Every sleep is recorded in ``sleeps``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

from pipeline.errors import LLMError
from pipeline.llm._budget import Budget
from pipeline.llm._cache import ResponseCache
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest, Choice, RateLimitInfo, TransportReply, Usage
from pipeline.llm.transports._fake import FakeTransport, echo_reply

PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)


class FakeClock:
    """A monotonic clock that tests control. See the module docstring."""

    def __init__(self, start: float = 0.0, *, manual: bool = False) -> None:
        self._now = start
        self.manual = manual
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        if not self.manual:
            self._now += seconds
            await anyio.lowlevel.checkpoint()
            return
        waiter = (self._now + seconds, anyio.Event())
        self._waiters.append(waiter)
        try:
            await waiter[1].wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed (manual mode)."""
        self._now += seconds
        due = [w for w in self._waiters if w[0] <= self._now]
        self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, event in due:
            event.set()

    @property
    def sleeping(self) -> int:
        return len(self._waiters)


async def let_run(rounds: int = 30) -> None:
    """Yield to the event loop until every runnable task has had its turn."""
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


def reply(
    *texts: str,
    usage: Usage | None = None,
    limits: RateLimitInfo | None = None,
) -> TransportReply:
    """A transport reply with one choice per text (default usage: 1 in, 1 out)."""
    return TransportReply(
        choices=tuple(Choice(text=t, finish_reason="stop") for t in texts),
        usage=Usage(input_tokens=1, output_tokens=1) if usage is None else usage,
        limits=limits or RateLimitInfo(),
    )


Outcome = TransportReply | LLMError


class Scripted:
    """A chat handler that plays ``outcomes`` in order (raising errors, returning replies), then
    answers with ``then``. Records the clock time of each request when given a clock."""

    def __init__(
        self,
        *outcomes: Outcome,
        then: Callable[[ChatRequest], TransportReply] = echo_reply,
        clock: FakeClock | None = None,
    ) -> None:
        self.outcomes = list(outcomes)
        self.then = then
        self.clock = clock
        self.sent_at: list[float] = []

    def __call__(self, request: ChatRequest) -> TransportReply:
        if self.clock is not None:
            self.sent_at.append(self.clock.now())
        if not self.outcomes:
            return self.then(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, LLMError):
            raise outcome
        return outcome


class Blocking:
    """An async chat handler that holds every request until ``release`` is set."""

    def __init__(self, then: Callable[[ChatRequest], TransportReply] = echo_reply) -> None:
        self.then = then
        self.release = anyio.Event()
        self.entered = 0

    async def __call__(self, request: ChatRequest) -> TransportReply:
        self.entered += 1
        await self.release.wait()
        return self.then(request)


def fewer_choices(k: int) -> Callable[[ChatRequest], TransportReply]:
    """A handler that answers with at most ``k`` choices whatever ``n`` asked for."""

    def handler(request: ChatRequest) -> TransportReply:
        n = min(k, request.n)
        return reply(*(f"seed={request.seed} #{i}" for i in range(n)))

    return handler


def endpoint_config(**overrides: Any) -> EndpointConfig:
    """An endpoint named "ep" with a known price and fast, deterministic retries."""
    fields: dict[str, Any] = {
        "name": "ep",
        "model": "test-model",
        "price": PRICE,
        "default_max_tokens": 16,
        "retry": RetryPolicy(max_attempts=4, base_s=0.5, cap_s=4.0, retry_after_cap_s=10.0),
    }
    fields.update(overrides)
    return EndpointConfig(**fields)


@asynccontextmanager
async def open_test_gateway(
    transport: FakeTransport,
    *,
    config: EndpointConfig | None = None,
    clock: FakeClock | None = None,
    budget: Budget | None = None,
    cache: ResponseCache | None = None,
    seed: int = 0,
) -> AsyncIterator[Gateway]:
    """A gateway over one fake endpoint, on a fake clock, with a seeded rng."""
    config = config or endpoint_config()
    async with open_gateway(
        [config],
        transports={config.name: transport},
        clock=clock or FakeClock(),
        budget=budget,
        cache=cache,
        rng=random.Random(seed),
    ) as gateway:
        yield gateway
