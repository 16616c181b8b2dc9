"""Live progress of a run: a block redrawn in place at a terminal, summary lines, or JSON lines.

:class:`ProgressView` is a pure state machine (events in, text out); :func:`show_progress` does the
I/O. Rates and the ETA come from the :class:`Totals` snapshots, so the view needs no clock.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter, deque
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO

import anyio
import orjson

from pipeline.clock import Clock, SystemClock
from pipeline.llm._gateway import Gateway
from pipeline.runner._jobs import (
    JobFinished,
    JobResult,
    JobStarted,
    ProgressEvent,
    RunResult,
    StepFinished,
)

Mode = Literal["tty", "plain", "json", "off"]
DASH = "—"
HIDE_CURSOR, SHOW_CURSOR, CLEAR_LINE, CLEAR_BELOW = "\x1b[?25l", "\x1b[?25h", "\x1b[2K", "\x1b[J"
CALLS_WINDOW_S, STEPS_WINDOW_S, _BAR = 10.0, 60.0, 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """Run-wide counters at one moment; ``calls`` are HTTP requests (cache hits excluded)."""

    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    spent_usd: float = 0.0
    cap_usd: float | None = None
    elapsed_s: float = 0.0
    cost_known: bool = True
    """False when an endpoint with an unknown price was called: spend is then shown as unknown."""


def totals_from(gateway: Gateway, *, started: float, now: float) -> Totals:
    """A snapshot of every endpoint's statistics and the run's budget."""
    stats = gateway.statistics().values()
    return Totals(
        calls=sum(s.requests for s in stats),
        retries=sum(s.retries_total for s in stats),
        rate_limited=sum(s.rate_limited for s in stats),
        cache_hits=sum(s.cache_hits for s in stats),
        input_tokens=sum(s.input_tokens for s in stats),
        output_tokens=sum(s.output_tokens for s in stats),
        spent_usd=gateway.budget.state().spent_usd,
        cap_usd=gateway.budget.run_caps.usd,
        elapsed_s=max(0.0, now - started),
        cost_known=gateway.cost_known,
    )


@dataclass(slots=True)
class _Row:
    job: str
    total_steps: int
    step: int = 0
    best_dev: float | None = None
    word_budget: int | None = None
    status: str = "active"
    error: str | None = None


_Sample = tuple[float, int, int, int]  # elapsed_s, calls, tokens, steps done
_Rates = tuple[float | None, float | None, float | None]  # calls/s, tokens/min, ETA s


class ProgressView:
    """What the run looks like now, from its progress events; renders text, does no I/O."""

    def __init__(self, *, total_jobs: int) -> None:
        self.total_jobs = total_jobs
        self._active: dict[str, _Row] = {}  # insertion order: least recently active first
        self._ended: dict[str, _Row] = {}
        self._plans: list[int] = []  # total steps of each job started
        self._steps_done = 0
        self._samples: deque[_Sample] = deque([(0.0, 0, 0, 0)], maxlen=512)

    @property
    def finished(self) -> bool:
        return len(self._ended) >= self.total_jobs

    def apply(self, event: ProgressEvent) -> None:
        if isinstance(event, JobStarted) and event.job not in self._active:
            self._active[event.job] = _Row(event.job, event.total_steps)
            self._plans.append(event.total_steps)
        elif isinstance(event, StepFinished) and event.job in self._active:
            row = self._active[event.job] = self._active.pop(event.job)  # now most recent
            self._steps_done += max(0, event.step - row.step)
            row.step, row.total_steps = event.step, event.total_steps
            row.best_dev, row.word_budget = event.best_dev_score, event.word_budget
        elif isinstance(event, JobFinished):
            row = self._ended[event.job] = self._active.pop(event.job, _Row(event.job, 0))
            row.status, row.error = event.status, event.error
            row.best_dev = row.best_dev if event.best_dev_score is None else event.best_dev_score

    def render(self, totals: Totals, *, width: int = 100, max_rows: int = 20) -> list[str]:
        """The lines of the live display, each at most ``width - 1`` characters."""
        rates = self._observe(totals)
        status = [*_traffic(totals, rates), *self._progress(totals, rates)]
        lines = [*_pack(self._jobs(), width - 1), *self._job_rows(width, max_rows)]
        return [_fit(line, width - 1) for line in [*lines, *_pack(status, width - 1)]]

    def summary_line(self, totals: Totals) -> str:
        """One plain line for logs without a terminal."""
        rates = self._observe(totals)
        parts = [*self._jobs(), *_traffic(totals, rates), *self._progress(totals, rates)[1:]]
        return f"[{_duration(totals.elapsed_s)}] " + " · ".join(parts)

    def job_line(self, job: str) -> str:
        """One plain line for a job that ended."""
        r = self._ended.get(job) or _Row(job, 0, status="unknown")
        line = f"job {job} {r.status}: best dev {_score(r.best_dev)}, {r.step}/{r.total_steps}"
        return f"{line} steps ({_fit(r.error, 160)})" if r.error else f"{line} steps"

    def progress_record(self, totals: Totals) -> dict[str, Any]:
        """The periodic JSON record: the totals, rates, steps, counts and the active jobs."""
        (calls_per_s, tokens_per_min, eta_s), (done, total) = self._observe(totals), self._steps()
        record = {"event": "progress", **asdict(totals), "steps_done": done, "steps_total": total}
        record.update(calls_per_s=calls_per_s, tokens_per_min=tokens_per_min, eta_s=eta_s)
        jobs = {**self._job_counts(), "total": self.total_jobs}
        return {
            **record,
            "jobs": jobs,
            "active": [asdict(r) for r in reversed(self._active.values())],
        }

    def job_record(self, job: str) -> dict[str, Any]:
        return {"event": "job_finished", **asdict(self._ended.get(job) or _Row(job, 0))}

    def _observe(self, totals: Totals) -> _Rates:
        """Add a sample of the cumulative counters, then rates over the recent window."""
        while self._samples and self._samples[-1][0] >= totals.elapsed_s:
            self._samples.pop()
        used = totals.input_tokens + totals.output_tokens
        self._samples.append((totals.elapsed_s, totals.calls, used, self._steps_done))
        calls, tokens = self._rate(1, CALLS_WINDOW_S), self._rate(2, CALLS_WINDOW_S)
        return calls, None if tokens is None else tokens * 60, self._eta(totals)

    def _rate(self, index: int, span_s: float) -> float | None:
        """Per second, from the newest sample at least ``span_s`` old (else the first) to now."""
        latest = self._samples[-1]
        horizon = latest[0] - span_s
        base = next((s for s in reversed(self._samples) if s[0] <= horizon), self._samples[0])
        dt = latest[0] - base[0]
        return (latest[index] - base[index]) / dt if dt > 0 else None

    def _eta(self, totals: Totals) -> float | None:
        done, total = self._steps()
        if done < max(2, len(self._active)) or total is None:  # about one step per active job
            return None
        rate = self._rate(3, STEPS_WINDOW_S) or done / max(totals.elapsed_s, 1e-9)
        return max(0, total - done) / rate

    def _steps(self) -> tuple[int, int | None]:
        """Steps done and the estimated total (a waiting job counts as the mean started job)."""
        left = sum(max(0, r.total_steps - r.step) for r in self._active.values())
        waiting = self._job_counts()["waiting"]
        if waiting and not self._plans:
            return self._steps_done, None
        mean = sum(self._plans) / len(self._plans) if self._plans else 0.0
        return self._steps_done, self._steps_done + left + round(waiting * mean)

    def _job_counts(self) -> dict[str, int]:
        ended = Counter(r.status for r in self._ended.values())
        waiting = max(0, self.total_jobs - len(self._active) - len(self._ended))
        counts = {"finished": 0, "failed": 0, "budget_exhausted": 0, **ended}
        return {**counts, "active": len(self._active), "waiting": waiting}

    def _jobs(self) -> list[str]:
        c = self._job_counts()
        active, waiting = c.pop("active"), c.pop("waiting")
        shown = [f"{n} {s.replace('_', '-')}" for s, n in c.items() if n or s != "budget_exhausted"]
        done = f"jobs {len(self._ended)}/{self.total_jobs} done ({', '.join(shown)})"
        return [done, f"{active} active", f"{waiting} waiting"]

    def _job_rows(self, width: int, max_rows: int) -> list[str]:
        rows = [*reversed(self._active.values())]
        shown = rows if len(rows) <= max_rows else rows[: max(0, max_rows - 1)]
        if not shown:
            return []
        bar = _BAR if width >= 60 else 0
        fixed = 2 + 9 + 10 + 7 + (bar + 2 if bar else 0)
        name_w = max(4, min(max(len(r.job) for r in shown), width - 1 - fixed))
        head = f"  {'job':<{name_w}}  {'step':>7}  {'best dev':>8}  {'words':>5}"
        more = [f"  ... and {len(rows) - len(shown)} more"] if len(shown) < len(rows) else []
        return [head, *(_row_line(r, name_w, bar) for r in shown), *more]

    def _progress(self, totals: Totals, rates: _Rates) -> list[str]:
        done, total = self._steps()
        steps = f"steps {done}/{DASH if total is None else total}"
        eta = DASH if rates[2] is None else _duration(rates[2])
        end = "done" if self.finished else f"ETA {eta}"
        return [f"elapsed {_duration(totals.elapsed_s)}", _money(totals), steps, end]


def _row_line(row: _Row, name_w: int, bar: int) -> str:
    words = DASH if row.word_budget is None else str(row.word_budget)
    line = (
        f"  {_fit(row.job, name_w):<{name_w}}  {row.step:>3}/{row.total_steps:<3}"
        f"  {_score(row.best_dev):>8}  {words:>5}"
    )
    filled = round(bar * row.step / row.total_steps) if row.total_steps else 0
    return f"{line}  {'█' * filled}{'░' * (bar - filled)}" if bar else line


def _traffic(totals: Totals, rates: _Rates) -> list[str]:
    calls = DASH if rates[0] is None else f"{rates[0]:.1f}"
    tokens = DASH if rates[1] is None else _si(rates[1])
    retries = f"retries {totals.retries:,} (429s {totals.rate_limited:,})"
    cache = f"cache hits {totals.cache_hits:,}"
    return [f"calls {totals.calls:,} ({calls}/s)", f"tokens {tokens}/min", retries, cache]


def _pack(parts: list[str], width: int, sep: str = " · ") -> list[str]:
    """Join ``parts`` with ``sep`` into as few lines of at most ``width`` as whole parts allow."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def _money(totals: Totals) -> str:
    if not totals.cost_known:
        return "spent unknown (an endpoint has no price)"
    spent, cap = _usd(totals.spent_usd), totals.cap_usd
    share = "" if cap is None else f"of {_usd(cap)} ({100 * totals.spent_usd / (cap or 1):.0f}%)"
    return f"spent {spent} {share or '(no cap)'}"


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _si(value: float) -> str:
    big = next(((v, s) for v, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if value >= v), None)
    return f"{value:.0f}" if big is None else f"{value / big[0]:.1f}{big[1]}"


def _score(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…" if width > 0 else ""


def choose_mode(stream: TextIO, *, json: bool) -> Mode:
    """``json`` when asked; ``tty`` for a capable terminal; ``plain`` otherwise."""
    try:
        tty = stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    return "json" if json else "tty" if tty else "plain"


@dataclass(slots=True)
class _Output:
    """Writes one mode: a frame redrawn in place (tty) or lines (plain, json)."""

    mode: Mode
    stream: TextIO
    view: ProgressView
    totals: Callable[[], Totals]
    height: int = 0  # lines of the last frame drawn

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start(self) -> None:
        if self.mode == "tty":
            self.tick()

    def tick(self) -> None:
        if self.mode == "tty":
            self._frame()
        elif self.mode == "plain":
            self.write(self.view.summary_line(self.totals()) + "\n")
        elif self.mode == "json":
            self.write(orjson.dumps(self.view.progress_record(self.totals())).decode() + "\n")

    def ended(self, job: str) -> None:
        if self.mode == "plain":
            self.write(self.view.job_line(job) + "\n")
        elif self.mode == "json":
            self.write(orjson.dumps(self.view.job_record(job)).decode() + "\n")

    def close(self) -> None:
        if self.mode == "tty":
            self.write(SHOW_CURSOR)

    async def redraw(self, clock: Clock, interval: float) -> None:
        while True:
            await clock.sleep(interval)
            self.tick()

    def _frame(self) -> None:
        """Cursor up over the last frame (first: hide the cursor), draw each line, clear below."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, ValueError, OSError):
            size = shutil.get_terminal_size()
        rows = max(1, min(20, size.lines - 8))  # room for the status lines and the cursor
        lines = self.view.render(self.totals(), width=size.columns, max_rows=rows)
        up = f"\x1b[{self.height}F" if self.height else HIDE_CURSOR
        self.write(up + "".join(f"{CLEAR_LINE}{line}\n" for line in lines) + CLEAR_BELOW)
        self.height = len(lines)


async def show_progress(
    events: AsyncIterable[ProgressEvent],
    totals: Callable[[], Totals],
    *,
    total_jobs: int,
    mode: Mode,
    stream: TextIO | None = None,
    interval_s: float | None = None,
    clock: Clock | None = None,
) -> None:
    """Show a run's progress until its events end, then draw the final state once. Events are
    read as they come (the run never waits for the display); the view is redrawn every
    ``interval_s`` (0.5 s at a terminal, else 10 s) by ``clock.sleep``. At a terminal the cursor
    is hidden while drawing and restored on the way out, cancellation included."""
    view = ProgressView(total_jobs=total_jobs)
    out = _Output(mode, stream or sys.stderr, view, totals)
    interval = interval_s if interval_s is not None else (0.5 if mode == "tty" else 10.0)
    try:
        out.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(out.redraw, clock or SystemClock(), interval)
            async for event in events:
                view.apply(event)
                if isinstance(event, JobFinished):
                    out.ended(event.job)
            tg.cancel_scope.cancel()
        out.tick()
    finally:
        out.close()


_HEADER = ("job", "status", "dev (initial → best)", "test (initial → best)", "steps", "cost")


def summary_table(results: RunResult, *, cost_known: bool = True) -> str:
    """One aligned row per job, a totals row (means of the scores), then the errors if any.
    Costs read "unknown" unless ``cost_known``."""
    jobs, t = results.jobs, results.totals
    rows = [_cells(j.name, j.status, [j], j.cost_usd if cost_known else None) for j in jobs]
    statuses = ", ".join(f"{n} {s}" for s, n in Counter(j.status for j in jobs).most_common())
    total_cost = t.cost_usd if cost_known else None
    total = _cells(f"all {len(jobs)} jobs (mean)", statuses, jobs, total_cost)
    widths = [max(len(r[i]) for r in (_HEADER, *rows, total)) for i in range(len(_HEADER))]
    rule = "  ".join("-" * w for w in widths)
    header, *body, last = [_table_line(r, widths) for r in (_HEADER, *rows, total)]
    lines = [header, rule, *body, rule, last]
    lines.append(
        f"{t.calls:,} calls, {t.cache_hits:,} cache hits, {t.retries:,} retries, "
        f"{t.input_tokens:,} tokens in, {t.output_tokens:,} out, {_duration(t.wall_s)} wall"
    )
    return "\n".join(lines + [f"{j.name}: {j.error}" for j in jobs if j.error])


def _cells(
    name: str, status: str, jobs: Sequence[JobResult], cost: float | None
) -> tuple[str, ...]:
    """A row's cells; the scores are the means over ``jobs`` (for one job, its own)."""
    d0, d1, t0, t1 = (
        _mean(getattr(j, f"{key}_score") for j in jobs)
        for key in ("initial_dev", "best_dev", "initial_test", "best_test")
    )
    steps = str(sum(j.steps for j in jobs))
    return (name, status, _change(d0, d1), _change(t0, t1), steps, _usd(cost))


def _change(before: float | None, after: float | None) -> str:
    return f"{_score(before):>5} → {_score(after):>5}"


def _table_line(cells: tuple[str, ...], widths: list[int]) -> str:
    left = [c.ljust(w) for c, w in zip(cells[:2], widths, strict=False)]
    right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
    return "  ".join(left + right).rstrip()


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
