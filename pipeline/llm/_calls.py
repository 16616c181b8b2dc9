"""One HTTP request as the gateway sends it: limits, budget, timing, settlement, cache write.

For each attempt, in this order: the endpoint's admission slot (concurrency, pause gate,
requests/min, tokens/min) -> budget reservation (durable in the ledger) -> the request, timed ->
usage settlement (a server's usage is never believed below what its texts must have used) ->
cache write, committed before the slot is released. Retryable errors are retried with backoff
within the endpoint's policy. After a storage fault (ledger or cache) nothing new is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

import anyio

from pipeline._log import get_logger
from pipeline.clock import Clock
from pipeline.errors import (
    ChoicesRefused,
    ConfigError,
    LLMError,
    RateLimited,
    RequestTimeout,
    RetriesExhausted,
    StorageError,
)
from pipeline.llm._budget import Budget, Reservation
from pipeline.llm._cache import ResponseCache
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._limits import EndpointLimiter, SharedLimits
from pipeline.llm._pricing import FREE, batch_price
from pipeline.llm._retry import ReadTimeout, delay_s
from pipeline.llm._stats import StatsRecorder
from pipeline.llm._tokens import min_text_tokens
from pipeline.llm._values import RateLimitInfo, TransportReply, Usage
from pipeline.llm.transports._protocol import Transport

log = get_logger("gpo.gateway")


class Reply(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def limits(self) -> RateLimitInfo: ...


R = TypeVar("R", bound=Reply)


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """What one HTTP request may cost at worst (budget) and is expected to take (limiter)."""

    usd: float
    tokens: int
    limiter_tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One HTTP request: its worst-case cost, how to send it, a usage floor estimated from what
    came back (a server's usage is never believed below it), and what to make durable before
    its slot is released."""

    cost: Cost
    send: Callable[[], Awaitable[R]]
    floor: Callable[[R], Usage]
    entries: Callable[[R], dict[str, bytes]]
    """The cache entries of a reply (raises if the reply is unusable)."""


@dataclasses.dataclass(slots=True)
class Tally:
    """What the requests of one gateway call used, cost and took."""

    usage: Usage = dataclasses.field(default_factory=Usage)
    cost_usd: float = 0.0
    attempts: int = 0
    requests: int = 0


class Endpoint:
    """An open endpoint: its configuration, transport, price, counters, limiter and read
    timeout (which its HTTP transport reads for each request)."""

    def __init__(
        self,
        config: EndpointConfig,
        transport: Transport,
        clock: Clock,
        timeout: ReadTimeout | None = None,
        shared_limits: SharedLimits | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.transport = transport
        self.timeout = timeout or read_timeout(config)
        self.known_price = config.effective_price
        self.price = self.known_price or FREE  # an unknown price is shown as unknown, not $0
        self.batch_price = batch_price(self.price, config.base_url)
        self.supports_n = config.supports_n and config.kind != "anthropic"
        self.stats = StatsRecorder(endpoint=config.name)
        self.limiter = EndpointLimiter(
            rpm=config.rpm,
            tpm=config.tpm,
            max_in_flight=config.max_in_flight,
            clock=clock,
            max_pause_s=config.retry.retry_after_cap_s,
            shared=shared_limits,
        )

    def refuse_n(self, asked: int, exc: LLMError) -> None:
        """The endpoint refused ``asked`` choices in one request (a 400 naming ``n``): from now
        on, for the endpoint's life, it is asked for one choice per request. Logged once."""
        if not self.supports_n:
            return
        self.supports_n = False
        self.stats.n_split = True
        log.warning(
            "n_split", endpoint=self.name, asked=asked, status=exc.status, error=str(exc.args[0])
        )


class Sender:
    """Sends the gateway's HTTP requests and keeps what a storage fault leaves unsaved."""

    def __init__(
        self, *, budget: Budget, cache: ResponseCache, clock: Clock, rng: random.Random
    ) -> None:
        self.budget = budget
        self._cache = cache
        self._clock = clock
        self.rng = rng
        self._idle = anyio.Event()
        self.fault: StorageError | None = None
        self._unsaved: dict[str, bytes] = {}  # answers the cache could not take after a fault

    def storage_fault(self, fault: StorageError) -> None:
        if self.fault is None:
            self.fault = fault
            log.error("storage_fault", path=fault.path, error=fault.reason)

    async def save_unsaved(self) -> int:
        if self._unsaved:
            with contextlib.suppress(StorageError):
                await self._cache.put_many(self._unsaved)
                self._unsaved.clear()
        return len(self._unsaved)

    async def idle(self) -> None:
        """Return once some endpoint's last request in flight is answered."""
        self._idle = anyio.Event()
        await self._idle.wait()

    async def lookup(self, keys: list[str]) -> dict[str, bytes]:
        """The cached answers among ``keys`` (those kept in memory after a fault included)."""
        found = await self._cache.get_many(keys)
        if self._unsaved:
            found |= {k: self._unsaved[k] for k in keys if k in self._unsaved}
        return found

    async def send(self, ep: Endpoint, job: str | None, call: Call[R], tally: Tally) -> R:
        """Send one request with bounded retries; each attempt reserves and settles the budget."""
        policy = ep.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            tally.attempts += 1
            try:
                return await self._attempt(ep, job, call, tally)
            except LLMError as exc:
                if not exc.retryable:
                    if not isinstance(exc, ChoicesRefused):  # the gateway decides (a split)
                        ep.stats.failures += 1
                    raise
                last = exc
                wait = delay_s(policy, exc, attempt, self.rng)
                if isinstance(exc, RateLimited):
                    ep.limiter.pause(wait, reason="429")
                if attempt < policy.max_attempts:  # no wait, and no retry counted, after the last
                    await self._before_retry(ep, exc, attempt, wait, job)
        ep.stats.failures += 1
        raise RetriesExhausted(
            f"gave up after {policy.max_attempts} attempts: {last}", endpoint=ep.name
        ) from last

    async def _attempt(self, ep: Endpoint, job: str | None, call: Call[R], tally: Tally) -> R:
        async with ep.limiter.slot(call.cost.limiter_tokens):
            reservation = await self.reserve(ep, job, call.cost)
            try:
                reply = await self._timed(ep, tally, call.send)
            except LLMError as exc:
                self._settle_failure(ep, call.cost, reservation, exc)
                raise
            except BaseException:
                self.budget.settle_in_full(reservation)  # it may have reached the server
                raise
            self._settle(ep, call, reservation, reply, tally)
            await self.save(call.entries(reply))  # durable before the slot is released
        return reply

    async def save(self, entries: dict[str, bytes]) -> None:
        """Commit a paid answer; after a storage fault keep it in memory (it is not lost to
        this session, and :meth:`save_unsaved` tries once more)."""
        try:
            await self._cache.put_many(entries)
        except StorageError as exc:
            self._unsaved |= entries
            self.storage_fault(exc)

    async def reserve(self, ep: Endpoint, job: str | None, cost: Cost) -> Reservation:
        """The budget for one request about to be sent (waiting for room if others are in
        flight); the tokens/min capacity it took is given back if none is granted."""
        try:
            if self.fault is not None:  # nothing more can be recorded: send nothing new
                raise self.fault
            if ep.known_price is None and self.budget.usd_capped(ep.name, job):
                raise ConfigError(unpriced(ep.config))
            return await self.budget.acquire(
                usd=cost.usd, tokens=cost.tokens, endpoint=ep.name, job=job
            )
        except BaseException:
            ep.limiter.settle_tokens(cost.limiter_tokens, 0)
            raise

    async def _timed(self, ep: Endpoint, tally: Tally, call: Callable[[], Awaitable[R]]) -> R:
        ep.stats.requests += 1
        tally.requests += 1
        ep.stats.in_flight += 1
        sent_at = self._clock.now()
        try:
            reply = await call()
        except RequestTimeout as exc:
            if exc.status is None:  # it waited its whole timeout: the answer takes longer
                ep.timeout.observe(self._clock.now() - sent_at)
            raise
        finally:
            ep.stats.in_flight -= 1
            if not ep.stats.in_flight:
                self._idle.set()
        latency = self._clock.now() - sent_at
        ep.stats.latencies.append(latency)
        ep.timeout.observe(latency)
        return reply

    def _settle(
        self, ep: Endpoint, call: Call[R], reservation: Reservation, reply: R, tally: Tally
    ) -> None:
        ep.limiter.observe(reply.limits)
        if reply.usage is None:
            self.budget.settle_in_full(reservation)
            usd = reservation.pusd / 10**12
            usage = Usage(input_tokens=reservation.tokens)
        else:
            usage = at_least(reply.usage, call.floor(reply), ep.stats)
            usd = ep.price.cost(usage.input_tokens, usage.output_tokens)
            self.budget.settle(reservation, usd=usd, tokens=usage.total)
            ep.limiter.settle_tokens(call.cost.limiter_tokens, usage.total)
        ep.stats.usage = ep.stats.usage + usage
        ep.stats.cost_usd += usd
        tally.usage = tally.usage + usage
        tally.cost_usd += usd

    def _settle_failure(
        self, ep: Endpoint, cost: Cost, reservation: Reservation, exc: LLMError
    ) -> None:
        if exc.maybe_billed:
            self.budget.settle_in_full(reservation)
            ep.stats.cost_usd += reservation.pusd / 10**12
        else:
            self.budget.release(reservation)
            ep.limiter.settle_tokens(cost.limiter_tokens, 0)

    async def _before_retry(
        self, ep: Endpoint, exc: LLMError, attempt: int, wait: float, job: str | None
    ) -> None:
        reason = getattr(exc, "reason", "transient")
        ep.stats.retried(reason)
        log.info(
            "llm_retry",
            endpoint=ep.name,
            job=job,
            reason=reason,
            status=exc.status,
            attempt=attempt,
            wait_s=round(wait, 3),
        )
        if not isinstance(exc, RateLimited):  # a 429 already paused the whole endpoint
            await self._clock.sleep(wait)


def read_timeout(config: EndpointConfig) -> ReadTimeout:
    """A new read timeout between the endpoint's configured bounds."""
    return ReadTimeout(floor_s=config.timeout_floor_s, ceiling_s=config.timeout_ceiling_s)


def chat_floor(reply: TransportReply) -> Usage:
    """The least the choices of a reply of several can have used, from their texts.

    Some servers, llama.cpp's among them, report the usage of the first choice of ``n``: a
    count below what the texts must have used. Then every choice is counted at the first
    one's tokens per character (the server's own tokenizer), and never below the generic
    floor of :func:`min_text_tokens`."""
    if len(reply.choices) < 2:
        return Usage()
    texts = tuple(c.text for c in reply.choices)
    floor = min_text_tokens(texts)
    reported = 0 if reply.usage is None else reply.usage.output_tokens
    first, total = len(texts[0]), sum(len(t) for t in texts)
    if reported < floor and first:
        floor = max(floor, -(-reported * total // first))
    return Usage(output_tokens=floor)


def at_least(reported: Usage, floor: Usage, stats: StatsRecorder) -> Usage:
    """``reported``, raised to ``floor`` where a server under-reports (llama.cpp's server counts
    one choice of ``n``); each raise is counted in the endpoint's statistics."""
    usage = Usage(
        input_tokens=max(reported.input_tokens, floor.input_tokens),
        output_tokens=max(reported.output_tokens, floor.output_tokens),
    )
    if usage != reported:
        stats.usage_raised += 1
        stats.usage_raised_tokens += usage.total - reported.total
    return usage


def check_prices(endpoints: Iterable[Endpoint], budget: Budget) -> None:
    """Refuse an endpoint without a known price where a USD cap could not be enforced."""
    for ep in endpoints:
        capped = budget.usd_capped(ep.name) or budget.job_caps.usd is not None
        if ep.known_price is None and capped:
            raise ConfigError(unpriced(ep.config))


def unpriced(config: EndpointConfig) -> str:
    return (
        f"endpoint {config.name!r}: no price is known for model {config.model!r} at "
        f"{config.base_url}, so a USD cap cannot be enforced; give the endpoint a price "
        "(EndpointConfig(price=Price(...)), or pipeline.FREE for a local server)"
    )
