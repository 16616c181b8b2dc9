"""Batched requests, shared by the simulator's two batch APIs (:mod:`pipeline.sim.batch_openai`,
:mod:`pipeline.sim.batch_anthropic`): the book of batches, their timeline and their outcomes.

A batch runs on the service's clock, computed lazily whenever it is read (no background tasks):
created at ``t0``, its ``n`` requests fall due one after another until ``t0 + 0.9 * delay``
(request ``i`` at ``t0 + 0.9 * delay * (i + 1) / n``), then it finalizes until ``t0 + delay``
and is complete. A request due after a cancellation is canceled (one due before it ran: "requests
already running may still complete"); one due after ``t0 + batch_expire_s`` expires. Each request
that runs is answered by :class:`pipeline.sim.answer.Answerer`, exactly as the realtime route
answers it, without the realtime rate limits, latency or faults, and billed to the ``batch_*``
counters of :class:`pipeline.sim.stats.SimStats` (the batch price). ``batch_fail_rate`` makes a
share of batches fail validation and ``batch_error_rate`` a share of requests error with a 500,
drawn from the simulator's seed in creation order.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from pipeline.sim.answer import Answer, Answerer, derive
from pipeline.sim.config import SimConfig
from pipeline.sim.requests import ChatRequest
from pipeline.sim.stats import SimStats

Api = Literal["openai", "anthropic"]
OutcomeKind = Literal["succeeded", "errored", "expired", "canceled"]
Phase = Literal["failed", "running", "finalizing", "completed", "expired", "cancelled"]

RUN_SHARE = 0.9
"""The share of ``batch_delay_s`` over which a batch's requests run; the rest is finalizing."""


class NotFound(LookupError):
    """A batch, file or route object that does not exist (404)."""


@dataclass(frozen=True, kw_only=True)
class BatchError:
    """Why a batch failed validation (OpenAI's ``errors.data`` items)."""

    code: str
    message: str
    line: int | None = None
    """The 1-based line of the input file at fault, if one is."""
    param: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchRequest:
    """One request of a batch, as read at creation."""

    custom_id: str
    chat: ChatRequest | None
    """None when its body is invalid: it errors with a 400 saying ``invalid``."""
    invalid: str = ""
    key: str
    """A digest of its body: equal bodies, equal keys (for the duplicate counters)."""
    fails: bool = False
    """Drawn by ``batch_error_rate``: it errors with a 500 when it runs."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one request of a batch ended (in request order)."""

    kind: OutcomeKind
    request_id: str
    at: float
    """Clock seconds when it ended."""
    answer: Answer | None = None
    status: int = 200
    """The HTTP status it got when it ran: 200, 400 (invalid body) or 500 (a drawn error)."""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A batch as created; what changes (its outcomes, a cancellation) is kept by the book."""

    id: str
    api: Api
    requests: tuple[BatchRequest, ...]
    created: float
    """Clock seconds."""
    errors: tuple[BatchError, ...] = ()
    """Why it failed validation; empty for a valid batch."""
    delay_s: float
    expire_s: float

    def due(self, index: int) -> float:
        """When request ``index`` runs."""
        return self.created + self.delay_s * RUN_SHARE * (index + 1) / max(len(self.requests), 1)

    @property
    def expires_at(self) -> float:
        return self.created + self.expire_s

    @property
    def done_at(self) -> float:
        return self.created + self.delay_s


@dataclass(frozen=True, kw_only=True)
class Progress:
    """A batch as seen at one instant: its phase, outcomes so far and when it ended."""

    batch: Batch
    phase: Phase
    outcomes: tuple[Outcome, ...]
    ended_at: float | None
    cancel_at: float | None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def count(self, kind: OutcomeKind) -> int:
        return sum(1 for outcome in self.outcomes if outcome.kind == kind)


@dataclass(kw_only=True)
class _Run:
    """The mutable part of a batch: its settled outcomes and when it was canceled."""

    batch: Batch
    outcomes: list[Outcome] = field(default_factory=list)
    cancel_at: float | None = None


class BatchBook:
    """Every batch of the simulator, settled lazily against ``clock``."""

    def __init__(
        self, config: SimConfig, *, answerer: Answerer, stats: SimStats, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self._answerer = answerer
        self._stats = stats
        self._clock = clock
        self._wall_offset = time.time() - clock()
        self._fail_rng = random.Random(derive(config.seed, "batch-fail"))
        self._error_rng = random.Random(derive(config.seed, "batch-errors"))
        self._runs: dict[str, _Run] = {}

    @property
    def answerer(self) -> Answerer:
        return self._answerer

    def now(self) -> float:
        return self._clock()

    def wall(self, at: float) -> float:
        """Unix seconds of clock instant ``at``."""
        return self._wall_offset + at

    def request(
        self, custom_id: str, body: Any, chat: ChatRequest | None, invalid: str = ""
    ) -> BatchRequest:
        """A request of a new batch, with its duplicate key and its drawn error."""
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        fails = self._error_rng.random() < self._config.batch_error_rate
        return BatchRequest(
            custom_id=custom_id, chat=chat, invalid=invalid, key=digest, fails=fails
        )

    def create(
        self,
        api: Api,
        prefix: str,
        requests: tuple[BatchRequest, ...],
        errors: tuple[BatchError, ...] = (),
    ) -> Progress:
        """A new batch of ``requests`` (failed when ``errors`` or drawn so), counted; as submitted,
        before validation and before anything ran (even with no delay)."""
        if self._fail_rng.random() < self._config.batch_fail_rate and not errors:
            errors = (_DRAWN_FAILURE,)
        batch = Batch(
            id=self._answerer.new_id(prefix),
            api=api,
            requests=requests,
            created=self.now(),
            errors=errors,
            delay_s=self._config.batch_delay_s,
            expire_s=self._config.batch_expire_s,
        )
        self._count_created(batch)
        self._runs[batch.id] = _Run(batch=batch)
        return Progress(batch=batch, phase="running", outcomes=(), ended_at=None, cancel_at=None)

    def find(self, batch_id: str, api: Api) -> Progress | None:
        """The batch ``batch_id`` of ``api`` as it is now; None when there is none."""
        run = self._runs.get(batch_id)
        if run is None or run.batch.api != api:
            return None
        return self.progress(batch_id)

    def newest_first(self, api: Api) -> list[str]:
        """The ids of ``api``'s batches, the most recently created first."""
        return [batch_id for batch_id, run in reversed(self._runs.items()) if run.batch.api == api]

    def cancel(self, batch_id: str) -> Progress:
        """Cancel the batch now (no-op when it already ended or was canceled)."""
        run = self._runs[batch_id]
        if not self.progress(batch_id).ended and run.cancel_at is None:
            run.cancel_at = self.now()
        return self.progress(batch_id)

    def progress(self, batch_id: str) -> Progress:
        """The batch as it is now, after settling what fell due."""
        run = self._runs[batch_id]
        now = self.now()
        self._settle(run, now)
        phase, ended_at = _phase(run, now)
        return Progress(
            batch=run.batch,
            phase=phase,
            outcomes=tuple(run.outcomes),
            ended_at=ended_at,
            cancel_at=run.cancel_at,
        )

    def _settle(self, run: _Run, now: float) -> None:
        batch = run.batch
        if batch.errors:
            return
        stop_at = min(run.cancel_at if run.cancel_at is not None else math.inf, batch.expires_at)
        for index in range(len(run.outcomes), len(batch.requests)):
            due = batch.due(index)
            if due <= min(now, stop_at):
                run.outcomes.append(self._run(batch.requests[index], due))
            elif stop_at <= now:
                kind: OutcomeKind = "canceled" if stop_at == run.cancel_at else "expired"
                run.outcomes.append(self._unrun(kind, stop_at))
            else:
                break

    def _run(self, request: BatchRequest, due: float) -> Outcome:
        request_id = self._answerer.new_id("req_")
        if request.chat is None:
            self._stats.batch_requests_errored += 1
            return Outcome(
                kind="errored", request_id=request_id, at=due, status=400, message=request.invalid
            )
        if request.fails:
            self._stats.batch_requests_errored += 1
            message = "The server had an error processing the request (simulated)."
            return Outcome(
                kind="errored", request_id=request_id, at=due, status=500, message=message
            )
        answer = self._answerer.answer(request.chat)
        self._stats.batch_requests_succeeded += 1
        self._stats.batch_choices_served += len(answer.choices)
        self._stats.batch_input_tokens += answer.prompt_tokens
        self._stats.batch_output_tokens += answer.completion_tokens
        return Outcome(kind="succeeded", request_id=request_id, at=due, answer=answer)

    def _unrun(self, kind: OutcomeKind, at: float) -> Outcome:
        if kind == "canceled":
            self._stats.batch_requests_canceled += 1
        else:
            self._stats.batch_requests_expired += 1
        return Outcome(kind=kind, request_id=self._answerer.new_id("req_"), at=at)

    def _count_created(self, batch: Batch) -> None:
        stats = self._stats
        stats.batches_created += 1
        stats.batch_sizes.append(len(batch.requests))
        stats.batches_failed += bool(batch.errors)
        claimed = set(self._claimed_keys())
        repeats = sum(1 for request in batch.requests if request.key in claimed)
        stats.batches_duplicated += repeats > 0
        stats.batch_requests_duplicated += repeats

    def _claimed_keys(self) -> Iterator[str]:
        """Keys of requests of earlier batches that are still pending or succeeded."""
        for batch_id, run in self._runs.items():
            outcomes = self.progress(batch_id).outcomes
            for index, request in enumerate(run.batch.requests):
                if not run.batch.errors and (
                    index >= len(outcomes) or outcomes[index].kind == "succeeded"
                ):
                    yield request.key


_DRAWN_FAILURE = BatchError(
    code="simulated_failure", message="The batch failed validation (simulated: batch_fail_rate)."
)


def _phase(run: _Run, now: float) -> tuple[Phase, float | None]:
    batch = run.batch
    if batch.errors:
        return "failed", batch.created
    if len(run.outcomes) < len(batch.requests):
        return "running", None
    if run.cancel_at is not None and run.cancel_at < batch.done_at:
        return "cancelled", run.cancel_at
    if any(outcome.kind == "expired" for outcome in run.outcomes):
        return "expired", batch.expires_at
    if now < batch.done_at:
        return "finalizing", None
    return "completed", batch.done_at
