"""The runner: many optimization jobs flowing through the four stages at once.

Admission control keeps the feedback cycle deadlock-free: at most ``max_active_jobs`` jobs are
in the cycle, each with exactly one message in flight, and every stage has that many workers, so
whichever stream a message is sent on, some worker is free to take it, whatever the buffer
sizes. A job's failure (bad data, its budget cap) ends that job alone; a run-wide cap stops
admitting jobs and lets the active ones end with their best-so-far.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
)

from pipeline.clock import Clock, SystemClock
from pipeline.errors import BudgetExhausted, ConfigError, StorageError
from pipeline.llm._gateway import Gateway
from pipeline.runner._jobs import (
    BudgetUpdate,
    CandidateScored,
    Job,
    JobFinished,
    JobResult,
    JobStarted,
    JobStatus,
    OptimizerSettings,
    ProgressEvent,
    RunResult,
    StepFinished,
    build_context,
    check_splits,
)
from pipeline.runner._results import run_totals
from pipeline.runner._state import EventSink, JobHistory, JobState, RunObserver, unstarted
from stages.evaluation import Evaluation
from stages.generation import Generation
from stages.messages import (
    Direction,
    EvalRequest,
    EvaluationInput,
    JobFailed,
    JobId,
    MetaPrompt,
    RunnerInput,
    StepOutcome,
    StepTicket,
)
from stages.pool import Stage
from stages.refinement import Refinement
from stages.retrieval import Retrieval


class _Queue(Protocol):
    def statistics(self) -> MemoryObjectStreamStatistics: ...


class OptimizerRun:
    """A run in progress: iterate :meth:`events`, await :meth:`result`.

    ``history`` (from a journal) resumes jobs where they stopped: ended jobs keep their result,
    others continue with their next step, whose calls come from the response cache. ``clock``
    times the run (``RunTotals.wall_s``).
    """

    def __init__(
        self,
        gateway: Gateway,
        jobs: Sequence[Job],
        settings: OptimizerSettings,
        *,
        observer: RunObserver | None = None,
        history: Mapping[str, JobHistory] | None = None,
        clock: Clock | None = None,
    ) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ConfigError(f"job names must be unique, found duplicates in {names}")
        check_splits(jobs, settings)
        self._gateway = gateway
        self._settings = settings
        self._clock = clock or SystemClock()
        self._observer = observer
        self._history = dict(history or {})
        self._jobs = list(jobs)
        self._states: dict[JobId, JobState] = {}
        self._unstarted: dict[str, JobResult] = {}
        self._sink = EventSink(settings.event_buffer)
        self._done = anyio.Event()
        self._result: RunResult | None = None
        self._stopped = False
        self._fault: StorageError | None = None
        self._queues: dict[str, _Queue] = {}

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Progress events until the run ends (nothing once it has ended). Events are buffered
        (``event_buffer``) and dropped, and counted, when not read fast enough."""
        stream = self._sink.receiver()
        if stream is None:
            return
        with stream:
            async for event in stream:
                yield event

    def queue_depths(self) -> dict[str, int]:
        """Messages buffered or waiting to be sent, per stage input (``calls``: the evaluation
        fan-out). Bounded by design: a growing number means that stage is the bottleneck."""
        depths = {}
        for name, stream in self._queues.items():
            stats = stream.statistics()
            depths[name] = stats.current_buffer_used + stats.tasks_waiting_send
        return depths

    async def result(self) -> RunResult:
        """The run's result; raises the :class:`StorageError` that stopped it, if one did."""
        await self._done.wait()
        assert self._result is not None
        if self._fault is not None:
            raise self._fault
        return self._result

    async def run(self) -> RunResult:
        """Run every job; a storage fault (the gateway's ledger or cache, or the observer's
        journal) stops the run once the requests in flight are answered, and is raised then."""
        started = self._clock.now()
        try:
            await self._run_stages()
        finally:
            self._sink.close()
        self._result = self._collect(self._clock.now() - started)
        self._done.set()
        if self._fault is not None:
            raise self._fault
        return self._result

    async def _run_stages(self) -> None:
        w, buf = self._settings.max_active_jobs, self._settings.buffer_size
        to_retrieve, retrieve_in = anyio.create_memory_object_stream[StepTicket](buf)
        to_refine, refine_in = anyio.create_memory_object_stream[Direction](buf)
        to_generate, generate_in = anyio.create_memory_object_stream[MetaPrompt](buf)
        to_evaluate, evaluate_in = anyio.create_memory_object_stream[EvaluationInput](buf)
        to_runner, inbox = anyio.create_memory_object_stream[RunnerInput](buf)
        self._queues.update(
            retrieval=retrieve_in,
            refinement=refine_in,
            generation=generate_in,
            evaluation=evaluate_in,
            runner=inbox,
        )
        gw = self._gateway
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                Stage("retrieval", Retrieval(gw).handle, workers=w).serve,
                retrieve_in,
                to_refine,
                to_runner.clone(),
            )
            tg.start_soon(
                Stage("refinement", Refinement(gw).handle, workers=w).serve,
                refine_in,
                to_generate,
                to_runner.clone(),
            )
            tg.start_soon(
                Stage("generation", Generation(gw).handle, workers=w).serve,
                generate_in,
                to_evaluate.clone(),
                to_runner.clone(),
            )
            evaluation = Evaluation(
                gw,
                workers=w,
                call_workers=self._settings.call_workers,
                buffer_size=buf,
            )
            self._queues["calls"] = evaluation
            tg.start_soon(evaluation.serve, evaluate_in, to_runner.clone(), to_runner.clone())
            to_runner.close()
            with to_retrieve, to_evaluate, inbox:
                await self._drive(to_retrieve, to_evaluate, inbox)

    async def _drive(
        self,
        to_retrieve: MemoryObjectSendStream[StepTicket],
        to_evaluate: MemoryObjectSendStream[EvaluationInput],
        inbox: MemoryObjectReceiveStream[RunnerInput],
    ) -> None:
        self._to_retrieve, self._to_evaluate = to_retrieve, to_evaluate
        pending = deque(enumerate(self._jobs))
        active = 0
        while pending or active:
            while pending and active < self._settings.max_active_jobs and not self._stopped:
                index, job = pending.popleft()
                active += await self._admit(index, job)
            if not active:
                break
            message = await inbox.receive()
            if await self._handle(message):
                active -= 1
        for _, job in pending:
            reason = BudgetExhausted(
                "the run's budget was exhausted before this job started", scope="run"
            )
            self._end_unstarted(job, "budget_exhausted", reason)

    async def _admit(self, index: int, job: Job) -> int:
        """Start or resume a job; 1 if it entered the cycle, 0 if it has already ended."""
        try:
            ctx = build_context(job, index, self._settings)
            if job.budget is not None:
                self._gateway.budget.set_job_caps(job.name, job.budget)
        except ConfigError as exc:
            self._end_unstarted(job, "failed", exc)
            return 0
        state = self._states[ctx.id] = JobState(context=ctx)
        self._sink.publish(JobStarted(job=job.name, total_steps=ctx.total_steps))
        if job.name in self._history:
            return await self._resume(state, self._history[job.name])
        await self._to_evaluate.send(
            EvalRequest(context=ctx, purpose="initial", prompts=(ctx.initial_prompt,), split="dev")
        )
        return 1

    async def _resume(self, state: JobState, history: JobHistory) -> int:
        state.restore(history)
        if state.status is not None:
            self._publish_finish(state)
            return 0
        if not state.trajectory:
            await self._to_evaluate.send(
                EvalRequest(
                    context=state.context,
                    purpose="initial",
                    prompts=(state.context.initial_prompt,),
                    split="dev",
                )
            )
            return 1
        return 0 if await self._advance(state) else 1

    async def _handle(self, message: RunnerInput) -> bool:
        """Apply one message to its job; True when the job has ended."""
        state = self._states[message.job]
        if isinstance(message, JobFailed):
            return self._fail(state, message.error)
        keep = state.context.strategy.reflection
        if isinstance(message, StepOutcome):
            self._step_done(state, message)
            if self._observer:
                self._observer.job_stepped(state.name, message, keep)
        elif message.request.purpose == "initial":
            state.start(message.results[0])
            if self._observer:
                self._observer.job_started(state.name, message.results[0], keep)
        else:
            state.tested(message.results)
            if self._observer:
                self._observer.job_tested(state.name, state.test_scores, state.test_tally)
            return self._finish(state)
        return await self._advance(state)

    async def _advance(self, state: JobState) -> bool:
        ctx = state.context
        if state.steps_done < ctx.total_steps:
            await self._to_retrieve.send(state.ticket())
            return False
        prompts = state.final_prompts()
        if not ctx.splits.test:
            return self._finish(state)
        await self._to_evaluate.send(
            EvalRequest(context=ctx, purpose="test", prompts=prompts, split="test")
        )
        return False

    def _step_done(self, state: JobState, outcome: StepOutcome) -> None:
        state.stepped(outcome)
        job, step = state.context.id, outcome.record.step
        for c in outcome.record.candidates:
            self._sink.publish(
                CandidateScored(
                    job=job,
                    step=step,
                    prompt=c.prompt,
                    score=c.score,
                    new=c.new,
                    raced_out=c.raced_out,
                )
            )
        self._sink.publish(
            StepFinished(
                job=job,
                step=step,
                total_steps=state.context.total_steps,
                word_budget=outcome.record.word_budget,
                selected_score=outcome.selected.score,
                best_dev_score=max(e.score for e in state.trajectory),
                initial_dev_score=state.trajectory[0].score,
            )
        )
        self._publish_budget()

    def _fail(self, state: JobState, error: BaseException) -> bool:
        if isinstance(error, StorageError):  # the run stops; a resume redoes this job's step
            self._fault, self._stopped = self._fault or error, True
            state.end("interrupted", error)
            self._publish_finish(state)
            return True
        exhausted = isinstance(error, BudgetExhausted)
        if exhausted and getattr(error, "scope", "") == "run":
            self._stopped = True
        state.end("budget_exhausted" if exhausted else "failed", error)
        self._publish_finish(state)
        self._ended(state)
        return True

    def _finish(self, state: JobState) -> bool:
        state.end("finished", None)
        self._publish_finish(state)
        self._ended(state)
        return True

    def _ended(self, state: JobState) -> None:
        if self._observer:
            self._observer.job_ended(state.name, state.status or "failed", state.error)

    def _end_unstarted(self, job: Job, status: JobStatus, error: BaseException) -> None:
        result = self._unstarted[job.name] = unstarted(job, status, error)
        self._sink.publish(
            JobFinished(job=job.name, status=status, best_dev_score=None, error=result.error)
        )

    def _publish_finish(self, state: JobState) -> None:
        best = state.best()
        self._sink.publish(
            JobFinished(
                job=state.name,
                status=state.status or "failed",
                best_dev_score=best.score if best else None,
                error=state.error,
                initial_dev_score=state.trajectory[0].score if state.trajectory else None,
            )
        )

    def _publish_budget(self) -> None:
        run = self._gateway.budget.state()
        self._sink.publish(
            BudgetUpdate(
                spent_usd=run.spent_usd,
                reserved_usd=run.reserved_usd,
                remaining_usd=run.remaining_usd,
            )
        )

    def job_results(self) -> tuple[JobResult, ...]:
        """Every job's result so far, in job order (``interrupted`` for jobs still running)."""
        budget = self._gateway.budget
        started = {name: s.result(budget) for name, s in self._states.items()}
        return tuple(
            started.get(JobId(j.name))
            or self._unstarted.get(j.name)
            or unstarted(j, "interrupted", None)
            for j in self._jobs
        )

    def _collect(self, wall_s: float) -> RunResult:
        totals = run_totals(self._gateway, wall_s=wall_s)
        jobs = self.job_results()
        return RunResult(jobs=jobs, totals=totals, events_dropped=self._sink.dropped)


@asynccontextmanager
async def open_optimizer(
    gateway: Gateway, jobs: Sequence[Job], settings: OptimizerSettings | None = None
) -> AsyncIterator[OptimizerRun]:
    """Start optimizing ``jobs`` in the caller's event loop; the block waits for the end.

    Inside the block, iterate ``run.events()`` for progress and ``await run.result()``. Leaving
    the block waits for the run to finish; cancel the enclosing scope to stop it early.
    """
    run = OptimizerRun(gateway, jobs, settings or OptimizerSettings())
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.run)
        yield run


async def optimize(
    gateway: Gateway, jobs: Sequence[Job], settings: OptimizerSettings | None = None
) -> RunResult:
    """Optimize ``jobs`` and return the results (no progress events)."""
    return await OptimizerRun(gateway, jobs, settings or OptimizerSettings()).run()
