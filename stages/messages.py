"""Immutable values that flow between the stages, each carrying its job's id.

The cycle of one optimization step::

    StepTicket -> [retrieval] -> Direction -> [refinement] -> MetaPrompt -> [generation]
      -> Candidates -> [evaluation] -> StepOutcome -> (runner) -> next StepTicket

Prompts scored outside a step (the initial prompt on dev, the final prompts on test) travel as
``EvalRequest -> [evaluation] -> EvalDone``. A stage that cannot finish a job's message sends
``JobFailed`` to the runner instead, so a failure ends that job alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NewType

from pipeline.tasks._data import Example, Splits
from pipeline.tasks._metrics import Metric
from stages.metaprompt import ShownPrompt
from stages.strategy import Strategy

JobId = NewType("JobId", str)
Placement = Literal["after", "before", "system"]
Split = Literal["dev", "test"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext:
    """Everything about a job that does not change while it runs."""

    id: JobId
    index: int
    splits: Splits
    metric: Metric
    strategy: Strategy
    initial_prompt: str
    placement: Placement
    task_endpoint: str
    optimizer_endpoint: str
    embedding_endpoint: str | None
    total_steps: int
    seed: int
    scorer_max_tokens: int
    optimizer_max_tokens: int

    def examples(self, split: Split) -> tuple[Example, ...]:
        return self.splits.dev if split == "dev" else self.splits.test


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One example's answer under one prompt."""

    index: int
    correct: bool
    output: str
    extracted: str | None


@dataclass(frozen=True, slots=True)
class Tally:
    """Task-model outputs judged by a built-in metric, and how many of them had no answer it
    could read (``Judgement.extracted is None``); outputs of custom metrics are not counted."""

    judged: int = 0
    unextractable: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Tally:
        counted = [o.extracted is None for o in outcomes]
        return cls(judged=len(counted), unextractable=sum(counted))

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.judged + other.judged, self.unextractable + other.unextractable)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluated:
    """A prompt scored on a split: score in 0..100, the per-example outcomes, and the tally of
    its outputs (kept when the outcomes are not: a journal may drop them)."""

    prompt: str
    score: float
    outcomes: tuple[Outcome, ...]
    tally: Tally = Tally()


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One trajectory entry: the prompt selected at ``step`` (0 = initial) and its dev score."""

    step: int
    prompt: str
    score: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepTicket:
    """The runner's request for the next step of a job, with a snapshot of its state."""

    context: JobContext
    step: int
    trajectory: tuple[Entry, ...]
    current: Evaluated
    seen: Mapping[str, ShownPrompt] = field(default_factory=dict)
    """Normalized text -> prompt and dev score, for every prompt the job has evaluated."""

    @property
    def job(self) -> JobId:
        return self.context.id


@dataclass(frozen=True, slots=True, kw_only=True)
class Direction:
    """The update direction: what the optimizer will be shown."""

    ticket: StepTicket
    shown: tuple[ShownPrompt, ...]
    summary: str | None = None

    @property
    def job(self) -> JobId:
        return self.ticket.job


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaPrompt:
    ticket: StepTicket
    text: str
    word_budget: int | None
    shown: tuple[ShownPrompt, ...]
    reflection: str | None = None

    @property
    def job(self) -> JobId:
        return self.ticket.job


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    prompt: str
    edit_distance: int
    over_budget: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    meta: MetaPrompt
    candidates: tuple[Candidate, ...]
    parse_failures: int
    reasks: int
    rejected_over_budget: int
    rejected_unchanged: int = 0
    rejected_exemplar_copy: int = 0

    @property
    def ticket(self) -> StepTicket:
        return self.meta.ticket

    @property
    def job(self) -> JobId:
        return self.meta.ticket.job


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateRecord:
    """A candidate of a step: its dev score (a reused prompt's: the one first measured)."""

    prompt: str
    score: float
    new: bool
    edit_distance: int
    over_budget: bool
    raced_out: bool = False
    """Racing stopped it early: ``score`` is over ``examples_scored`` dev examples only, never
    a full-dev score, so it joins neither the trajectory nor the prompts a job has seen."""
    examples_scored: int | None = None
    """Dev examples this step scored it on (0: reused; None: a record from before racing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """What one optimization step did, for results and reports."""

    step: int
    word_budget: int | None
    shown: tuple[str, ...]
    reflection: str | None
    candidates: tuple[CandidateRecord, ...]
    selected: str
    selected_score: float
    parse_failures: int
    reasks: int
    rejected_over_budget: int
    rejected_unchanged: int = 0
    rejected_exemplar_copy: int = 0
    judged: int = 0
    """Task-model outputs judged in this step (its new candidates on dev)."""
    unextractable: int = 0
    """Of those, the outputs with no answer the metric could read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    ticket: StepTicket
    record: StepRecord
    selected: Evaluated
    evaluated: tuple[Evaluated, ...]
    """Every new candidate scored on the whole dev split (racing's stopped ones are not)."""

    @property
    def job(self) -> JobId:
        return self.ticket.job


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalRequest:
    context: JobContext
    purpose: Literal["initial", "test"]
    prompts: tuple[str, ...]
    split: Split

    @property
    def job(self) -> JobId:
        return self.context.id


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalDone:
    request: EvalRequest
    results: tuple[Evaluated, ...]

    @property
    def job(self) -> JobId:
        return self.request.job


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFailed:
    job: JobId
    error: BaseException
    stage: str


RunnerInput = StepOutcome | EvalDone | JobFailed
EvaluationInput = Candidates | EvalRequest
