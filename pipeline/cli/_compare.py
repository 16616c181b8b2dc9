"""``gpo compare``: the config's jobs under several presets and seeds, as one resumable run.

The comparison's jobs are the config's expanded (:mod:`pipeline.runner._compare`), and so is the
configuration the run directory keeps: its digest names every ``job@preset#sN`` with its
strategy, so a resume that would mix two comparisons is refused. The plan (presets and seeds) is
written to ``compare.json`` before the run starts; a resume with other ``--presets`` or
``--seeds`` is refused in one line, naming both.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.cli._format import usd
from pipeline.config._load import RunConfig
from pipeline.errors import ConfigError
from pipeline.llm._budget import Budget
from pipeline.runner._compare import (
    COMPARE_SCHEMA,
    ComparePlan,
    Comparison,
    PairRow,
    RequestCounter,
    compare_results,
    compared_strategy,
    job_usage,
)
from pipeline.runner._compare_stats import ALPHA
from pipeline.runner._jobs import Job, RunResult
from pipeline.runner._results import write_json

COMPARE_FILE: Final = "compare.json"
MIN_SIGN_PAIRS: Final = 6  # the fewest pairs without ties whose sign test can reach p < 0.05


def parse_presets(text: str) -> tuple[str, ...]:
    """``"gpo, ape,baseline"`` -> ``("gpo", "ape", "baseline")`` (checked by ComparePlan)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def expand_config(config: RunConfig, plan: ComparePlan) -> RunConfig:
    """``config`` with its jobs replaced by the comparison's (names and strategies), so that
    its digest describes the comparison."""
    specs = {spec.name: spec for spec in config.jobs}
    base = config.settings.strategy
    jobs = tuple(
        dataclasses.replace(
            specs[v.job],
            name=v.name,
            strategy=compared_strategy(v.preset, specs[v.job].strategy or base),
        )
        for v in plan.variants(list(specs))
    )
    return dataclasses.replace(config, jobs=jobs)


@dataclass(slots=True)
class Comparing:
    """A session's comparison: its plan, the names of the configured jobs it expands, and the
    requests each expanded job sent (this session's counter; earlier sessions' from the
    journal's stats samples)."""

    plan: ComparePlan
    names: tuple[str, ...]
    counter: RequestCounter = field(default_factory=lambda: RequestCounter(None))
    earlier: Counter[str] = field(default_factory=Counter)

    def result(self, budget: Budget, jobs: Sequence[Job], result: RunResult) -> Comparison:
        """The comparison of the run's results as they are."""
        requests = self.earlier + self.counter.requests
        usage = job_usage(budget, requests, [j.name for j in jobs])
        known = result.totals.cost_known
        return compare_results(self.plan, self.names, result.jobs, usage, cost_known=known)


def previous_job_requests(events: Sequence[dict[str, Any]]) -> Counter[str]:
    """Requests per job of earlier sessions: the last stats sample before each later start
    (a sample holds its own session's counts)."""
    total: Counter[str] = Counter()
    last: Counter[str] = Counter()
    for event in events:
        if event.get("event") == "run_started":
            total, last = total + last, Counter()
        elif event.get("event") == "stats" and isinstance(event.get("job_requests"), dict):
            last = Counter({str(k): int(v) for k, v in event["job_requests"].items()})
    return total + last


# --- the plan in the run directory ----------------------------------------------------------


def check_plan(target: Path, plan: ComparePlan) -> None:
    """ConfigError (one line) if ``target`` holds a started run that is another comparison or
    no comparison at all."""
    if not _started(target):
        return
    saved = _saved_plan(target)
    if saved is None:
        raise ConfigError(
            f"{target}: holds a gpo run, not a comparison (no {COMPARE_FILE}); "
            "choose another --run-dir"
        )
    if _options(saved) != _options(plan.describe()):  # other seed values: the digest says
        raise ConfigError(
            f"{target}: this comparison was started with {_options(saved)}, not "
            f"{_options(plan.describe())}; resume it with the same options, or choose "
            "another --run-dir"
        )


def refuse_comparison(target: Path) -> None:
    """ConfigError (one line) for ``gpo run`` on a comparison's run directory."""
    if _started(target) and (target / COMPARE_FILE).exists():
        raise ConfigError(
            f"{target}: holds a comparison; resume it with gpo compare, or choose another --run-dir"
        )


def write_plan(run_dir: Path, plan: ComparePlan, run_id: str) -> None:
    """Record the plan before the run starts (the final compare.json replaces it)."""
    if _saved_plan(run_dir) == plan.describe():
        return
    document = {"schema": COMPARE_SCHEMA, "run_id": run_id, "status": "running"}
    write_json(run_dir / COMPARE_FILE, {**document, "plan": _plan_doc(plan)})


def _plan_doc(plan: ComparePlan) -> dict[str, Any]:
    return {**plan.describe(), "reference": plan.reference}


def _saved_plan(run_dir: Path) -> dict[str, Any] | None:
    try:
        plan = orjson.loads((run_dir / COMPARE_FILE).read_bytes())["plan"]
        return {"presets": list(plan["presets"]), "seeds": list(plan["seeds"])}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _options(plan: dict[str, Any]) -> str:
    seeds = plan["seeds"]
    return f"--presets {','.join(plan['presets'])} --seeds {len(seeds)}"


def _started(path: Path) -> bool:
    journal = path / "journal.jsonl"
    return journal.exists() and journal.stat().st_size > 0


# --- the printed comparison -------------------------------------------------------------------


def print_comparison(comparison: Comparison, file: IO[str]) -> None:
    """The presets' table, the pairs' table and a sentence per pair, at full width."""
    console = Console(file=file, width=10_000, markup=False, highlight=False)
    with console.capture() as captured:
        console.print(_presets_table(comparison))
        console.print()
        console.print(_pairs_table(comparison))
    lines = [line.rstrip() for line in captured.get().splitlines()]
    notes = [
        wrapped for note in comparison_notes(comparison) for wrapped in textwrap.wrap(note, 96)
    ]
    file.write("".join(line + "\n" for line in [*lines, "", *notes]))


def _table(headers: Sequence[str]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _presets_table(comparison: Comparison) -> Table:
    table = _table(
        (
            "preset",
            "jobs",
            "test\nmean",
            "best dev\nmean",
            "dev-test\ngap",
            "cost",
            "calls",
            "tokens",
        )
    )
    for row in comparison.presets:
        table.add_row(
            Text(row.preset),
            f"{row.tested}/{row.jobs}",
            _pct(row.mean_test),
            _pct(row.mean_best_dev),
            _signed(row.dev_test_gap),
            usd(row.cost_usd),
            f"{row.calls:,}",
            f"{row.tokens:,}",
        )
    return table


def _pairs_table(comparison: Comparison) -> Table:
    reference = comparison.plan.reference
    table = _table(
        (f"vs {reference}", "pairs", "test diff\n(mean)", "SE", "wins/ties/\nlosses", "sign p", "")
    )
    for pair in comparison.pairs:
        s = pair.stats
        table.add_row(
            Text(pair.preset),
            str(s.n),
            _signed(s.mean_diff),
            "—" if s.se is None else f"{s.se:.1f}",
            f"{s.wins}/{s.ties}/{s.losses}",
            "—" if s.p_value is None else f"{s.p_value:.3g}",
            s.verdict,
        )
    return table


def comparison_notes(comparison: Comparison) -> list[str]:
    """A sentence per pair, then how to read the numbers."""
    notes = [pair_sentence(pair) for pair in comparison.pairs]
    if any(0 < p.stats.wins + p.stats.losses < MIN_SIGN_PAIRS for p in comparison.pairs):
        notes.append(
            f"With fewer than {MIN_SIGN_PAIRS} pairs that differ, the sign test cannot reach "
            f"p < {ALPHA}: run more seeds or jobs."
        )
    notes.append(
        "Test is the best-dev prompt's test accuracy (%); gap = best dev - test (overfitting). "
        "Cost, calls and tokens are what each preset's jobs paid: a call several presets make "
        "alike (the initial prompt's scoring, all that the baseline does) is paid once, by the "
        "job that asked first."
    )
    return notes


def pair_sentence(pair: PairRow) -> str:
    s, who = pair.stats, f"{pair.preset} vs {pair.against}"
    if s.verdict == "too few pairs" or s.mean_diff is None or s.se is None:
        return f"{who}: {s.n} pair(s) with a test score on both sides: too few to say anything."
    p = "no pair differs" if s.p_value is None else f"sign test p = {s.p_value:.3g}"
    numbers = f"{s.mean_diff:+.1f} points (SE {s.se:.1f}, {p}, {s.n} pairs)"
    if s.verdict == "within noise":
        return f"{who}: {numbers}: within noise."
    return f"{who}: {pair.preset} is {s.verdict}: {numbers}."


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"
