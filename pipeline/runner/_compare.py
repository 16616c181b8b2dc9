"""``gpo compare``: is optimizing worth it on my task and model?

A comparison runs every job under each preset and seed as one run: the job ``navigate`` under
``gpo`` with the second seed is the job ``navigate@gpo#s2``. One gateway, cache and budget serve
them all, so a call that several presets make alike (the initial prompt's dev and test scoring,
which is all the ``baseline`` does) is paid once. Seed ``k`` (1-based) is the run's seed plus
``k - 1``: it draws the splits and seeds the sampling, so the presets of one (job, seed) pair
meet the same dev and test examples, and seed 1 has the splits of ``gpo run``.

Each preset keeps its own method knobs (:data:`METHOD_KNOBS`: what is shown, how a prompt is
made, the word budget, whether to optimize at all); every other knob (candidates, epochs,
batch size, exemplars, temperatures, re-asks, ...) is the job's or the run's, the same for all
presets, so they compare at equal effort.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipeline.errors import ConfigError
from pipeline.llm._budget import Budget, Reservation, SpendLedger
from pipeline.llm._gateway import Gateway
from pipeline.runner._compare_stats import PairedStats, paired
from pipeline.runner._jobs import Job, JobResult, OptimizerSettings
from pipeline.runner._run import optimize
from stages.strategy import PRESETS, Strategy

COMPARE_SCHEMA: Final = 1
METHOD_KNOBS: Final = (
    "trajectory",
    "k",
    "history_order",
    "reflection",
    "update",
    "schedule",
    "budget_start",
    "budget_end",
    "warmup_steps",
    "optimize",
)


@dataclass(frozen=True, slots=True)
class ComparePlan:
    """The presets to compare (the first is the reference the others are paired against) and
    how many seeds, from ``base_seed`` (the run's) on."""

    presets: tuple[str, ...]
    seeds: int = 1
    base_seed: int = 0

    def __post_init__(self) -> None:
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            raise ConfigError(
                f"--presets: expected names from {', '.join(PRESETS)}, found {unknown[0]!r}"
            )
        twice = [p for p, n in Counter(self.presets).items() if n > 1]
        if twice:
            raise ConfigError(f"--presets: expected each preset once, found {twice[0]!r} twice")
        if len(self.presets) < 2:
            raise ConfigError(
                f"--presets: expected at least two presets to compare, found {len(self.presets)}"
            )
        if self.seeds < 1:
            raise ConfigError(f"--seeds: expected an integer >= 1, found {self.seeds}")

    @property
    def reference(self) -> str:
        return self.presets[0]

    def seed(self, index: int) -> int:
        """The seed of seed number ``index`` (1-based)."""
        return self.base_seed + index - 1

    def variants(self, names: Sequence[str]) -> list[Variant]:
        """Every (job, preset, seed), seed-major, then job, then preset in the order given: the
        presets of a pair run side by side, so a capped run ends with whole pairs."""
        return [
            Variant(job=name, preset=preset, index=index, seed=self.seed(index))
            for index in range(1, self.seeds + 1)
            for name in names
            for preset in self.presets
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "presets": list(self.presets),
            "seeds": [self.seed(i) for i in range(1, self.seeds + 1)],
        }


@dataclass(frozen=True, slots=True)
class Variant:
    """One job of a comparison: the configured ``job`` under ``preset`` with seed ``index``."""

    job: str
    preset: str
    index: int
    seed: int

    @property
    def name(self) -> str:
        return variant_name(self.job, self.preset, self.index)


def variant_name(job: str, preset: str, index: int) -> str:
    return f"{job}@{preset}#s{index}"


def compared_strategy(preset: str, base: Strategy) -> Strategy:
    """``preset``'s method knobs on top of ``base`` (the job's or the run's strategy)."""
    method = {knob: getattr(PRESETS[preset], knob) for knob in METHOD_KNOBS}
    return dataclasses.replace(base, **method)


def expand_jobs(jobs: Sequence[Job], plan: ComparePlan, settings: OptimizerSettings) -> list[Job]:
    """The comparison's jobs: each of ``jobs`` under every preset and seed of ``plan``."""
    by_name = {job.name: job for job in jobs}
    return [
        dataclasses.replace(
            by_name[v.job],
            name=v.name,
            seed=v.seed,
            strategy=compared_strategy(v.preset, by_name[v.job].strategy or settings.strategy),
        )
        for v in plan.variants(list(by_name))
    ]


# --- who paid for what ----------------------------------------------------------------------


class RequestCounter:
    """A :class:`~pipeline.llm._budget.SpendLedger` in front of another (or none) that counts
    the requests sent per job: every request's reservation passes through ``opened``."""

    def __init__(self, inner: SpendLedger | None) -> None:
        self.inner = inner
        self.requests: Counter[str] = Counter()

    async def opened(self, reservation: Reservation) -> None:
        if self.inner is not None:
            await self.inner.opened(reservation)
        for scope in reservation.scopes:
            if scope.startswith("job:"):
                self.requests[scope.removeprefix("job:")] += 1

    def settled(self, reservation: Reservation, pusd: int, tokens: int) -> None:
        if self.inner is not None:
            self.inner.settled(reservation, pusd, tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobUsage:
    """What one job paid for: HTTP requests and tokens (in + out). A call several jobs make
    alike is paid (and counted) once, by the job whose request went first."""

    calls: int = 0
    tokens: int = 0


def job_usage(
    budget: Budget, requests: Mapping[str, int], names: Sequence[str]
) -> dict[str, JobUsage]:
    """Each job's usage: its requests as counted, its tokens as the budget has them."""
    return {
        name: JobUsage(calls=requests.get(name, 0), tokens=budget.state(f"job:{name}").spent_tokens)
        for name in names
    }


# --- the comparison -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PresetRow:
    """One preset over its jobs. Means are over the jobs that have the score; the gap is the
    mean of best dev minus test (overfitting the dev split); cost None when unknown."""

    preset: str
    jobs: int
    finished: int
    tested: int
    mean_test: float | None
    mean_best_dev: float | None
    dev_test_gap: float | None
    cost_usd: float | None
    calls: int
    tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PairRow:
    """``preset`` against the reference, over the (job, seed) pairs both have a test score of."""

    preset: str
    against: str
    stats: PairedStats


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    plan: ComparePlan
    presets: tuple[PresetRow, ...]
    pairs: tuple[PairRow, ...]
    jobs: tuple[tuple[Variant, JobResult, JobUsage], ...]
    cost_known: bool = True


def compare_results(
    plan: ComparePlan,
    names: Sequence[str],
    results: Sequence[JobResult],
    usage: Mapping[str, JobUsage],
    *,
    cost_known: bool = True,
) -> Comparison:
    """The comparison of a finished (or stopped) run of ``plan`` over the jobs ``names``."""
    by_name = {r.name: r for r in results}
    rows = tuple(
        (v, by_name[v.name], usage.get(v.name, JobUsage()))
        for v in plan.variants(names)
        if v.name in by_name
    )
    presets = tuple(_preset_row(p, rows, cost_known) for p in plan.presets)
    pairs = tuple(_pair_row(p, plan.reference, rows) for p in plan.presets[1:])
    return Comparison(plan=plan, presets=presets, pairs=pairs, jobs=rows, cost_known=cost_known)


def _preset_row(
    preset: str, rows: Sequence[tuple[Variant, JobResult, JobUsage]], cost_known: bool
) -> PresetRow:
    mine = [(r, u) for v, r, u in rows if v.preset == preset]
    tests = [r.best_test_score for r, _ in mine if r.best_test_score is not None]
    devs = [r.best_dev_score for r, _ in mine if r.best_dev_score is not None]
    gaps = [
        r.best_dev_score - r.best_test_score
        for r, _ in mine
        if r.best_dev_score is not None and r.best_test_score is not None
    ]
    return PresetRow(
        preset=preset,
        jobs=len(mine),
        finished=sum(r.status == "finished" for r, _ in mine),
        tested=len(tests),
        mean_test=_mean(tests),
        mean_best_dev=_mean(devs),
        dev_test_gap=_mean(gaps),
        cost_usd=math.fsum(r.cost_usd for r, _ in mine) if cost_known else None,
        calls=sum(u.calls for _, u in mine),
        tokens=sum(u.tokens for _, u in mine),
    )


def _pair_row(
    preset: str, reference: str, rows: Sequence[tuple[Variant, JobResult, JobUsage]]
) -> PairRow:
    tests = {(v.job, v.index, v.preset): r.best_test_score for v, r, _ in rows}
    diffs = [
        mine - ref
        for (job, index, p), mine in tests.items()
        if p == preset
        and mine is not None
        and (ref := tests.get((job, index, reference))) is not None
    ]
    return PairRow(preset=preset, against=reference, stats=paired(diffs))


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def comparison_document(comparison: Comparison, *, run_id: str, status: str) -> dict[str, Any]:
    """``compare.json``: the plan, a row per preset, a row per pair, a row per job."""
    plan = comparison.plan
    return {
        "schema": COMPARE_SCHEMA,
        "run_id": run_id,
        "status": status,
        "plan": {**plan.describe(), "reference": plan.reference},
        "cost_known": comparison.cost_known,
        "presets": [dataclasses.asdict(row) for row in comparison.presets],
        "pairs": [
            {"preset": p.preset, "against": p.against, **dataclasses.asdict(p.stats)}
            for p in comparison.pairs
        ],
        "jobs": [_job_row(v, r, u, comparison.cost_known) for v, r, u in comparison.jobs],
    }


def _job_row(v: Variant, r: JobResult, u: JobUsage, cost_known: bool) -> dict[str, Any]:
    return {
        "name": v.name,
        "job": v.job,
        "preset": v.preset,
        "seed_index": v.index,
        "seed": v.seed,
        "status": r.status,
        "initial_test_score": r.initial_test_score,
        "best_dev_score": r.best_dev_score,
        "best_test_score": r.best_test_score,
        "steps": r.steps,
        "cost_usd": r.cost_usd if cost_known else None,
        "calls": u.calls,
        "tokens": u.tokens,
    }


async def compare(
    gateway: Gateway,
    jobs: Sequence[Job],
    *,
    presets: Sequence[str],
    seeds: int = 1,
    settings: OptimizerSettings | None = None,
) -> Comparison:
    """Run ``jobs`` under each of ``presets`` and ``seeds`` seeds on one gateway (its cache and
    budget shared, so a call made alike is paid once) and compare the presets, each against the
    first. The gateway's budget counts the requests per job while it runs."""
    settings = settings or OptimizerSettings()
    plan = ComparePlan(tuple(presets), seeds, settings.seed)
    expanded = expand_jobs(jobs, plan, settings)
    budget = gateway.budget
    counter = RequestCounter(budget.ledger)
    budget.ledger = counter
    try:
        result = await optimize(gateway, expanded, settings)
    finally:
        budget.ledger = counter.inner
    usage = job_usage(budget, counter.requests, [j.name for j in expanded])
    names = [j.name for j in jobs]
    return compare_results(plan, names, result.jobs, usage, cost_known=result.totals.cost_known)
