"""Coalescing calls into provider batches (half price, answered within the provider's window).

Per endpoint in batch mode, each call reserves its worst case **at the batch price** (durable in
the ledger, like a realtime call) and waits in a queue. The queue becomes one batch when
``max_requests`` wait or ``linger_s`` after the first came, so the calls of every job in flight
share few, large batches; each caller waits for its own result. For each batch: its intent (a
run-unique tag and each request's cache keys) is journaled, the batch is created with the tag in
its metadata, its id is journaled, it is polled with backoff until it ends, and every result is
settled (from its usage, at the batch price) and written to the response cache as it is read.

Faults: a batch that fails or expires and requests that fail inside it are sent again (at most
``retries`` times) in a new batch, or realtime (``fallback``); past ``max_wait_s`` a batch is
cancelled, its unanswered requests and the rest of the run go realtime. A session that died with
batches open finds them in the journal on resume (:meth:`Batcher.recover`): they are polled (or
found by their tag) and adopted, never created twice.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from pipeline._log import get_logger
from pipeline.clock import Clock
from pipeline.errors import GpoError, LLMError, RetriesExhausted, StorageError
from pipeline.llm._budget import Reservation
from pipeline.llm._calls import Endpoint, Sender, at_least, chat_floor
from pipeline.llm._retry import delay_s
from pipeline.llm._samples import encode_choice
from pipeline.llm._values import ChatRequest, TransportReply, Usage
from pipeline.llm.batch._journal import BatchLog, JournaledBatch
from pipeline.llm.transports._batch import BatchInfo, BatchItem, BatchResult, BatchTransport

log = get_logger("gpo.gateway")
_SINCE_SLACK_S = 300.0  # clocks of gpo and the provider may differ


@dataclass(slots=True, eq=False)
class Pending:
    """One request waiting for its batch. ``reservation`` is None for a request of an adopted
    batch (its spend was counted in full when the session that sent it died)."""

    request: ChatRequest
    keys: tuple[str, ...]
    job: str | None
    reservation: Reservation | None
    tries: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: TransportReply | None = None
    usage: Usage = field(default_factory=Usage)
    usd: float = 0.0
    error: Exception | None = None
    realtime: bool = False
    """Resolved as "send it realtime" (no result; the reservation was released)."""


class Batcher:
    """One endpoint's batches. Run :meth:`serve` in the gateway's task group."""

    def __init__(
        self,
        ep: Endpoint,
        transport: BatchTransport,
        *,
        sender: Sender,
        journal: BatchLog,
        clock: Clock,
        run_tag: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = ep
        self._policy = ep.config.batch
        self.transport = transport
        self._sender = sender
        self._journal = journal
        self._clock = clock
        self._wall = wall_clock
        self._run_tag = run_tag
        self._seq = itertools.count()
        self._queue: list[Pending] = []
        self._queued = anyio.Event()
        self._full = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self.open: dict[str, str] = {}
        """Batches created and not ended: tag -> provider id."""
        self.held = False
        self.realtime = False
        """Set once a batch outlived ``max_wait_s``: the endpoint's calls go realtime."""

    def start(self, tg: TaskGroup) -> None:
        """Serve in ``tg`` (cancel it to stop): flush the queue into batches, watch them."""
        self._tg = tg
        tg.start_soon(self._serve)

    async def _serve(self) -> None:
        while True:
            await self._queued.wait()
            with anyio.CancelScope() as self._full:
                if len(self._queue) < self._policy.max_requests:
                    await self._clock.sleep(self._policy.linger_s)
            self._flush()

    async def send(self, pending: Pending) -> Pending:
        """Queue ``pending`` (its reservation held) and wait until it is resolved. A caller
        cancelled before its batch was created withdraws it and releases its reservation (it
        was never sent); after, the reservation stays (the batch may bill it) and a resumed
        session adopts the batch."""
        self._enqueue(pending)
        try:
            await pending.done.wait()
        except BaseException:
            if pending in self._queue:
                self._queue.remove(pending)
                assert pending.reservation is not None
                self._sender.budget.release(pending.reservation)
            raise
        return pending

    def hold(self) -> None:
        """Create no new batch (a stop was asked for, or a storage fault)."""
        self.held = True

    def recover(self, batch: JournaledBatch) -> list[Pending]:
        """Adopt a batch an earlier session journaled: its requests as resolved-later pendings
        (without reservations); watched in the task group."""
        assert self._tg is not None
        pendings = [
            Pending(request=_NO_REQUEST, keys=keys, job=None, reservation=None)
            for keys in batch.items.values()
        ]
        by_id = dict(zip(batch.items, pendings, strict=True))
        self._tg.start_soon(self._guarded, self._adopt(batch, by_id), by_id)
        return pendings

    def _enqueue(self, pending: Pending) -> None:
        self._queue.append(pending)
        self._queued.set()
        if len(self._queue) >= self._policy.max_requests:
            self._full.cancel()

    def _flush(self) -> None:
        assert self._tg is not None
        self._queued = anyio.Event()
        while self._queue and not self.held:
            count = self._fitting()
            taken, self._queue = self._queue[:count], self._queue[count:]
            tag = f"{self._run_tag}-{next(self._seq)}"
            by_id = {f"{tag}-{i}": p for i, p in enumerate(taken)}
            self._tg.start_soon(self._guarded, self._submit(tag, by_id), by_id)

    def _fitting(self) -> int:
        """How many of the queue's first requests one batch takes: at most ``max_requests``
        and the provider's request limit, and 95 % of its byte limit (at least one)."""
        limit = min(self._policy.max_requests, self.transport.batch_max_requests)
        room = int(self.transport.batch_max_bytes * 0.95)
        for count, pending in enumerate(self._queue[:limit]):
            item = BatchItem(custom_id="x" * 40, request=pending.request)
            room -= self.transport.batch_item_bytes(item)
            if room < 0:
                return max(1, count)
        return min(limit, len(self._queue))

    async def _guarded(self, work: Awaitable[None], by_id: dict[str, Pending]) -> None:
        """Run a batch's work; a fault it cannot handle (the journal cannot be written, the
        provider refuses to show the batch) fails the requests still waiting, not the run."""
        try:
            await work
        except (LLMError, StorageError) as exc:
            if isinstance(exc, StorageError):
                self._sender.storage_fault(exc)
            log.error("batch_failed", endpoint=self.endpoint.name, error=str(exc))
            for pending in by_id.values():
                if not pending.done.is_set():
                    self._failed(pending, exc)

    async def _submit(self, tag: str, by_id: dict[str, Pending]) -> None:
        since = self._wall() - _SINCE_SLACK_S
        items = {cid: p.keys for cid, p in by_id.items()}
        await self._journal.intent(
            JournaledBatch(tag=tag, endpoint=self.endpoint.name, since=since, items=items)
        )
        batch = [BatchItem(custom_id=cid, request=p.request) for cid, p in by_id.items()]
        try:
            info = await self._create(batch, tag, since)
        except LLMError as exc:
            await self._journal.ended(tag, "abandoned")
            if exc.retryable:
                self._retry_all(_pop_all(by_id), exc)
                return
            raise  # the batch API refuses it: the requests fail with the error (_guarded)
        await self._journal.created(tag, info.id)
        self.endpoint.stats.batches += 1
        log.info("batch_created", endpoint=self.endpoint.name, batch=info.id, requests=len(batch))
        await self._watch(tag, info, by_id)

    async def _create(self, batch: list[BatchItem], tag: str, since: float) -> BatchInfo:
        """Create the batch, with bounded retries; before each retry look for it by its tag (a
        create whose answer was lost may have succeeded): never two batches of one intent."""
        policy = self.endpoint.config.retry
        for attempt in itertools.count(1):
            try:
                return await self.transport.batch_create(batch, tag=tag)
            except LLMError as exc:
                if not exc.retryable or attempt >= policy.max_attempts:
                    raise
                await self._clock.sleep(delay_s(policy, exc, attempt, self._sender.rng))
                found = await self.transport.batch_find(tag, since=since)
                if found is not None:
                    return found
        raise AssertionError("unreachable")

    async def _adopt(self, batch: JournaledBatch, by_id: dict[str, Pending]) -> None:
        info = None
        if batch.batch_id is not None:
            info = await self._poll_once(batch.batch_id)
        else:
            info = await self.transport.batch_find(batch.tag, since=batch.since)
        if info is None:  # never created: nothing was sent, nothing to adopt
            await self._journal.ended(batch.tag, "abandoned")
            self._retry_all(_pop_all(by_id), LLMError("never created"))
            return
        if batch.batch_id is None:
            await self._journal.created(batch.tag, info.id)
        self.endpoint.stats.batches_adopted += 1
        log.info("batch_adopted", endpoint=self.endpoint.name, batch=info.id, requests=len(by_id))
        await self._watch(batch.tag, info, by_id)

    async def _watch(self, tag: str, info: BatchInfo, by_id: dict[str, Pending]) -> None:
        """Poll until the batch ends, then resolve every pending from its results."""
        self.open[tag] = info.id
        info = await self._until_ended(info)
        results = await self._results(info)
        for result in results:
            pending = by_id.pop(result.custom_id, None)
            if pending is not None:
                await self._resolve(pending, result)
        missing = LLMError(
            f"no result in batch {info.id} ({info.status})", endpoint=self.endpoint.name
        )
        self._retry_all(_pop_all(by_id), missing)
        del self.open[tag]
        await self._journal.ended(tag)

    async def _until_ended(self, info: BatchInfo) -> BatchInfo:
        started = self._clock.now()
        wait = self._policy.poll_s
        cancelled = False
        while not info.ended:
            await self._clock.sleep(wait)
            wait = min(wait * 1.5, self._policy.max_poll_s)
            info = await self._poll_once(info.id) or info
            max_wait = self._policy.max_wait_s
            if not cancelled and max_wait is not None and self._clock.now() - started > max_wait:
                cancelled = True
                info = await self._give_up(info)
        return info

    async def _give_up(self, info: BatchInfo) -> BatchInfo:
        """``max_wait_s`` passed: cancel the batch; this endpoint's calls go realtime."""
        self.realtime = True
        log.warning(
            "batch_max_wait", endpoint=self.endpoint.name, batch=info.id, status=info.status
        )
        try:
            return await self.transport.batch_cancel(info.id)
        except LLMError as exc:
            log.warning("batch_cancel_failed", endpoint=self.endpoint.name, error=str(exc))
            return info

    async def _poll_once(self, batch_id: str) -> BatchInfo | None:
        """The batch's status; None after a transient error (polled again later)."""
        try:
            return await self.transport.batch_get(batch_id)
        except LLMError as exc:
            if not exc.retryable:
                raise
            log.info(
                "batch_poll_failed", endpoint=self.endpoint.name, batch=batch_id, error=str(exc)
            )
            return None

    async def _results(self, info: BatchInfo) -> list[BatchResult]:
        policy = self.endpoint.config.retry
        for attempt in itertools.count(1):
            try:
                return await self.transport.batch_results(info)
            except LLMError as exc:
                if not exc.retryable or attempt >= policy.max_attempts:
                    raise
                await self._clock.sleep(delay_s(policy, exc, attempt, self._sender.rng))
        raise AssertionError("unreachable")

    async def _resolve(self, pending: Pending, result: BatchResult) -> None:
        if result.reply is not None and result.reply.choices:
            await self._answered(pending, result.reply)
        elif result.error is not None and not result.error.retryable:
            self._failed(pending, result.error)
        else:
            reason = result.error or LLMError(
                "a result without choices", endpoint=self.endpoint.name
            )
            self._retry_all([pending], reason)

    async def _answered(self, pending: Pending, reply: TransportReply) -> None:
        ep = self.endpoint
        if pending.reservation is not None:
            self._settle(pending, pending.reservation, reply)
        entries = {k: encode_choice(c) for k, c in zip(pending.keys, reply.choices, strict=False)}
        await self._sender.save(entries)  # after a fault: kept in memory, the run stops
        ep.stats.batch_requests += 1
        pending.reply = reply
        pending.done.set()

    def _settle(self, pending: Pending, reservation: Reservation, reply: TransportReply) -> None:
        """Turn the reservation into spend at the batch price, from the result's usage."""
        ep, budget = self.endpoint, self._sender.budget
        if reply.usage is None:  # unknown usage: the worst case is charged
            budget.settle_in_full(reservation)
            pending.usage = Usage(input_tokens=reservation.tokens)
            pending.usd = reservation.pusd / 10**12
        else:
            pending.usage = at_least(reply.usage, chat_floor(reply), ep.stats)
            pending.usd = ep.batch_price.cost(
                pending.usage.input_tokens, pending.usage.output_tokens
            )
            budget.settle(reservation, usd=pending.usd, tokens=pending.usage.total)
        ep.stats.usage = ep.stats.usage + pending.usage
        ep.stats.cost_usd += pending.usd

    def _failed(self, pending: Pending, error: GpoError) -> None:
        reservation = pending.reservation
        if reservation is not None:
            billed = isinstance(error, LLMError) and error.maybe_billed
            if billed:
                self._sender.budget.settle_in_full(reservation)
            else:
                self._sender.budget.release(reservation)
        self.endpoint.stats.failures += 1
        pending.error = error
        pending.done.set()

    def _retry_all(self, pendings: Iterable[Pending], reason: LLMError) -> None:
        """Send again (bounded), or realtime, the requests that got no answer from a batch."""
        for pending in pendings:
            self._retry(pending, reason)

    def _retry(self, pending: Pending, reason: LLMError) -> None:
        pending.tries += 1
        if pending.reservation is None:  # an adopted request: its caller asks again
            pending.done.set()
            return
        if self.realtime or (
            pending.tries > self._policy.retries and self._policy.fallback == "realtime"
        ):
            self._go_realtime(pending)
        elif pending.tries > self._policy.retries:
            error = RetriesExhausted(
                f"no answer after {pending.tries} batches: {reason}", endpoint=self.endpoint.name
            )
            self._failed(pending, error)
        else:
            self.endpoint.stats.batch_retries += 1
            log.info(
                "batch_retry", endpoint=self.endpoint.name, tries=pending.tries, error=str(reason)
            )
            self._enqueue(pending)

    def _go_realtime(self, pending: Pending) -> None:
        assert pending.reservation is not None
        self._sender.budget.release(pending.reservation)  # not run: the realtime call reserves
        self.endpoint.stats.batch_realtime += 1
        pending.realtime = True
        pending.done.set()

    async def cancel_open(self) -> int:
        """Ask the provider to cancel every batch still open (``gpo run --cancel-batches``)."""
        for batch_id in list(self.open.values()):
            try:
                await self.transport.batch_cancel(batch_id)
            except LLMError as exc:
                log.warning("batch_cancel_failed", endpoint=self.endpoint.name, error=str(exc))
        return len(self.open)


_NO_REQUEST = ChatRequest.of("(adopted)")


def _pop_all(by_id: dict[str, Pending]) -> list[Pending]:
    taken = list(by_id.values())
    by_id.clear()
    return taken
