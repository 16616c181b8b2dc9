"""The terminal's live display, drawn with rich.

A :class:`LiveFrame` is one refresh: a snapshot of the view's rows and status lines, laid out when
drawn for the terminal's width and height. Rows keep the order the jobs started in; the word
budget column is left out below 72 columns, long job names end in an ellipsis, and when the rows
do not fit the terminal's height only active jobs are shown, with a count of the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

from pipeline.cli._format import DASH, change, pack, usd
from pipeline.cli._view import JobRow, ProgressView
from pipeline.runner._jobs import RunTotals

WORDS_MIN_WIDTH, WIDE_BAR_MIN_WIDTH = 72, 100
_HEADER_LINES = 2
_LABELS = {"finished": "done", "budget_exhausted": "budget", "interrupted": "stopped"}
_STYLES = {"done": "green", "failed": "red", "budget": "yellow", "stopped": "yellow"}


@dataclass(frozen=True, slots=True)
class _Cells:
    """One job's row, as text: ``done`` is the fraction of steps done, None once it ended."""

    job: str
    step: str
    done: float | None
    label: str
    dev: str
    words: str
    cost: str


def _cells(row: JobRow, cost: str) -> _Cells:
    active = row.status == "active"
    fraction = row.step / row.total_steps if row.total_steps else 0.0
    return _Cells(
        job=row.job,
        step=f"{row.step}/{row.total_steps}",
        done=fraction if active else None,
        label="" if active else _LABELS.get(row.status, row.status),
        dev=change(row.initial_dev, row.best_dev),
        words=DASH if row.word_budget is None else str(row.word_budget),
        cost=cost,
    )


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """What the terminal shows at one refresh: job counts, a row per job, the run's status."""

    head: tuple[str, ...]
    rows: tuple[_Cells, ...]
    traffic: tuple[str, ...]
    progress: tuple[str, ...]

    @classmethod
    def of(cls, view: ProgressView, totals: RunTotals, cost: Callable[[str], float]) -> LiveFrame:
        """Take one look at the run (``cost``: what a job has spent so far)."""
        rates = view.observe(totals)
        known = totals.cost_known
        rows = tuple(_cells(r, usd(cost(r.job)) if known else "unknown") for r in view.rows)
        traffic, progress = view.traffic_parts(totals, rates), view.progress_parts(totals, rates)
        return cls(tuple(view.job_parts()), rows, tuple(traffic), tuple(progress))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.height or options.size.height
        head = pack([*self.head], width)
        status = [*pack([*self.traffic], width), *pack([*self.progress], width)]
        yield from (Text(line, style="bold") for line in head)
        room = height - len(head) - len(status) - 1  # the cursor's line below
        rows, hidden = _visible(self.rows, room)
        if rows:
            yield _table(rows, width)
        if hidden:
            yield Text(f"… and {hidden} more", style="dim")
        yield from (Text(line) for line in status)


def _visible(rows: tuple[_Cells, ...], limit: int) -> tuple[tuple[_Cells, ...], int]:
    """The rows that fit in ``limit`` lines (the header and a "more" line included), and how
    many are left out: all when they fit, else the active ones."""
    if len(rows) + _HEADER_LINES <= limit:
        return rows, 0
    active = tuple(r for r in rows if r.done is not None)[: max(0, limit - _HEADER_LINES - 1)]
    return active, len(rows) - len(active)


def _table(rows: Sequence[_Cells], width: int) -> Table:
    bar, words = 12 if width >= WIDE_BAR_MIN_WIDTH else 7, width >= WORDS_MIN_WIDTH
    columns: list[tuple[str, int, JustifyMethod]] = [
        ("step", _width("step", (r.step for r in rows)), "right"),
        ("", bar, "left"),
        ("dev score\ninitial → best", 14, "right"),
    ]
    if words:
        columns.append(("words", 5, "right"))
    columns.append(("cost", _width("cost", (r.cost for r in rows)), "right"))
    room = width - sum(w for _, w, _ in columns) - 2 * len(columns)
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    name_w = max(3, min(room, max(len(r.job) for r in rows)))
    table.add_column("job", width=name_w, no_wrap=True, overflow="ellipsis")
    for header, w, justify in columns:
        table.add_column(header, width=w, justify=justify, no_wrap=True, overflow="ellipsis")
    for r in rows:
        texts = [r.job, r.step, r.dev, *([r.words] if words else []), r.cost]
        cells = [Text(t) for t in texts]  # as they are: a job's name is never markup
        cells.insert(2, _progress(r, bar))
        table.add_row(*cells, style=_style(r))
    return table


def _width(header: str, cells: Iterable[str]) -> int:
    return max(len(header), *(len(c) for c in cells))


def _progress(row: _Cells, bar: int) -> Text:
    """A bar of the steps done, or how the job ended."""
    if row.done is None:
        return Text(row.label, style=_STYLES.get(row.label, ""))
    filled = round(bar * row.done)
    return Text.assemble(("█" * filled, "cyan"), ("░" * (bar - filled), "dim"))


def _style(row: _Cells) -> str:
    return "" if row.done is not None else "dim"
