"""What a user asks the optimizer for (jobs, settings) and what it answers (events, results)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.tasks._data import Example, Splits, split_examples
from pipeline.tasks._metrics import Metric, auto_metric, metric_by_name
from stages.messages import Entry, JobContext, JobId, Placement, StepRecord
from stages.schedule import total_steps, validate_schedule
from stages.strategy import Strategy, strategy

JobStatus = Literal["finished", "failed", "budget_exhausted", "interrupted"]
"""``interrupted`` only in the partial results of a run stopped before the job ended."""
DEFAULT_INITIAL_PROMPT = "Let's think step by step."


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One prompt to optimize on one task.

    ``examples`` are split by ``seed`` into exemplars (shown in meta-prompts), dev (scores every
    candidate) and test (scored once at the end, for the initial and the final prompt). A job
    with fewer examples than its splits ask for (exemplars + ``dev_size`` + ``test_size``) is
    refused before anything is spent, unless ``small_splits``: then dev keeps its size as long
    as one example is left for test, and test gets what remains (see
    :func:`~pipeline.tasks._data.split_examples`).
    ``metric`` is a metric name, a :class:`~pipeline.Metric`, or None to pick one from
    the targets. Endpoints name entries of the gateway; the optimizer endpoint defaults to the
    task endpoint; without an embedding endpoint, relevance retrieval is lexical. ``seed``
    (None: the run's) draws the splits and seeds the job's sampling.
    """

    name: str
    examples: tuple[Example, ...]
    task_endpoint: str
    optimizer_endpoint: str | None = None
    embedding_endpoint: str | None = None
    metric: Metric | str | None = None
    initial_prompt: str = DEFAULT_INITIAL_PROMPT
    placement: Placement = "after"
    dev_size: int = 48
    test_size: int = 144
    small_splits: bool = False
    strategy: Strategy | None = None
    budget: Caps | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("job name: expected a non-empty string, found ''")
        if self.placement not in ("after", "before", "system"):
            raise ConfigError(
                f"job {self.name!r} placement: expected 'after', 'before' or "
                f"'system', found {self.placement!r}"
            )


CALL_WORKERS = 128
"""The default number of concurrent task-model calls of the evaluation fan-out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizerSettings:
    """Run-wide knobs. ``max_active_jobs`` bounds the jobs in the cycle (each with one step in
    flight); ``call_workers`` bounds concurrent task-model calls of the evaluation fan-out."""

    strategy: Strategy = field(default_factory=strategy)
    seed: int = 0
    max_active_jobs: int = 64
    buffer_size: int = 16
    call_workers: int = CALL_WORKERS
    scorer_max_tokens: int = 512
    optimizer_max_tokens: int = 512
    event_buffer: int = 10_000

    def __post_init__(self) -> None:
        for key in (
            "max_active_jobs",
            "call_workers",
            "scorer_max_tokens",
            "optimizer_max_tokens",
            "event_buffer",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"optimizer {key}: expected >= 1, found {getattr(self, key)}")
        if self.buffer_size < 0:
            raise ConfigError(f"optimizer buffer_size: expected >= 0, found {self.buffer_size}")


def check_splits(jobs: Sequence[Job], settings: OptimizerSettings) -> None:
    """``ConfigError`` naming the first job with fewer examples than its splits ask for (and no
    ``small_splits``): checked for every job before a run starts, so nothing is spent."""
    for job in jobs:
        _check_splits(job, (job.strategy or settings.strategy).exemplars)


def _check_splits(job: Job, exemplars: int) -> None:
    needed = exemplars + job.dev_size + job.test_size
    if job.small_splits or len(job.examples) >= needed:
        return
    raise ConfigError(
        f'job "{job.name}": needs {exemplars} exemplars + {job.dev_size} dev + '
        f"{job.test_size} test = {needed} examples, found {len(job.examples)} (set smaller "
        "dev_size/test_size, or small_splits = true to use what there is)"
    )


def build_context(job: Job, index: int, settings: OptimizerSettings) -> JobContext:
    """Validate a job and freeze what its stages need; raises ConfigError for bad data."""
    plan = job.strategy or settings.strategy
    seed = settings.seed if job.seed is None else job.seed
    _check_splits(job, plan.exemplars)
    splits: Splits = split_examples(
        job.examples,
        seed=seed,
        dev_size=job.dev_size,
        test_size=job.test_size,
        exemplars=plan.exemplars,
    )
    metric = _metric(job.metric, job.examples)
    steps = total_steps(len(splits.dev), epochs=plan.epochs, batch_size=plan.batch_size)
    if plan.optimize:
        validate_schedule(
            plan.schedule,
            steps,
            start=plan.budget_start,
            end=plan.budget_end,
            warmup_steps=plan.warmup_steps,
        )
    return JobContext(
        id=JobId(job.name),
        index=index,
        splits=splits,
        metric=metric,
        strategy=plan,
        initial_prompt=job.initial_prompt,
        placement=job.placement,
        task_endpoint=job.task_endpoint,
        optimizer_endpoint=job.optimizer_endpoint or job.task_endpoint,
        embedding_endpoint=job.embedding_endpoint,
        total_steps=steps if plan.optimize else 0,
        seed=seed,
        scorer_max_tokens=settings.scorer_max_tokens,
        optimizer_max_tokens=settings.optimizer_max_tokens,
    )


def _metric(metric: Metric | str | None, examples: Sequence[Example]) -> Metric:
    if metric is None:
        return auto_metric(examples)
    return metric_by_name(metric) if isinstance(metric, str) else metric


# --- progress events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted:
    job: str
    total_steps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateScored:
    job: str
    step: int
    prompt: str
    score: float
    new: bool
    raced_out: bool = False
    """Racing stopped it early: ``score`` is over part of the dev split only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished:
    job: str
    step: int
    total_steps: int
    word_budget: int | None
    selected_score: float
    best_dev_score: float
    initial_dev_score: float | None = None
    """The initial prompt's dev score (the first entry of the trajectory)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished:
    job: str
    status: JobStatus
    best_dev_score: float | None
    error: str | None
    initial_dev_score: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetUpdate:
    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None


ProgressEvent = JobStarted | CandidateScored | StepFinished | JobFinished | BudgetUpdate


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    name: str
    status: JobStatus
    error: str | None
    initial_prompt: str
    best_prompt: str
    initial_dev_score: float | None
    best_dev_score: float | None
    initial_test_score: float | None
    best_test_score: float | None
    steps: int
    trajectory: tuple[Entry, ...]
    step_records: tuple[StepRecord, ...]
    cost_usd: float
    optimizer_replies: Mapping[str, int] = field(default_factory=dict)
    """Optimizer replies that gave no candidate, by reason: ``parse_failures`` (no tags),
    ``rejected_unchanged``, ``rejected_exemplar_copy`` (summed over ``step_records``)."""
    outputs_judged: int = 0
    """Task-model outputs a built-in metric judged (the initial prompt and new candidates on
    dev, the final prompts on test); custom metrics' outputs are not counted."""
    unextractable: int = 0
    """Of those, the outputs from which the metric could read no answer."""

    @property
    def unextractable_share(self) -> float | None:
        """``unextractable / outputs_judged``; None when nothing was judged."""
        return self.unextractable / self.outputs_judged if self.outputs_judged else None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTotals:
    """What a run used, summed over its endpoints (and, with ``+``, over sessions of a resumed
    run): ``calls`` are HTTP requests (cache hits excluded), ``rate_limited`` the 429s among the
    ``retries``. ``cost_known`` is False once an endpoint without a price was called; ``cost_usd``
    is then a lower bound, shown as unknown."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    cost_known: bool = True
    batches: int = 0
    batch_requests: int = 0
    """Of ``calls``, those answered in provider batches (and how many batches were created)."""

    def __add__(self, other: RunTotals) -> RunTotals:
        """Field by field; the cost is known if it is known in both."""
        sums = {f: getattr(self, f) + getattr(other, f) for f in _SUMMED}
        return RunTotals(**sums, cost_known=self.cost_known and other.cost_known)


_SUMMED = (
    "calls",
    "cache_hits",
    "retries",
    "rate_limited",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "wall_s",
    "batches",
    "batch_requests",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    jobs: tuple[JobResult, ...]
    totals: RunTotals
    events_dropped: int = 0

    def job(self, name: str) -> JobResult:
        return next(j for j in self.jobs if j.name == name)
