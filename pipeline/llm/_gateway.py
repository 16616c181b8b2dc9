"""The LLM gateway: the one path from gpo to a model endpoint.

Per endpoint, in this order: cache lookup (and single-flight) -> concurrency slot, pause gate,
requests/min, tokens/min -> budget reservation (waits while other calls' reservations may still
free room; durable in the ledger) -> HTTP call with timeout -> error classification -> usage
settlement -> cache write (committed before the slot is released) -> retry with backoff. A
request reserves only when it is about to be sent, so requests waiting for rate capacity hold no
budget. See DESIGN.md section 3.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import orjson

from pipeline._background import background_tasks
from pipeline._log import get_logger
from pipeline.clock import Clock, SystemClock
from pipeline.errors import (
    ChoicesRefused,
    ConfigError,
    MalformedResponse,
    NotFound,
    RetriesExhausted,
    StorageError,
)
from pipeline.llm._budget import Budget
from pipeline.llm._cache import MemoryCache, ResponseCache, cache_key, request_digest, sample_key
from pipeline.llm._calls import (
    Call,
    Cost,
    Endpoint,
    Sender,
    Tally,
    chat_floor,
    check_prices,
    read_timeout,
)
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._limits import EndpointLimiter
from pipeline.llm._pricing import Price
from pipeline.llm._retry import ReadTimeout
from pipeline.llm._samples import chat_identity, decode_choice, encode_choice, sample_seed
from pipeline.llm._singleflight import CrossFlights, SingleFlight
from pipeline.llm._stats import EndpointStatistics
from pipeline.llm._tokens import max_input_tokens, max_text_tokens, typical_input_tokens
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingReply,
    EmbeddingRequest,
    Embeddings,
    TransportReply,
    Usage,
)
from pipeline.llm.batch import BatchLog, BatchRoutes, MemoryBatchLog
from pipeline.llm.transports._protocol import Transport

if TYPE_CHECKING:
    from pipeline.coord._open import Coordination

log = get_logger("gpo.gateway")
FLIGHT_WAIT_S = 600.0
"""How long a call waits for another process's flight before it asks whether it still runs."""
EMBED_BATCH = 256  # inputs per embeddings request


class Gateway:
    """Chat and embeddings through budget, limits, retries and cache. Open with
    :func:`open_gateway`; share one gateway between every job of a run."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        *,
        budget: Budget,
        cache: ResponseCache,
        clock: Clock,
        rng: random.Random,
        flights: CrossFlights | None = None,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._cache = cache
        self._flights = flights
        self.budget = budget
        self._clock = clock
        self._sender = Sender(budget=budget, cache=cache, clock=clock, rng=rng)
        self._chat_flights: SingleFlight[Completion] = SingleFlight()
        self.batches = BatchRoutes(self._endpoints, sender=self._sender, clock=clock)
        """The endpoints' provider batches (:mod:`pipeline.llm.batch`)."""

    @property
    def fault(self) -> StorageError | None:
        """The first storage fault (ledger or cache); the gateway sends nothing new after it."""
        return self._sender.fault

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
        return {
            name: ep.stats.snapshot(read_timeout_s=ep.timeout.seconds())
            for name, ep in self._endpoints.items()
        }

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
            await self.batches.check(name)

    def hold(self) -> None:
        """Start no new HTTP request on any endpoint (requests in flight go on)."""
        for ep in self._endpoints.values():
            ep.limiter.hold()
        self.batches.hold()

    def storage_fault(self, fault: StorageError) -> None:
        """Record a storage fault (the first one wins): from now on every request that was not
        sent yet raises it, while those in flight are answered and kept."""
        self._sender.storage_fault(fault)

    async def save_unsaved(self) -> int:
        """Try once more to write the answers the cache refused after a fault; how many are
        still unsaved (they will be paid for again on resume)."""
        return await self._sender.save_unsaved()

    @property
    def in_flight(self) -> int:
        """HTTP requests sent and not yet answered, over every endpoint."""
        return sum(ep.stats.in_flight for ep in self._endpoints.values())

    async def drained(self) -> None:
        """Return once no HTTP request is in flight."""
        while self.in_flight:
            await self._sender.idle()

    def limiter(self, endpoint: str) -> EndpointLimiter:
        return self._endpoint(endpoint).limiter

    @property
    def batches_open(self) -> int:
        """Provider batches created and not ended, over every endpoint."""
        return self.batches.open

    async def cancel_batches(self) -> int:
        """Ask the providers to cancel every batch still open; how many were asked."""
        return await self.batches.cancel_open()

    async def chat(
        self,
        endpoint: str,
        request: ChatRequest,
        *,
        job: str | None = None,
        deferrable: bool = False,
    ) -> Completion:
        """Exactly ``request.n`` choices, from the cache where possible, else from the endpoint.
        ``deferrable``: the call may wait for a provider batch (evaluation's calls), which it
        does where the endpoint's ``batch`` mode says so."""
        ep = self._endpoint(endpoint)
        ep.stats.calls += 1
        req = request.with_(
            model=request.model or ep.config.model,
            max_tokens=request.max_tokens or ep.config.default_max_tokens,
        )
        digest = request_digest(chat_identity(ep.config.kind, req))
        try:
            completion, shared = await self._chat_flights.run(
                sample_key(digest, -req.n),
                lambda: self._chat(ep, req, digest, job, deferrable),
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
            found = await self._sender.lookup(list(dict.fromkeys(keys)))
            missing = [t for t, k in zip(texts, keys, strict=True) if k not in found]
            missing = list(dict.fromkeys(missing))
            tally = Tally()
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
        self, ep: Endpoint, model: str, texts: list[str], job: str | None, tally: Tally
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

        call = Call(
            cost=Cost(ep.price.cost(input_max, 0), input_max, input_max // 4 + 1),
            send=lambda: ep.transport.embed(request),
            floor=lambda _: Usage(),
            entries=entries,
        )
        return entries(await self._sender.send(ep, job, call, tally))

    async def _chat(
        self, ep: Endpoint, req: ChatRequest, digest: str, job: str | None, deferrable: bool
    ) -> Completion:
        start = self._clock.now()
        keys = [sample_key(digest, i) for i in range(req.n)]
        await self.batches.adoptions(keys)
        choices: list[Choice | None] = [None] * req.n
        _fill_found(keys, choices, await self._sender.lookup(keys))
        tally = Tally()
        if None not in choices:
            ep.stats.cache_hits += 1
        elif self._flights is None:
            await self._fill(ep, req, keys, choices, job, tally, deferrable)
        else:
            await self._fill_once(ep, req, digest, keys, choices, job, tally, deferrable)
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

    async def _fill_once(
        self,
        ep: Endpoint,
        req: ChatRequest,
        digest: str,
        keys: list[str],
        choices: list[Choice | None],
        job: str | None,
        tally: Tally,
        deferrable: bool,
    ) -> None:
        """:meth:`_fill` in one process at a time (with coordination): a process that finds the
        request in flight elsewhere waits for that flight's answers in the shared cache."""
        assert self._flights is not None
        flight = sample_key(digest, -req.n)
        while None in choices:
            async with self._flights.flight(flight) as owned:
                if owned:  # answers written since the lookup are not paid for again
                    _fill_found(keys, choices, await self._sender.lookup(keys))
                    await self._fill(ep, req, keys, choices, job, tally, deferrable)
                    return
            answers = await self._flights.wait(flight, keys, self._cache, timeout_s=FLIGHT_WAIT_S)
            _fill_found(keys, choices, answers)
        ep.stats.cache_hits += 1

    async def _fill(
        self,
        ep: Endpoint,
        req: ChatRequest,
        keys: list[str],
        choices: list[Choice | None],
        job: str | None,
        tally: Tally,
        deferrable: bool,
    ) -> None:
        """Fill the missing ``choices`` from the endpoint (realtime, or its batches)."""
        missing = [i for i, c in enumerate(choices) if c is None]
        while missing:
            batcher = self.batches.batcher(ep, deferrable)
            if batcher is not None:
                got = await self.batches.fetch(
                    batcher,
                    req,
                    missing,
                    keys,
                    job,
                    tally,
                    lambda group: self._fetch(ep, req, group, keys, job, tally),
                )
            else:
                got = await self._fetch(ep, req, missing, keys, job, tally)
            for i, choice in got.items():
                choices[i] = choice
            missing = [i for i in missing if choices[i] is None]

    async def _fetch(
        self,
        ep: Endpoint,
        req: ChatRequest,
        missing: list[int],
        keys: list[str],
        job: str | None,
        tally: Tally,
    ) -> dict[int, Choice]:
        """One HTTP request for the first missing samples (all of them where ``n`` works); the
        answers are in the cache when it returns. An endpoint that refuses ``n`` (a 400 naming
        it) is switched to one choice per request and nothing is returned: the caller asks
        again."""
        want = len(missing) if ep.supports_n else 1
        sub = req.with_(n=want, seed=sample_seed(req.seed, missing[0]))
        assert sub.max_tokens is not None
        input_max = max_input_tokens(sub.messages)
        output_max = want * sub.max_tokens

        def entries(reply: TransportReply) -> dict[str, bytes]:
            got = zip(missing, reply.choices[:want], strict=False)
            return {keys[i]: encode_choice(c) for i, c in got}

        call = Call(
            cost=Cost(
                ep.price.cost(input_max, output_max),
                input_max + output_max,
                typical_input_tokens(sub.messages) + output_max,
            ),
            send=lambda: ep.transport.chat(sub),
            floor=chat_floor,
            entries=entries,
        )
        try:
            reply = await self._sender.send(ep, job, call, tally)
        except ChoicesRefused as exc:
            if want < 2:  # one choice refused: no split can help
                ep.stats.failures += 1
                raise
            ep.refuse_n(want, exc)  # the refused request was released: it cost nothing
            return {}
        if not reply.choices:
            raise MalformedResponse("the endpoint returned no choices", endpoint=ep.name)
        if want == 1 < req.n and not ep.supports_n:
            ep.stats.n_split_requests += 1
        return dict(zip(missing, reply.choices[:want], strict=False))

    def _endpoint(self, name: str) -> Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            known = ", ".join(self._endpoints) or "none"
            raise ConfigError(f"unknown endpoint {name!r} (configured: {known})") from None


def _fill_found(keys: list[str], choices: list[Choice | None], found: Mapping[str, bytes]) -> None:
    for i, key in enumerate(keys):
        if choices[i] is None:
            choices[i] = decode_choice(found.get(key))


@asynccontextmanager
async def open_gateway(
    endpoints: Sequence[EndpointConfig],
    *,
    budget: Budget | None = None,
    cache: ResponseCache | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    transports: Mapping[str, Transport] | None = None,
    batch_log: BatchLog | None = None,
    coordination: Coordination | None = None,
) -> AsyncIterator[Gateway]:
    """Open every endpoint's transport (HTTP unless given in ``transports``); close them on exit.
    ``batch_log``: where provider batches are journaled (a run directory's ``batches.sqlite``;
    default: memory, which a new session cannot resume); its unfinished batches are adopted.
    ``coordination`` (:func:`pipeline.coord.open_coordination`): the rate limits, the budget's
    caps, the cache (unless ``cache`` is given) and single-flight are shared with every process
    on the same Redis."""
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoint names must be unique, found {names}")
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        runtime = {}
        for config in endpoints:
            timeout = read_timeout(config)
            given = (transports or {}).get(config.name)
            transport = given or await _open_http(config, timeout)
            stack.push_async_callback(transport.aclose)
            shared = coordination.limits(config) if coordination is not None else None
            runtime[config.name] = Endpoint(config, transport, clock, timeout, shared)
        budget = budget if budget is not None else Budget()
        if coordination is not None and budget.shared is None:
            budget.shared = coordination.budget()
        if cache is None:
            cache = coordination.cache if coordination is not None else MemoryCache()
        check_prices(runtime.values(), budget)
        gateway = Gateway(
            runtime,
            budget=budget,
            cache=cache,
            clock=clock,
            rng=rng or random.Random(),
            flights=coordination.flights if coordination is not None else None,
        )
        gateway.batches.add(batch_log or MemoryBatchLog())
        async with background_tasks() as tg:
            gateway.batches.start(tg)
            yield gateway


async def _open_http(config: EndpointConfig, read: ReadTimeout) -> Transport:
    """The endpoint's HTTP transport, reading its timeout from ``read`` for each request.
    Imported here, so that aiohttp is loaded only by a process that opens one: the stages, the
    runner and the fakes never load it."""
    from pipeline.llm.transports._http import open_http_transport

    return await open_http_transport(config, read_timeout=read.seconds)
