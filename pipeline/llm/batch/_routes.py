"""The gateway's side of provider batches: which calls go to a batcher, and the batches adopted
after a resume.

:class:`BatchRoutes` holds one :class:`Batcher` per endpoint in batch mode (or with batches an
earlier session left open in the journal). A deferrable call's missing samples are reserved at
the batch price and queued (:meth:`BatchRoutes.fetch`); a request the batcher resolves as
"realtime" (a fallback, or past ``max_wait_s``) is sent through the gateway's realtime path,
which the gateway passes in. A call whose keys an adopted batch will answer waits for that batch
(:meth:`BatchRoutes.adoptions`) instead of paying again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

import anyio
from anyio.abc import TaskGroup

from pipeline._log import get_logger
from pipeline.clock import Clock
from pipeline.errors import BadRequest, ConfigError, NotFound
from pipeline.llm._calls import Cost, Endpoint, Sender, Tally
from pipeline.llm._samples import sample_seed
from pipeline.llm._tokens import max_input_tokens
from pipeline.llm._values import ChatRequest, Choice
from pipeline.llm.batch._batcher import Batcher, Pending
from pipeline.llm.batch._journal import BatchLog, JournaledBatch
from pipeline.llm.transports._batch import BatchTransport

log = get_logger("gpo.gateway")

Realtime = Callable[[list[int]], Awaitable[dict[int, Choice]]]
"""The gateway's realtime path for the samples at these indices."""


class BatchRoutes:
    """The batchers of a gateway's endpoints and the requests of adopted batches."""

    def __init__(self, endpoints: Mapping[str, Endpoint], *, sender: Sender, clock: Clock) -> None:
        self._endpoints = endpoints
        self._sender = sender
        self._clock = clock
        self._batchers: dict[str, Batcher] = {}
        self._adopted: dict[str, Pending] = {}  # cache key -> its request in an adopted batch
        self._journal_left: list[JournaledBatch] = []

    def add(self, journal: BatchLog) -> None:
        """A batcher for each endpoint in batch mode, or with batches an earlier session left
        open in ``journal``; ``ConfigError`` for batch mode on a transport without batches."""
        self._journal_left = journal.unfinished()
        run_tag = f"gpo-{uuid.uuid4().hex[:16]}"
        for name, ep in self._endpoints.items():
            mine = any(b.endpoint == name for b in self._journal_left)
            if ep.config.batch.mode == "off" and not mine:
                continue
            if not isinstance(ep.transport, BatchTransport):
                if ep.config.batch.mode != "off":
                    raise ConfigError(f"endpoint {name!r}: its transport has no batch API")
                continue
            self._batchers[name] = Batcher(
                ep,
                ep.transport,
                sender=self._sender,
                journal=journal,
                clock=self._clock,
                run_tag=run_tag,
            )

    def start(self, tg: TaskGroup) -> None:
        """Run the batchers in ``tg``, and adopt the batches left open (their keys wait for
        them, not for new calls)."""
        for batcher in self._batchers.values():
            batcher.start(tg)
        for batch in self._journal_left:
            adopter = self._batchers.get(batch.endpoint)
            if adopter is None:
                log.warning("batch_orphaned", endpoint=batch.endpoint, batch=batch.batch_id)
                continue
            for pending in adopter.recover(batch):
                self._adopted |= dict.fromkeys(pending.keys, pending)

    async def check(self, name: str) -> None:
        """An endpoint in batch mode lists its batches (free): ``ConfigError`` if it has no
        batch API, before anything is spent."""
        batcher = self._batchers.get(name)
        if batcher is None or self._endpoints[name].config.batch.mode == "off":
            return
        try:
            await batcher.transport.batch_find("gpo-preflight", since=time.time())
        except (NotFound, BadRequest) as exc:
            raise ConfigError(
                f'endpoint {name!r} has no batch API ({exc}); set batch = "off" for it'
            ) from None

    def hold(self) -> None:
        """Create no new batch (batches open go on)."""
        for batcher in self._batchers.values():
            batcher.hold()

    @property
    def open(self) -> int:
        """Provider batches created and not ended, over every endpoint."""
        return sum(len(b.open) for b in self._batchers.values())

    async def cancel_open(self) -> int:
        """Ask the providers to cancel every batch still open; how many were asked."""
        return sum([await b.cancel_open() for b in self._batchers.values()])

    def batcher(self, ep: Endpoint, deferrable: bool) -> Batcher | None:
        """The batcher for a call, if it goes to batches now (else None: realtime)."""
        batcher = self._batchers.get(ep.name) if ep.config.batch.batches(deferrable) else None
        return None if batcher is None or batcher.realtime else batcher

    async def adoptions(self, keys: list[str]) -> None:
        """Wait for the adopted batches that will answer any of ``keys`` (after a resume)."""
        for key in keys:
            pending = self._adopted.get(key)
            if pending is not None:
                await pending.done.wait()
                self._adopted.pop(key, None)

    async def fetch(
        self,
        batcher: Batcher,
        req: ChatRequest,
        missing: list[int],
        keys: list[str],
        job: str | None,
        tally: Tally,
        realtime: Realtime,
    ) -> dict[int, Choice]:
        """The missing samples from provider batches: one request for all of them (one per
        sample where the endpoint has no ``n``), each reserved at the batch price and queued;
        a request the batcher resolves as "realtime" goes through ``realtime``."""
        groups = [missing] if batcher.endpoint.supports_n else [[i] for i in missing]
        got: dict[int, Choice] = {}
        errors: list[Exception] = []

        async def one(group: list[int]) -> None:
            try:
                got.update(await self._group(batcher, req, group, keys, job, tally, realtime))
            except Exception as exc:  # raised as is below, not in an exception group
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for group in groups:
                tg.start_soon(one, group)
        if errors:
            raise errors[0]
        return got

    async def _group(
        self,
        batcher: Batcher,
        req: ChatRequest,
        group: list[int],
        keys: list[str],
        job: str | None,
        tally: Tally,
        realtime: Realtime,
    ) -> dict[int, Choice]:
        ep = batcher.endpoint
        sub = req.with_(n=len(group), seed=sample_seed(req.seed, group[0]))
        assert sub.max_tokens is not None
        input_max = max_input_tokens(sub.messages)
        output_max = sub.n * sub.max_tokens
        cost = Cost(ep.batch_price.cost(input_max, output_max), input_max + output_max, 0)
        reservation = await self._sender.reserve(ep, job, cost)
        pending = Pending(
            request=sub, keys=tuple(keys[i] for i in group), job=job, reservation=reservation
        )
        tally.attempts += 1
        await batcher.send(pending)
        if pending.error is not None:
            raise pending.error
        if pending.realtime or pending.reply is None:
            return await realtime(group)
        tally.usage = tally.usage + pending.usage
        tally.cost_usd += pending.usd
        tally.requests += 1
        return dict(zip(group, pending.reply.choices, strict=False))
