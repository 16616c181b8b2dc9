"""Stage 4, dev-set evaluation: fan-out of candidate x example calls, fan-in, selection.

Every (prompt, example) call goes through one bounded stream into the stage's own pool of
``call_workers`` call workers that ask the task model, so memory stays flat however many jobs,
candidates and examples there are (backpressure, not buffering). The workers put each outcome
into its evaluation's fan-in, which wakes the evaluation once, when every call is accounted for
(a reply stream per evaluation, one value per call, measured 20 % slower on B3: a wake-up per
call). A step's new candidates are scored on the full dev split (or, with ``evaluation =
"racing"``, in rounds that stop hopeless candidates early: :mod:`stages.racing`); duplicates of
prompts the job already evaluated reuse their scores. The next prompt is the best-scoring *new*
candidate scored on the whole dev split, even below the current one (GPO always moves).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
)

from pipeline._seeds import derive_seed
from pipeline.errors import GpoError
from pipeline.llm._values import ChatRequest, Message
from pipeline.tasks._data import Example
from pipeline.tasks._metrics import judge, reads_answers
from stages.edits import normalize_prompt
from stages.messages import (
    Candidate,
    CandidateRecord,
    Candidates,
    EvalDone,
    EvalRequest,
    Evaluated,
    EvaluationInput,
    JobContext,
    JobFailed,
    Outcome,
    Split,
    StepOutcome,
    StepRecord,
    StepTicket,
    Tally,
)
from stages.metaprompt import ShownPrompt
from stages.models import Models
from stages.pool import Stage
from stages.racing import race, race_order, rounds_of

T = TypeVar("T")

Slot = tuple[int, int]
"""A call's place in its evaluation: (prompt index, example index in its split)."""


@dataclass(slots=True)
class _FanIn:
    """Collects the outcomes of one evaluation; ``done`` fires when every call is accounted for.
    After the first error the evaluation has failed, and its calls not yet asked are skipped."""

    remaining: int
    outcomes: dict[Slot, Outcome] = field(default_factory=dict)
    error: Exception | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def settle(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


@dataclass(frozen=True, slots=True)
class Call:
    """One task-model call: prompt ``slot[0]`` on example ``slot[1]``."""

    context: JobContext
    prompt: str
    example: Example
    slot: Slot
    fan_in: _FanIn

    async def run(self, models: Models) -> None:
        """Ask, and settle the outcome (or the error) into the fan-in."""
        if self.fan_in.error is None:
            try:
                self.fan_in.outcomes[self.slot] = await self._ask(models)
            except Exception as exc:  # the evaluation fails; its other calls are skipped
                self.fan_in.error = self.fan_in.error or exc
        self.fan_in.settle()

    async def _ask(self, models: Models) -> Outcome:
        ctx = self.context
        request = ChatRequest(
            messages=task_messages(self.prompt, self.example.input, ctx.placement),
            temperature=ctx.strategy.scorer_temperature,
            max_tokens=ctx.scorer_max_tokens,
            seed=ctx.seed,
        )
        completion = await models.chat(ctx.task_endpoint, request, job=ctx.id, deferrable=True)
        verdict = await judge(ctx.metric, completion.text, self.example.target)
        return Outcome(
            index=self.slot[1],
            correct=verdict.correct,
            output=completion.text,
            extracted=verdict.extracted,
        )


def task_messages(prompt: str, question: str, placement: str) -> tuple[Message, ...]:
    """The task model's input: the prompt after the question (GPO), before it, or as system."""
    if not prompt.strip():
        return (Message(role="user", content=question),)
    if placement == "system":
        return (Message(role="system", content=prompt), Message(role="user", content=question))
    text = f"{prompt}\n\n{question}" if placement == "before" else f"{question}\n\n{prompt}"
    return (Message(role="user", content=text),)


class Evaluation:
    """Handles ``Candidates`` (a step) and ``EvalRequest`` (initial and test scoring), with
    ``workers`` handlers over a pool of ``call_workers`` call workers fed through a stream of
    ``buffer_size`` calls. Serve it once: :meth:`serve` as a stage, or inside :meth:`call_pool`
    to call :meth:`handle` and :meth:`evaluate` directly."""

    def __init__(
        self, models: Models, *, workers: int = 1, call_workers: int, buffer_size: int = 0
    ) -> None:
        self._models = models
        self._workers = workers
        self._call_workers = call_workers
        self._calls, self._queued = anyio.create_memory_object_stream[Call](buffer_size)

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The call stream's: calls buffered, and handlers waiting to send more (backpressure)."""
        return self._queued.statistics()

    async def serve(
        self,
        receive: MemoryObjectReceiveStream[EvaluationInput],
        send: MemoryObjectSendStream[StepOutcome | EvalDone],
        fail: MemoryObjectSendStream[JobFailed],
    ) -> None:
        """The stage: runs until ``receive`` is closed and drained, then closes the others."""
        async with self.call_pool():
            await Stage("evaluation", self.handle, workers=self._workers).serve(receive, send, fail)

    @asynccontextmanager
    async def call_pool(self) -> AsyncIterator[None]:
        """Run the call workers for the block; on exit, they finish the calls sent and stop."""
        async with anyio.create_task_group() as tg:
            with self._queued:
                for _ in range(self._call_workers):
                    tg.start_soon(self._call_worker, self._queued.clone())
            with self._calls:
                yield

    async def _call_worker(self, queued: MemoryObjectReceiveStream[Call]) -> None:
        with queued:
            async for call in queued:
                await call.run(self._models)

    async def handle(self, message: Candidates | EvalRequest) -> StepOutcome | EvalDone:
        if isinstance(message, EvalRequest):
            results = await self.evaluate(message.context, message.prompts, message.split)
            return EvalDone(request=message, results=results)
        return await self._step(message)

    async def evaluate(
        self, ctx: JobContext, prompts: tuple[str, ...], split: Split
    ) -> tuple[Evaluated, ...]:
        """Score ``prompts`` on ``split``. On dev, for relevance retrieval, the prompts are
        embedded meanwhile, so the next step's retrieval finds them in the cache: the embedding
        call leaves the critical path."""
        examples = tuple(enumerate(ctx.examples(split)))

        async def scoring() -> tuple[Evaluated, ...]:
            return _all_scored(ctx, prompts, await self._outcomes(ctx, prompts, examples))

        return await self._embedding_meanwhile(ctx, prompts, split, scoring)

    async def _embedding_meanwhile(
        self,
        ctx: JobContext,
        prompts: tuple[str, ...],
        split: Split,
        work: Callable[[], Awaitable[T]],
    ) -> T:
        """``work()``, with new dev prompts embedded meanwhile for relevance retrieval."""
        if not (split == "dev" and prompts and _embeds(ctx)):
            return await work()
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._prefetch_embeddings, ctx, prompts)
            try:
                result = await work()
            except Exception as exc:  # raised as is, not in a group: the runner reads its type
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    async def _race(
        self, ticket: StepTicket, prompts: tuple[str, ...]
    ) -> tuple[tuple[Evaluated, ...], frozenset[str]]:
        """Score ``prompts`` by racing; also the normalized prompts that were stopped early."""
        ctx, dev = ticket.context, ticket.context.splits.dev
        order = race_order(len(dev), derive_seed(ctx.seed, ctx.id, ticket.step, "racing"))

        async def score(
            asked: tuple[str, ...], at: tuple[int, ...]
        ) -> tuple[tuple[Outcome, ...], ...]:
            return await self._outcomes(ctx, asked, tuple((i, dev[i]) for i in at))

        async def racing() -> tuple[tuple[Evaluated, ...], frozenset[str]]:
            rounds = rounds_of(order, ctx.strategy.racing_rounds)
            raced = await race(prompts, rounds, score, ctx.strategy.racing_z)
            reads = reads_answers(ctx.metric)
            scored = tuple(_scored(r.prompt, r.outcomes, reads) for r in raced)
            return scored, frozenset(normalize_prompt(r.prompt) for r in raced if r.raced_out)

        return await self._embedding_meanwhile(ctx, prompts, "dev", racing)

    async def _recover(self, ctx: JobContext, reused: Evaluated) -> Evaluated:
        """A reused prompt's per-example answers, for the next step's reflection: asked again,
        its calls come from the response cache (the score stays the one first measured, and its
        outputs, counted then, are not counted again)."""
        again = (await self.evaluate(ctx, (reused.prompt,), "dev"))[0]
        return Evaluated(prompt=reused.prompt, score=reused.score, outcomes=again.outcomes)

    async def _prefetch_embeddings(self, ctx: JobContext, prompts: tuple[str, ...]) -> None:
        assert ctx.embedding_endpoint is not None
        with contextlib.suppress(GpoError):  # retrieval asks again, and fails properly, if need be
            await self._models.embed(ctx.embedding_endpoint, prompts, job=ctx.id)

    async def _outcomes(
        self, ctx: JobContext, prompts: tuple[str, ...], examples: Sequence[tuple[int, Example]]
    ) -> tuple[tuple[Outcome, ...], ...]:
        """The fan-out and fan-in: every prompt on every (index, example); per prompt, its
        outcomes in the order of ``examples``."""
        fan_in = _FanIn(remaining=len(prompts) * len(examples))
        if fan_in.remaining == 0:
            fan_in.done.set()
        for p, prompt in enumerate(prompts):
            for e, example in examples:
                await self._calls.send(Call(ctx, prompt, example, (p, e), fan_in))
        await fan_in.done.wait()
        if fan_in.error is not None:
            raise fan_in.error
        found = fan_in.outcomes
        return tuple(tuple(found[(p, e)] for e, _ in examples) for p in range(len(prompts)))

    async def _score_new(
        self, ticket: StepTicket, prompts: tuple[str, ...]
    ) -> tuple[tuple[Evaluated, ...], frozenset[str]]:
        """A step's new candidates scored as the strategy says, and those stopped early."""
        if ticket.context.strategy.evaluation == "racing":
            return await self._race(ticket, prompts)
        return await self.evaluate(ticket.context, prompts, "dev"), frozenset()

    async def _step(self, batch: Candidates) -> StepOutcome:
        ticket = batch.ticket
        seen = ticket.seen
        new = [c for c in batch.candidates if normalize_prompt(c.prompt) not in seen]
        scored, stopped = await self._score_new(ticket, tuple(c.prompt for c in new))
        score_of = {normalize_prompt(e.prompt): e for e in scored}
        records = tuple(_record(c, score_of, seen, stopped) for c in batch.candidates)
        tally = sum((e.tally for e in scored), Tally())
        selected = _select(records, score_of, ticket.current)
        if not selected.outcomes and ticket.context.strategy.reflection and records:
            selected = await self._recover(ticket.context, selected)
        record = StepRecord(
            step=ticket.step,
            word_budget=batch.meta.word_budget,
            shown=tuple(p.text for p in batch.meta.shown),
            reflection=batch.meta.reflection,
            candidates=records,
            selected=selected.prompt,
            selected_score=selected.score,
            parse_failures=batch.parse_failures,
            reasks=batch.reasks,
            rejected_over_budget=batch.rejected_over_budget,
            rejected_unchanged=batch.rejected_unchanged,
            rejected_exemplar_copy=batch.rejected_exemplar_copy,
            judged=tally.judged,
            unextractable=tally.unextractable,
        )
        full = tuple(e for e in scored if normalize_prompt(e.prompt) not in stopped)
        return StepOutcome(ticket=ticket, record=record, selected=selected, evaluated=full)


def _embeds(ctx: JobContext) -> bool:
    strategy = ctx.strategy
    return (
        strategy.trajectory == "relevance"
        and strategy.relevance_backend == "embeddings"
        and ctx.embedding_endpoint is not None
    )


def _all_scored(
    ctx: JobContext, prompts: tuple[str, ...], outcomes: tuple[tuple[Outcome, ...], ...]
) -> tuple[Evaluated, ...]:
    reads = reads_answers(ctx.metric)
    return tuple(_scored(p, o, reads) for p, o in zip(prompts, outcomes, strict=True))


def _scored(prompt: str, outcomes: tuple[Outcome, ...], reads: bool) -> Evaluated:
    """The prompt's score and outcomes; its tally when the metric says what it read."""
    n = len(outcomes)
    score = 100.0 * sum(o.correct for o in outcomes) / n if n else 0.0
    tally = Tally.of(outcomes) if reads else Tally()
    return Evaluated(prompt=prompt, score=score, outcomes=outcomes, tally=tally)


def _record(
    candidate: Candidate,
    score_of: dict[str, Evaluated],
    seen: Mapping[str, ShownPrompt],
    stopped: frozenset[str],
) -> CandidateRecord:
    key = normalize_prompt(candidate.prompt)
    is_new = key in score_of
    score = score_of[key].score if is_new else seen[key].score
    return CandidateRecord(
        prompt=candidate.prompt,
        score=score,
        new=is_new,
        edit_distance=candidate.edit_distance,
        over_budget=candidate.over_budget,
        raced_out=key in stopped,
        examples_scored=len(score_of[key].outcomes) if is_new else 0,
    )


def _select(
    records: tuple[CandidateRecord, ...], score_of: dict[str, Evaluated], current: Evaluated
) -> Evaluated:
    """The best new candidate scored on the whole dev split; else the best reused one; else
    stay on the current prompt. Candidates stopped by racing are never selected."""
    eligible = [r for r in records if not r.raced_out]
    pool = [r for r in eligible if r.new] or eligible
    if not pool:
        return current
    best = max(pool, key=lambda r: r.score)  # max keeps the first of equal scores
    found = score_of.get(normalize_prompt(best.prompt))
    return found or Evaluated(prompt=best.prompt, score=best.score, outcomes=())
