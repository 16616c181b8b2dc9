"""The summary printed at the end of a run, drawn with rich.

A table with a row per job (status, dev and test scores initial → best, steps, cost) and a footer
of the means, then the jobs by status, the run's totals, how many outputs had no answer the metric
could read and how many optimizer replies gave no candidate, and the jobs' errors. In a terminal too
narrow for it, the table drops the steps column and uses short headers and status labels;
written to a file or a pipe, it is printed at its full width, never cut.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from rich import box
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from pipeline.cli._format import change, duration, pack, score, usd
from pipeline.runner._jobs import JobResult, RunResult, RunTotals

_SHORT = {"finished": "done", "budget_exhausted": "budget", "interrupted": "stopped"}
_SCORES = ("dev score\ninitial → best", "test score\ninitial → best")
_WIDE = ("job", "status", *_SCORES, "steps", "cost")
_NARROW = ("job", "status", "dev\ninit → best", "test\ninit → best", "cost")


def print_summary(results: RunResult, file: IO[str], *, width: int | None = None) -> None:
    """Print :func:`summary` to ``file``: fitted to a terminal (or ``width``), else at its full
    width; no line ends in spaces."""
    console = Console(file=file, width=width, markup=False, highlight=False)
    unbounded = console.options.update_width(10_000)
    if width is None and not console.is_terminal:  # a file or a pipe: nothing wrapped or cut
        console.width = console.measure(summary(results), options=unbounded).maximum
    narrow = console.measure(jobs_table(results), options=unbounded).maximum > console.width
    with console.capture() as captured:
        console.print(summary(results, narrow=narrow))
    file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def summary(results: RunResult, *, narrow: bool = False) -> Group:
    """The jobs' table, the jobs by status, the run's totals, the jobs' errors."""
    jobs = results.jobs
    counts = Counter(j.status.replace("_", " ") for j in jobs).most_common()
    statuses = f"{len(jobs)} jobs: " + ", ".join(f"{n} {status}" for status, n in counts)
    errors = [Text(f"{j.name}: {j.error}") for j in jobs if j.error]
    table = jobs_table(results, narrow=narrow)
    reading = _reading_parts(jobs)
    extra = [_Packed(reading)] if reading else []
    return Group(table, Text(statuses), _Packed(_totals_parts(results.totals)), *extra, *errors)


def jobs_table(results: RunResult, *, narrow: bool = False) -> Table:
    """A row per job and a footer of the means (costs "unknown" unless the cost is known)."""
    jobs, totals = results.jobs, results.totals
    known = totals.cost_known
    name = f"all {len(jobs)} jobs (mean)"
    footer = _cells(name, "", jobs, totals.cost_usd if known else None, narrow)
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.show_footer = True
    for i, (header, cell) in enumerate(zip(_NARROW if narrow else _WIDE, footer, strict=True)):
        text = i < 2  # job and status fold; the numbers are never cut
        justify: JustifyMethod = "left" if text else "right"
        table.add_column(
            header, footer=Text(cell), justify=justify, no_wrap=not text, overflow="fold"
        )
    for j in jobs:
        status = _SHORT.get(j.status, j.status) if narrow else j.status.replace("_", " ")
        cells = _cells(j.name, status, [j], j.cost_usd if known else None, narrow)
        table.add_row(*(Text(c) for c in cells))  # as they are: a name is never markup
    return table


def _cells(
    name: str, status: str, jobs: Sequence[JobResult], cost: float | None, narrow: bool
) -> tuple[str, ...]:
    """A row's cells; the scores are the means over ``jobs`` (for one job, its own)."""
    d0, d1, t0, t1 = (
        _mean(getattr(j, f"{key}_score") for j in jobs)
        for key in ("initial_dev", "best_dev", "initial_test", "best_test")
    )
    if narrow:
        return (name, status, f"{score(d0)} → {score(d1)}", f"{score(t0)} → {score(t1)}", usd(cost))
    steps = str(sum(j.steps for j in jobs))
    return (name, status, change(d0, d1), change(t0, t1), steps, usd(cost))


def _totals_parts(t: RunTotals) -> list[str]:
    batched = f" ({t.batch_requests:,} in {t.batches:,} batches)" if t.batches else ""
    return [
        f"{t.calls:,} calls{batched}",
        f"{t.cache_hits:,} cache hits",
        f"{t.retries:,} retries",
        f"{t.input_tokens:,} tokens in",
        f"{t.output_tokens:,} out",
        f"{duration(t.wall_s)} wall",
    ]


_DROPPED = (
    ("parse_failures", "optimizer replies without tags"),
    ("rejected_unchanged", "returning the current prompt"),
    ("rejected_exemplar_copy", "copying the meta-prompt"),
)


def _reading_parts(jobs: Sequence[JobResult]) -> list[str]:
    """Outputs the metric could read no answer from, and optimizer replies that gave no
    candidate, summed over the jobs (nothing when no output was judged)."""
    judged = sum(j.outputs_judged for j in jobs)
    if not judged:
        return []
    missing = sum(j.unextractable for j in jobs)
    parts = [f"no answer read in {missing:,} of {judged:,} outputs ({missing / judged:.1%})"]
    dropped = Counter[str]()
    for j in jobs:
        dropped.update(j.optimizer_replies)
    return parts + [f"{dropped[key]:,} {label}" for key, label in _DROPPED if dropped[key]]


@dataclass(frozen=True, slots=True)
class _Packed:
    """Parts joined by commas into lines that fit the width, each part whole."""

    parts: list[str]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from (Text(line) for line in pack(self.parts, options.max_width, ", "))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        whole = len(", ".join(self.parts))
        return Measurement(max(len(p) for p in self.parts), whole).clamp(
            max_width=options.max_width
        )


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
