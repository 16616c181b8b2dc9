"""The LLM gateway: the one path from gpo to a model endpoint.

Per endpoint, in this order: cache lookup (and single-flight) -> budget reservation -> pause gate,
requests/min, tokens/min -> concurrency slot -> HTTP call with timeout -> error classification ->
retry with backoff -> usage settlement -> cache write. See DESIGN.md section 3.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol, TypeVar

import anyio
import orjson
import structlog

from pipeline.budget import Budget, Reservation
from pipeline.cache import MemoryCache, ResponseCache, cache_key, request_digest, sample_key
from pipeline.clock import Clock, SystemClock
from pipeline.endpoint import EndpointConfig
from pipeline.errors import (
    ConfigError,
    LLMError,
    MalformedResponse,
    NotFound,
    RateLimited,
    RetriesExhausted,
)
from pipeline.http import open_http_transport
from pipeline.limits import EndpointLimiter
from pipeline.retry import delay_s
from pipeline.samples import chat_identity, decode_choice, derive_seed, encode_choice
from pipeline.singleflight import SingleFlight
from pipeline.stats import EndpointStatistics, StatsRecorder
from pipeline.tokens import max_input_tokens, max_text_tokens, typical_input_tokens
from pipeline.transport import Transport
from pipeline.values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingRequest,
    Embeddings,
    RateLimitInfo,
    Usage,
)

log = structlog.get_logger("gpo.gateway")
EMBED_BATCH = 256  # inputs per embeddings request


class _Reply(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def limits(self) -> RateLimitInfo: ...


R = TypeVar("R", bound=_Reply)


@dataclasses.dataclass(frozen=True, slots=True)
class _Cost:
    """What one HTTP request may cost at worst (budget) and is expected to take (limiter)."""

    usd: float
    tokens: int
    limiter_tokens: int


@dataclasses.dataclass(slots=True)
class _Tally:
    usage: Usage = dataclasses.field(default_factory=Usage)
    cost_usd: float = 0.0
    attempts: int = 0
    requests: int = 0


class _Endpoint:
    def __init__(self, config: EndpointConfig, transport: Transport, clock: Clock) -> None:
        self.config = config
        self.name = config.name
        self.transport = transport
        self.price = config.effective_price
        self.supports_n = config.supports_n and config.kind != "anthropic"
        self.stats = StatsRecorder(endpoint=config.name)
        self.limiter = EndpointLimiter(
            rpm=config.rpm,
            tpm=config.tpm,
            max_in_flight=config.max_in_flight,
            clock=clock,
            max_pause_s=config.retry.retry_after_cap_s,
        )


class Gateway:
    """Chat and embeddings through budget, limits, retries and cache. Open with
    :func:`open_gateway`; share one gateway between every job of a run."""

    def __init__(
        self,
        endpoints: Mapping[str, _Endpoint],
        *,
        budget: Budget,
        cache: ResponseCache,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._endpoints = dict(endpoints)
        self.budget = budget
        self._cache = cache
        self._clock = clock
        self._rng = rng
        self._chat_flights: SingleFlight[Completion] = SingleFlight()
        self._idle = anyio.Event()

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def config(self, endpoint: str) -> EndpointConfig:
        return self._endpoint(endpoint).config

    def statistics(self) -> dict[str, EndpointStatistics]:
        return {name: ep.stats.snapshot() for name, ep in self._endpoints.items()}

    async def preflight(self, endpoints: Sequence[str] | None = None) -> None:
        """Check every endpoint (or those named) answers and accepts its key, before any spend.
        Raises the endpoint's error (``AuthenticationFailed``, ``ConnectionFailed``, ...); a
        server without ``/models`` (404) is reachable, so it passes."""
        for name in endpoints if endpoints is not None else self.endpoints:
            try:
                await self._endpoint(name).transport.check()
            except NotFound:
                log.info("preflight_without_models", endpoint=name)

    def hold(self) -> None:
        """Start no new HTTP request on any endpoint (requests in flight go on)."""
        for ep in self._endpoints.values():
            ep.limiter.hold()

    @property
    def in_flight(self) -> int:
        """HTTP requests sent and not yet answered, over every endpoint."""
        return sum(ep.stats.in_flight for ep in self._endpoints.values())

    async def drained(self) -> None:
        """Return once no HTTP request is in flight."""
        while self.in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    def limiter(self, endpoint: str) -> EndpointLimiter:
        return self._endpoint(endpoint).limiter

    async def chat(
        self, endpoint: str, request: ChatRequest, *, job: str | None = None
    ) -> Completion:
        """Exactly ``request.n`` choices, from the cache where possible, else from the endpoint."""
        ep = self._endpoint(endpoint)
        ep.stats.calls += 1
        req = request.with_(
            model=request.model or ep.config.model,
            max_tokens=request.max_tokens or ep.config.default_max_tokens,
        )
        digest = request_digest(chat_identity(ep.config.kind, req))
        completion, shared = await self._chat_flights.run(
            sample_key(digest, -req.n), lambda: self._chat(ep, req, digest, job)
        )
        if shared:
            ep.stats.cache_hits += 1
            return dataclasses.replace(completion, cached=True, usage=Usage(), cost_usd=0.0)
        return completion

    async def embed(
        self, endpoint: str, texts: Sequence[str], *, job: str | None = None
    ) -> Embeddings:
        """One vector per text, in order; cached per (model, text)."""
        ep = self._endpoint(endpoint)
        ep.stats.calls += 1
        model = ep.config.model
        keys = [cache_key({"kind": "embedding", "model": model, "input": t}, 0) for t in texts]
        found = await self._cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
        tally = _Tally()
        for i in range(0, len(missing), EMBED_BATCH):
            found |= await self._embed_missing(ep, model, missing[i : i + EMBED_BATCH], job, tally)
        if not missing:
            ep.stats.cache_hits += 1
        vectors = tuple(tuple(orjson.loads(found[k])) for k in keys)
        return Embeddings(
            vectors=vectors, usage=tally.usage, cost_usd=tally.cost_usd, cached=not missing
        )

    async def _embed_missing(
        self, ep: _Endpoint, model: str, texts: list[str], job: str | None, tally: _Tally
    ) -> dict[str, bytes]:
        request = EmbeddingRequest(inputs=tuple(texts), model=model)
        input_max = max_text_tokens(request.inputs)
        cost = _Cost(ep.price.cost(input_max, 0), input_max, input_max // 4 + 1)
        reply = await self._send(ep, job, cost, tally, lambda: ep.transport.embed(request))
        if len(reply.vectors) != len(texts):
            raise RetriesExhausted(
                f"asked for {len(texts)} embeddings, got {len(reply.vectors)}", endpoint=ep.name
            )
        new = {
            cache_key({"kind": "embedding", "model": model, "input": t}, 0): orjson.dumps(v)
            for t, v in zip(texts, reply.vectors, strict=True)
        }
        await self._cache.put_many(new)
        return new

    async def _chat(
        self, ep: _Endpoint, req: ChatRequest, digest: str, job: str | None
    ) -> Completion:
        start = self._clock.now()
        keys = [sample_key(digest, i) for i in range(req.n)]
        found = await self._cache.get_many(keys)
        choices: list[Choice | None] = [decode_choice(found.get(k)) for k in keys]
        tally = _Tally()
        missing = [i for i, c in enumerate(choices) if c is None]
        if not missing:
            ep.stats.cache_hits += 1
        while missing:
            got = await self._fetch(ep, req, missing, job, tally)
            await self._cache.put_many({keys[i]: encode_choice(c) for i, c in got.items()})
            for i, choice in got.items():
                choices[i] = choice
            missing = missing[len(got) :]
        return Completion(
            choices=tuple(c for c in choices if c is not None),
            usage=tally.usage,
            cost_usd=tally.cost_usd,
            latency_s=self._clock.now() - start,
            attempts=tally.attempts,
            requests=tally.requests,
            cached=tally.requests == 0,
            model=req.model,
        )

    async def _fetch(
        self, ep: _Endpoint, req: ChatRequest, missing: list[int], job: str | None, tally: _Tally
    ) -> dict[int, Choice]:
        """One HTTP request for the first missing samples (all of them where ``n`` works)."""
        want = len(missing) if ep.supports_n else 1
        sub = req.with_(n=want, seed=derive_seed(req.seed, missing[0]))
        assert sub.max_tokens is not None
        input_max = max_input_tokens(sub.messages)
        output_max = want * sub.max_tokens
        cost = _Cost(
            ep.price.cost(input_max, output_max),
            input_max + output_max,
            typical_input_tokens(sub.messages) + output_max,
        )
        reply = await self._send(ep, job, cost, tally, lambda: ep.transport.chat(sub))
        if not reply.choices:
            raise MalformedResponse("the endpoint returned no choices", endpoint=ep.name)
        return dict(zip(missing, reply.choices[:want], strict=False))

    async def _send(
        self,
        ep: _Endpoint,
        job: str | None,
        cost: _Cost,
        tally: _Tally,
        call: Callable[[], Awaitable[R]],
    ) -> R:
        """Send one request with bounded retries; each attempt reserves and settles the budget."""
        policy = ep.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            reservation = self.budget.reserve(
                usd=cost.usd, tokens=cost.tokens, endpoint=ep.name, job=job
            )
            tally.attempts += 1
            try:
                return await self._attempt(ep, cost, reservation, tally, call)
            except LLMError as exc:
                if not exc.retryable:
                    ep.stats.failures += 1
                    raise
                last = exc
                wait = delay_s(policy, exc, attempt, self._rng)
                if isinstance(exc, RateLimited):
                    ep.limiter.pause(wait, reason="429")
                if attempt < policy.max_attempts:  # no wait, and no retry counted, after the last
                    await self._before_retry(ep, exc, attempt, wait, job)
        ep.stats.failures += 1
        raise RetriesExhausted(
            f"gave up after {policy.max_attempts} attempts: {last}", endpoint=ep.name
        ) from last

    async def _attempt(
        self,
        ep: _Endpoint,
        cost: _Cost,
        reservation: Reservation,
        tally: _Tally,
        call: Callable[[], Awaitable[R]],
    ) -> R:
        sent = False
        try:
            async with ep.limiter.slot(cost.limiter_tokens):
                sent = True
                reply = await self._timed(ep, tally, call)
        except LLMError as exc:
            self._settle_failure(ep, cost, reservation, exc)
            raise
        except BaseException:
            (self.budget.settle_in_full if sent else self.budget.release)(reservation)
            raise
        self._settle(ep, cost, reservation, reply, tally)
        return reply

    async def _timed(self, ep: _Endpoint, tally: _Tally, call: Callable[[], Awaitable[R]]) -> R:
        ep.stats.requests += 1
        tally.requests += 1
        ep.stats.in_flight += 1
        sent_at = self._clock.now()
        try:
            reply = await call()
        finally:
            ep.stats.in_flight -= 1
            if not ep.stats.in_flight:
                self._idle.set()
        ep.stats.latencies.append(self._clock.now() - sent_at)
        return reply

    def _settle(
        self, ep: _Endpoint, cost: _Cost, reservation: Reservation, reply: _Reply, tally: _Tally
    ) -> None:
        ep.limiter.observe(reply.limits)
        if reply.usage is None:
            self.budget.settle_in_full(reservation)
            usd = reservation.pusd / 10**12
            usage = Usage(input_tokens=reservation.tokens)
        else:
            usage = reply.usage
            usd = ep.price.cost(usage.input_tokens, usage.output_tokens)
            self.budget.settle(reservation, usd=usd, tokens=usage.total)
            ep.limiter.settle_tokens(cost.limiter_tokens, usage.total)
        ep.stats.usage = ep.stats.usage + usage
        ep.stats.cost_usd += usd
        tally.usage = tally.usage + usage
        tally.cost_usd += usd

    def _settle_failure(
        self, ep: _Endpoint, cost: _Cost, reservation: Reservation, exc: LLMError
    ) -> None:
        if exc.maybe_billed:
            self.budget.settle_in_full(reservation)
            ep.stats.cost_usd += reservation.pusd / 10**12
        else:
            self.budget.release(reservation)
            ep.limiter.settle_tokens(cost.limiter_tokens, 0)

    async def _before_retry(
        self, ep: _Endpoint, exc: LLMError, attempt: int, wait: float, job: str | None
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

    def _endpoint(self, name: str) -> _Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            known = ", ".join(self._endpoints) or "none"
            raise ConfigError(f"unknown endpoint {name!r} (configured: {known})") from None


@asynccontextmanager
async def open_gateway(
    endpoints: Sequence[EndpointConfig],
    *,
    budget: Budget | None = None,
    cache: ResponseCache | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    transports: Mapping[str, Transport] | None = None,
) -> AsyncIterator[Gateway]:
    """Open every endpoint's transport (HTTP unless given in ``transports``); close them on exit."""
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoint names must be unique, found {names}")
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        runtime = {}
        for config in endpoints:
            transport = (transports or {}).get(config.name) or await open_http_transport(config)
            stack.push_async_callback(transport.aclose)
            runtime[config.name] = _Endpoint(config, transport, clock)
        yield Gateway(
            runtime,
            budget=budget or Budget(),
            cache=cache or MemoryCache(),
            clock=clock,
            rng=rng or random.Random(),
        )
