"""The LLM gateway: the one path from gpo to a model endpoint.

Per endpoint, in this order: cache lookup (and single-flight) -> concurrency slot, pause gate,
requests/min, tokens/min -> budget reservation (waits while other calls' reservations may still
free room; durable in the ledger) -> HTTP call with timeout -> error classification -> usage
settlement -> cache write (committed before the slot is released) -> retry with backoff. A
request reserves only when it is about to be sent, so requests waiting for rate capacity hold no
budget. See DESIGN.md section 3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Generic, Protocol, TypeVar

import anyio
import orjson

from pipeline._log import get_logger
from pipeline.clock import Clock, SystemClock
from pipeline.errors import (
    ConfigError,
    LLMError,
    MalformedResponse,
    NotFound,
    RateLimited,
    RetriesExhausted,
    StorageError,
)
from pipeline.llm._budget import Budget, Reservation
from pipeline.llm._cache import MemoryCache, ResponseCache, cache_key, request_digest, sample_key
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._limits import EndpointLimiter
from pipeline.llm._pricing import FREE, Price
from pipeline.llm._retry import delay_s
from pipeline.llm._samples import chat_identity, decode_choice, derive_seed, encode_choice
from pipeline.llm._singleflight import SingleFlight
from pipeline.llm._stats import EndpointStatistics, StatsRecorder
from pipeline.llm._tokens import (
    max_input_tokens,
    max_text_tokens,
    min_text_tokens,
    typical_input_tokens,
)
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingReply,
    EmbeddingRequest,
    Embeddings,
    RateLimitInfo,
    TransportReply,
    Usage,
)
from pipeline.llm.transports._http import open_http_transport
from pipeline.llm.transports._protocol import Transport

log = get_logger("gpo.gateway")
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One HTTP request as the gateway sends it: its worst-case cost, how to send it, a usage
    floor estimated from what came back (a server's usage is never believed below it), and what
    to make durable before its slot is released."""

    cost: _Cost
    send: Callable[[], Awaitable[R]]
    floor: Callable[[R], Usage]
    entries: Callable[[R], dict[str, bytes]]
    """The cache entries of a reply (raises if the reply is unusable)."""


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
        self.known_price = config.effective_price
        self.price = self.known_price or FREE  # an unknown price is shown as unknown, not $0
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
        self.fault: StorageError | None = None
        """The first storage fault (ledger or cache); the gateway sends nothing new after it."""
        self._unsaved: dict[str, bytes] = {}  # answers the cache could not take after a fault

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def config(self, endpoint: str) -> EndpointConfig:
        return self._endpoint(endpoint).config

    def prices(self) -> dict[str, Price | None]:
        """Each endpoint's price (None where unknown: its cost is not counted)."""
        return {name: ep.known_price for name, ep in self._endpoints.items()}

    @property
    def cost_known(self) -> bool:
        """False once an endpoint whose price is unknown has been called: spend is then a
        lower bound, shown as unknown."""
        return all(
            ep.known_price is not None or not ep.stats.calls for ep in self._endpoints.values()
        )

    def statistics(self) -> dict[str, EndpointStatistics]:
        return {name: ep.stats.snapshot() for name, ep in self._endpoints.items()}

    async def preflight(self, endpoints: Sequence[str] | None = None) -> None:
        """Check every endpoint (or those named) answers, accepts its key and has a chat route,
        before any spend. Raises the endpoint's error (``AuthenticationFailed``,
        ``ConnectionFailed``, ``NotFound`` for a ``base_url`` without the chat route, ...); a
        server without ``/models`` (404) is reachable, so that part passes. Neither check is a
        paid call: nothing is budgeted, counted or cached."""
        for name in endpoints if endpoints is not None else self.endpoints:
            transport = self._endpoint(name).transport
            try:
                await transport.check()
            except NotFound:
                log.info("preflight_without_models", endpoint=name)
            await transport.check_route()

    def hold(self) -> None:
        """Start no new HTTP request on any endpoint (requests in flight go on)."""
        for ep in self._endpoints.values():
            ep.limiter.hold()

    def storage_fault(self, fault: StorageError) -> None:
        """Record a storage fault (the first one wins): from now on every request that was not
        sent yet raises it, while those in flight are answered and kept."""
        if self.fault is None:
            self.fault = fault
            log.error("storage_fault", path=fault.path, error=fault.reason)

    async def save_unsaved(self) -> int:
        """Try once more to write the answers the cache refused after a fault; how many are
        still unsaved (they will be paid for again on resume)."""
        if self._unsaved:
            with contextlib.suppress(StorageError):
                await self._cache.put_many(self._unsaved)
                self._unsaved.clear()
        return len(self._unsaved)

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
        try:
            completion, shared = await self._chat_flights.run(
                sample_key(digest, -req.n), lambda: self._chat(ep, req, digest, job)
            )
        except StorageError as exc:
            self.storage_fault(exc)
            raise
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
        try:
            found = await self._lookup(list(dict.fromkeys(keys)))
            missing = [t for t, k in zip(texts, keys, strict=True) if k not in found]
            missing = list(dict.fromkeys(missing))
            tally = _Tally()
            for i in range(0, len(missing), EMBED_BATCH):
                batch = missing[i : i + EMBED_BATCH]
                found |= await self._embed_missing(ep, model, batch, job, tally)
        except StorageError as exc:
            self.storage_fault(exc)
            raise
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

        def entries(reply: EmbeddingReply) -> dict[str, bytes]:
            if len(reply.vectors) != len(texts):
                raise RetriesExhausted(
                    f"asked for {len(texts)} embeddings, got {len(reply.vectors)}",
                    endpoint=ep.name,
                )
            return {
                cache_key({"kind": "embedding", "model": model, "input": t}, 0): orjson.dumps(v)
                for t, v in zip(texts, reply.vectors, strict=True)
            }

        call = _Call(
            cost=_Cost(ep.price.cost(input_max, 0), input_max, input_max // 4 + 1),
            send=lambda: ep.transport.embed(request),
            floor=lambda _: Usage(),
            entries=entries,
        )
        return entries(await self._send(ep, job, call, tally))

    async def _chat(
        self, ep: _Endpoint, req: ChatRequest, digest: str, job: str | None
    ) -> Completion:
        start = self._clock.now()
        keys = [sample_key(digest, i) for i in range(req.n)]
        found = await self._lookup(keys)
        choices: list[Choice | None] = [decode_choice(found.get(k)) for k in keys]
        tally = _Tally()
        missing = [i for i, c in enumerate(choices) if c is None]
        if not missing:
            ep.stats.cache_hits += 1
        while missing:
            got = await self._fetch(ep, req, missing, keys, job, tally)
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
        self,
        ep: _Endpoint,
        req: ChatRequest,
        missing: list[int],
        keys: list[str],
        job: str | None,
        tally: _Tally,
    ) -> dict[int, Choice]:
        """One HTTP request for the first missing samples (all of them where ``n`` works); the
        answers are in the cache when it returns."""
        want = len(missing) if ep.supports_n else 1
        sub = req.with_(n=want, seed=derive_seed(req.seed, missing[0]))
        assert sub.max_tokens is not None
        input_max = max_input_tokens(sub.messages)
        output_max = want * sub.max_tokens

        def entries(reply: TransportReply) -> dict[str, bytes]:
            got = zip(missing, reply.choices[:want], strict=False)
            return {keys[i]: encode_choice(c) for i, c in got}

        call = _Call(
            cost=_Cost(
                ep.price.cost(input_max, output_max),
                input_max + output_max,
                typical_input_tokens(sub.messages) + output_max,
            ),
            send=lambda: ep.transport.chat(sub),
            floor=_chat_floor,
            entries=entries,
        )
        reply = await self._send(ep, job, call, tally)
        if not reply.choices:
            raise MalformedResponse("the endpoint returned no choices", endpoint=ep.name)
        return dict(zip(missing, reply.choices[:want], strict=False))

    async def _send(self, ep: _Endpoint, job: str | None, call: _Call[R], tally: _Tally) -> R:
        """Send one request with bounded retries; each attempt reserves and settles the budget."""
        policy = ep.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            tally.attempts += 1
            try:
                return await self._attempt(ep, job, call, tally)
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

    async def _attempt(self, ep: _Endpoint, job: str | None, call: _Call[R], tally: _Tally) -> R:
        async with ep.limiter.slot(call.cost.limiter_tokens):
            reservation = await self._reserve(ep, job, call.cost)
            try:
                reply = await self._timed(ep, tally, call.send)
            except LLMError as exc:
                self._settle_failure(ep, call.cost, reservation, exc)
                raise
            except BaseException:
                self.budget.settle_in_full(reservation)  # it may have reached the server
                raise
            self._settle(ep, call, reservation, reply, tally)
            await self._save(call.entries(reply))  # durable before the slot is released
        return reply

    async def _lookup(self, keys: list[str]) -> dict[str, bytes]:
        found = await self._cache.get_many(keys)
        if self._unsaved:
            found |= {k: self._unsaved[k] for k in keys if k in self._unsaved}
        return found

    async def _save(self, entries: dict[str, bytes]) -> None:
        """Commit a paid answer; after a storage fault keep it in memory (it is not lost to
        this session, and :meth:`save_unsaved` tries once more)."""
        try:
            await self._cache.put_many(entries)
        except StorageError as exc:
            self._unsaved |= entries
            self.storage_fault(exc)

    async def _reserve(self, ep: _Endpoint, job: str | None, cost: _Cost) -> Reservation:
        """The budget for one request about to be sent (waiting for room if others are in
        flight); the tokens/min capacity it took is given back if none is granted."""
        try:
            if self.fault is not None:  # nothing more can be recorded: send nothing new
                raise self.fault
            if ep.known_price is None and self.budget.usd_capped(ep.name, job):
                raise ConfigError(_unpriced(ep.config))
            return await self.budget.acquire(
                usd=cost.usd, tokens=cost.tokens, endpoint=ep.name, job=job
            )
        except BaseException:
            ep.limiter.settle_tokens(cost.limiter_tokens, 0)
            raise

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
        self, ep: _Endpoint, call: _Call[R], reservation: Reservation, reply: R, tally: _Tally
    ) -> None:
        ep.limiter.observe(reply.limits)
        if reply.usage is None:
            self.budget.settle_in_full(reservation)
            usd = reservation.pusd / 10**12
            usage = Usage(input_tokens=reservation.tokens)
        else:
            usage = _at_least(reply.usage, call.floor(reply), ep.stats)
            usd = ep.price.cost(usage.input_tokens, usage.output_tokens)
            self.budget.settle(reservation, usd=usd, tokens=usage.total)
            ep.limiter.settle_tokens(call.cost.limiter_tokens, usage.total)
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
        budget = budget if budget is not None else Budget()
        _check_prices(runtime.values(), budget)
        yield Gateway(
            runtime,
            budget=budget,
            cache=cache if cache is not None else MemoryCache(),
            clock=clock,
            rng=rng or random.Random(),
        )


def _chat_floor(reply: TransportReply) -> Usage:
    """The least the choices of a reply of several can have used, from their texts (some
    servers, llama.cpp's among them, report the usage of one choice of ``n``)."""
    if len(reply.choices) < 2:
        return Usage()
    return Usage(output_tokens=min_text_tokens(tuple(c.text for c in reply.choices)))


def _at_least(reported: Usage, floor: Usage, stats: StatsRecorder) -> Usage:
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


def _check_prices(endpoints: Iterable[_Endpoint], budget: Budget) -> None:
    for ep in endpoints:
        capped = budget.usd_capped(ep.name) or budget.job_caps.usd is not None
        if ep.known_price is None and capped:
            raise ConfigError(_unpriced(ep.config))


def _unpriced(config: EndpointConfig) -> str:
    return (
        f"endpoint {config.name!r}: no price is known for model {config.model!r} at "
        f"{config.base_url}, so a USD cap cannot be enforced; give the endpoint a price "
        "(EndpointConfig(price=Price(...)), or pipeline.FREE for a local server)"
    )
