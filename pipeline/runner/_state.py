"""The runner's bookkeeping: per-job state, and the bounded stream of progress events."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from pipeline.llm._budget import Budget
from pipeline.runner._jobs import Job, JobResult, JobStatus, ProgressEvent
from stages.edits import normalize_prompt
from stages.messages import (
    Entry,
    Evaluated,
    JobContext,
    StepOutcome,
    StepRecord,
    StepTicket,
    Tally,
)
from stages.metaprompt import ShownPrompt


class RunObserver(Protocol):
    """Told of every job's progress at step boundaries (the run journal is one)."""

    def job_started(self, job: str, initial: Evaluated, keep_outputs: bool) -> None: ...

    def job_stepped(self, job: str, outcome: StepOutcome, keep_outputs: bool) -> None: ...

    def job_tested(
        self, job: str, scores: dict[str, float], tally: Tally | None = None
    ) -> None: ...

    def job_ended(self, job: str, status: str, error: str | None) -> None: ...


class EventSink:
    """Publishes without ever blocking the run: when the reader lags, events are dropped."""

    def __init__(self, buffer: int) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[ProgressEvent](buffer)
        self.dropped = 0

    def receiver(self) -> MemoryObjectReceiveStream[ProgressEvent] | None:
        """A reader of the events, or None once the sink is closed."""
        try:
            return self._receive.clone()
        except anyio.ClosedResourceError:
            return None

    def publish(self, event: ProgressEvent) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def close(self) -> None:
        self._send.close()
        self._receive.close()


@dataclass(slots=True)
class JobHistory:
    """What a journal says happened to one job: what a resumed run starts from."""

    initial: Evaluated | None = None
    steps: list[tuple[StepRecord, Evaluated]] = field(default_factory=list)
    test_scores: dict[str, float] | None = None
    test_tally: Tally = field(default_factory=Tally)
    status: str | None = None
    error: str | None = None


@dataclass(slots=True)
class JobState:
    """One started job's mutable state, owned by the runner (stages see immutable snapshots)."""

    context: JobContext
    trajectory: list[Entry] = field(default_factory=list)
    current: Evaluated | None = None
    seen: dict[str, ShownPrompt] = field(default_factory=dict)
    records: list[StepRecord] = field(default_factory=list)
    test_scores: dict[str, float] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    """Every task-model output the job judged: initial, steps and test."""
    test_tally: Tally = field(default_factory=Tally)
    status: JobStatus | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.context.id

    @property
    def steps_done(self) -> int:
        return len(self.records)

    def start(self, initial: Evaluated) -> None:
        self._remember(initial)
        self.tally += initial.tally
        self.trajectory.append(Entry(step=0, prompt=initial.prompt, score=initial.score))
        self.current = initial

    def stepped(self, outcome: StepOutcome) -> None:
        self.replay_step(outcome.record, outcome.selected)

    def replay_step(self, record: StepRecord, selected: Evaluated) -> None:
        """Apply a finished step: its new candidates join the evaluated prompts, but for those
        racing stopped early (their partial scores are never shown as dev scores)."""
        for c in record.candidates:
            if c.new and not c.raced_out:
                self.seen.setdefault(
                    normalize_prompt(c.prompt), ShownPrompt(text=c.prompt, score=c.score)
                )
        self.trajectory.append(
            Entry(step=record.step, prompt=selected.prompt, score=selected.score)
        )
        self.current = selected
        self.records.append(record)
        self.tally += Tally(record.judged, record.unextractable)

    def restore(self, history: JobHistory) -> None:
        """Rebuild the state a journal describes."""
        if history.initial is not None:
            self.start(history.initial)
        for record, selected in history.steps:
            self.replay_step(record, selected)
        if history.test_scores is not None:
            self.test_scores = dict(history.test_scores)
            self.test_tally = history.test_tally
            self.tally += history.test_tally
        if history.status is not None:
            self.status = history.status  # type: ignore[assignment]
            self.error = history.error

    def ticket(self) -> StepTicket:
        assert self.current is not None
        return StepTicket(
            context=self.context,
            step=self.steps_done + 1,
            trajectory=tuple(self.trajectory),
            current=self.current,
            seen=MappingProxyType(dict(self.seen)),
        )

    def best(self) -> Entry | None:
        """The trajectory prompt with the best dev score (the earliest of equals)."""
        return max(self.trajectory, key=lambda e: e.score) if self.trajectory else None

    def final_prompts(self) -> tuple[str, ...]:
        initial, best = self.context.initial_prompt, self.best()
        return (initial,) if best is None or best.prompt == initial else (initial, best.prompt)

    def tested(self, results: tuple[Evaluated, ...]) -> None:
        self.test_scores = {r.prompt: r.score for r in results}
        self.test_tally = sum((r.tally for r in results), Tally())
        self.tally += self.test_tally

    def end(self, status: JobStatus, error: BaseException | None) -> None:
        self.status = status
        self.error = None if error is None else f"{type(error).__name__}: {error}"

    def result(self, budget: Budget) -> JobResult:
        initial = self.trajectory[0] if self.trajectory else None
        best = self.best()
        initial_prompt = self.context.initial_prompt
        return JobResult(
            name=self.name,
            status=self.status or "interrupted",
            error=self.error,
            initial_prompt=initial_prompt,
            best_prompt=best.prompt if best else initial_prompt,
            initial_dev_score=initial.score if initial else None,
            best_dev_score=best.score if best else None,
            initial_test_score=self.test_scores.get(initial_prompt),
            best_test_score=self.test_scores.get(best.prompt) if best else None,
            steps=self.steps_done,
            trajectory=tuple(self.trajectory),
            step_records=tuple(self.records),
            cost_usd=budget.state(f"job:{self.name}").spent_usd,
            optimizer_replies=_replies(self.records),
            outputs_judged=self.tally.judged,
            unextractable=self.tally.unextractable,
        )

    def _remember(self, evaluated: Evaluated) -> None:
        key = normalize_prompt(evaluated.prompt)
        self.seen.setdefault(key, ShownPrompt(text=evaluated.prompt, score=evaluated.score))


_REPLY_COUNTS = ("parse_failures", "rejected_unchanged", "rejected_exemplar_copy")


def _replies(records: list[StepRecord]) -> dict[str, int]:
    """The optimizer replies that gave no candidate, summed over the steps, by reason."""
    return {key: sum(getattr(r, key) for r in records) for key in _REPLY_COUNTS}


def unstarted(job: Job, status: JobStatus, error: BaseException | None) -> JobResult:
    """The result of a job that never entered the cycle (bad data, no budget, interrupted)."""
    return JobResult(
        name=job.name,
        status=status,
        error=None if error is None else f"{type(error).__name__}: {error}",
        initial_prompt=job.initial_prompt,
        best_prompt=job.initial_prompt,
        initial_dev_score=None,
        best_dev_score=None,
        initial_test_score=None,
        best_test_score=None,
        steps=0,
        trajectory=(),
        step_records=(),
        cost_usd=0.0,
    )
