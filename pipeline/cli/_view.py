"""What a run looks like now: a state machine over its progress events, which does no I/O.

:class:`ProgressView` keeps one :class:`JobRow` per job, in the order the jobs started (a row
never moves), and writes the plain lines and JSON records; the live display (``_live``) draws
its rows. Rates and the ETA come from the :class:`RunTotals` snapshots it is shown (their
``wall_s`` is the time), so the view needs no clock.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.cli._format import DASH, duration, fit, score, si, usd
from pipeline.runner._jobs import JobFinished, JobStarted, ProgressEvent, RunTotals, StepFinished

CALLS_WINDOW_S = 10.0
Rates = tuple[float | None, float | None, float | None]
"""Calls per second and tokens per minute over the last 10 s, and the ETA in seconds."""


@dataclass(slots=True)
class JobRow:
    """One job: where it is, its dev scores, and how it ended (``status`` "active" until then)."""

    job: str
    total_steps: int
    step: int = 0
    best_dev: float | None = None
    word_budget: int | None = None
    status: str = "active"
    error: str | None = None
    initial_dev: float | None = None

    def record(self) -> dict[str, Any]:
        """The row in JSON records (their fields predate ``initial_dev``)."""
        data = asdict(self)
        del data["initial_dev"]
        return data


@dataclass(slots=True)
class SmoothedEta:
    """Seconds left, from the rate of finished steps: their mean rate for the first
    ``rate_tau_s``, then exponentially smoothed with that time constant. Between two looks the
    ETA counts down; toward each new estimate it moves with time constant ``eta_tau_s``, so a
    burst of finished steps moves it a little, never at once, and it is never negative."""

    rate_tau_s: float = 60.0
    eta_tau_s: float = 10.0
    rate: float | None = None
    eta: float | None = None
    _at: float = 0.0
    _done: int = 0

    def update(self, elapsed_s: float, done: int, left: int) -> float | None:
        """The ETA at ``elapsed_s`` with ``done`` steps finished so far and ``left`` to go."""
        dt = elapsed_s - self._at
        if dt > 0:
            self.rate = self._next_rate(dt, done, elapsed_s)
            self.eta = self._next_eta(dt, left)
            self._at, self._done = elapsed_s, done
        return self.eta

    def _next_rate(self, dt: float, done: int, elapsed_s: float) -> float:
        if self.rate is None or elapsed_s <= self.rate_tau_s:  # early on: the mean rate so far
            return done / elapsed_s
        weight = 1 - math.exp(-dt / self.rate_tau_s)
        return self.rate + weight * ((done - self._done) / dt - self.rate)

    def _next_eta(self, dt: float, left: int) -> float | None:
        if left == 0:
            return 0.0
        raw = left / self.rate if self.rate else None
        if self.eta is None:  # the first estimate
            return raw
        counted = max(0.0, self.eta - dt)
        if raw is None:  # no step finished in this session yet: keep counting down
            return counted
        return max(0.0, counted + (1 - math.exp(-dt / self.eta_tau_s)) * (raw - counted))


_Sample = tuple[float, int, int]  # elapsed_s, calls, tokens


class ProgressView:
    """A run's jobs and rates, from its progress events and totals; renders text, no I/O."""

    def __init__(self, *, total_jobs: int, cap_usd: float | None = None) -> None:
        self.total_jobs = total_jobs
        self.cap_usd = cap_usd
        self._rows: dict[str, JobRow] = {}  # every job seen, in the order it started
        self._active: dict[str, JobRow] = {}  # least recently stepped first
        self._ended: dict[str, JobRow] = {}
        self._plans: list[int] = []  # total steps of each job started
        self._steps_done = 0  # the jobs' steps, earlier sessions' included
        self._stepped = 0  # steps finished in this session
        self._samples: deque[_Sample] = deque([(0.0, 0, 0)], maxlen=512)
        self._eta = SmoothedEta()

    @property
    def finished(self) -> bool:
        return len(self._ended) >= self.total_jobs

    @property
    def rows(self) -> tuple[JobRow, ...]:
        """Every job seen, in the order the jobs started."""
        return tuple(self._rows.values())

    def apply(self, event: ProgressEvent) -> None:
        if isinstance(event, JobStarted) and event.job not in self._active:
            row = JobRow(event.job, event.total_steps)
            self._rows[event.job] = self._active[event.job] = row
            self._plans.append(row.total_steps)
        elif isinstance(event, StepFinished) and event.job in self._active:
            self._step(event)
        elif isinstance(event, JobFinished):
            self._end(event)

    def _step(self, event: StepFinished) -> None:
        row = self._active[event.job] = self._active.pop(event.job)  # now most recent
        self._steps_done += max(0, event.step - row.step)
        self._stepped += event.step > row.step
        row.step, row.total_steps = event.step, event.total_steps
        row.best_dev, row.word_budget = event.best_dev_score, event.word_budget
        row.initial_dev = event.initial_dev_score

    def _end(self, event: JobFinished) -> None:
        row = self._active.pop(event.job, None) or self._rows.get(event.job) or JobRow(event.job, 0)
        self._rows.setdefault(event.job, row)
        self._ended[event.job] = row
        row.status, row.error = event.status, event.error
        row.best_dev = row.best_dev if event.best_dev_score is None else event.best_dev_score
        if event.initial_dev_score is not None:
            row.initial_dev = event.initial_dev_score

    def observe(self, totals: RunTotals) -> Rates:
        """Take one look at the run's totals (once per refresh): the rates and ETA now."""
        while self._samples and self._samples[-1][0] >= totals.wall_s:
            self._samples.pop()
        used = totals.input_tokens + totals.output_tokens
        self._samples.append((totals.wall_s, totals.calls, used))
        calls, tokens = self._rate(1), self._rate(2)
        return calls, None if tokens is None else tokens * 60, self._eta_at(totals.wall_s)

    def _rate(self, index: int) -> float | None:
        """Per second, from the newest sample at least 10 s old (else the first) to now."""
        latest = self._samples[-1]
        horizon = latest[0] - CALLS_WINDOW_S
        base = next((s for s in reversed(self._samples) if s[0] <= horizon), self._samples[0])
        dt = latest[0] - base[0]
        return (latest[index] - base[index]) / dt if dt > 0 else None

    def _eta_at(self, elapsed_s: float) -> float | None:
        """None until about one step per active job is done (and the steps to go are known)."""
        done, total = self._steps()
        started = self._eta.rate is not None
        if total is None or not (started or self._stepped >= max(2, len(self._active))):
            return None
        return self._eta.update(elapsed_s, self._stepped, max(0, total - done))

    def _steps(self) -> tuple[int, int | None]:
        """Steps done and the estimated total (a waiting job counts as the mean started job)."""
        left = sum(max(0, r.total_steps - r.step) for r in self._active.values())
        waiting = self.counts()["waiting"]
        if waiting and not self._plans:
            return self._steps_done, None
        mean = sum(self._plans) / len(self._plans) if self._plans else 0.0
        return self._steps_done, self._steps_done + left + round(waiting * mean)

    def counts(self) -> dict[str, int]:
        """Jobs by status: finished, failed, budget_exhausted (and any other), active, waiting."""
        ended = Counter(r.status for r in self._ended.values())
        waiting = max(0, self.total_jobs - len(self._active) - len(self._ended))
        counts = {"finished": 0, "failed": 0, "budget_exhausted": 0, **ended}
        return {**counts, "active": len(self._active), "waiting": waiting}

    def job_parts(self) -> list[str]:
        c = self.counts()
        active, waiting = c.pop("active"), c.pop("waiting")
        shown = [f"{n} {s.replace('_', '-')}" for s, n in c.items() if n or s != "budget_exhausted"]
        done = f"jobs {len(self._ended)}/{self.total_jobs} done ({', '.join(shown)})"
        return [done, f"{active} active", f"{waiting} waiting"]

    def traffic_parts(self, totals: RunTotals, rates: Rates) -> list[str]:
        """Calls (and per second), tokens per minute, retries (and 429s), cache hits."""
        return _traffic(totals, rates)

    def progress_parts(self, totals: RunTotals, rates: Rates) -> list[str]:
        """Elapsed, money spent (against the cap), steps done of the total, ETA (or done)."""
        done, total = self._steps()
        steps = f"steps {done}/{DASH if total is None else total}"
        eta = DASH if rates[2] is None else duration(rates[2])
        end = "done" if self.finished else f"ETA {eta}"
        return [f"elapsed {duration(totals.wall_s)}", self._money(totals), steps, end]

    def _money(self, totals: RunTotals) -> str:
        if not totals.cost_known:
            return "spent unknown (an endpoint has no price)"
        spent, cap = usd(totals.cost_usd), self.cap_usd
        share = "" if cap is None else f"of {usd(cap)} ({100 * totals.cost_usd / (cap or 1):.0f}%)"
        return f"spent {spent} {share or '(no cap)'}"

    def summary_line(self, totals: RunTotals) -> str:
        """One plain line for logs without a terminal."""
        rates = self.observe(totals)
        progress = self.progress_parts(totals, rates)[1:]  # not elapsed: the line starts with it
        parts = [*self.job_parts(), *_traffic(totals, rates), *progress]
        return f"[{duration(totals.wall_s)}] " + " · ".join(parts)

    def job_line(self, job: str) -> str:
        """One plain line for a job that ended."""
        r = self._ended.get(job) or JobRow(job, 0, status="unknown")
        line = f"job {job} {r.status}: best dev {score(r.best_dev)}, {r.step}/{r.total_steps}"
        return f"{line} steps ({fit(r.error, 160)})" if r.error else f"{line} steps"

    def progress_record(self, totals: RunTotals) -> dict[str, Any]:
        """The periodic JSON record: the totals, rates, steps, counts and the active jobs."""
        (calls_per_s, tokens_per_min, eta_s), (done, total) = self.observe(totals), self._steps()
        record = {"event": "progress", **self._totals_record(totals)}
        record.update(steps_done=done, steps_total=total)
        record.update(calls_per_s=calls_per_s, tokens_per_min=tokens_per_min, eta_s=eta_s)
        jobs = {**self.counts(), "total": self.total_jobs}
        active = [r.record() for r in reversed(self._active.values())]  # most recent first
        return {**record, "jobs": jobs, "active": active}

    def _totals_record(self, t: RunTotals) -> dict[str, Any]:
        return {
            "calls": t.calls,
            "retries": t.retries,
            "rate_limited": t.rate_limited,
            "cache_hits": t.cache_hits,
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "spent_usd": t.cost_usd,
            "cap_usd": self.cap_usd,
            "elapsed_s": t.wall_s,
            "cost_known": t.cost_known,
        }

    def job_record(self, job: str) -> dict[str, Any]:
        return {"event": "job_finished", **(self._ended.get(job) or JobRow(job, 0)).record()}


def _traffic(totals: RunTotals, rates: Rates) -> list[str]:
    calls = DASH if rates[0] is None else f"{rates[0]:.1f}"
    tokens = DASH if rates[1] is None else si(rates[1])
    retries = f"retries {totals.retries:,} (429s {totals.rate_limited:,})"
    cache = f"cache hits {totals.cache_hits:,}"
    return [f"calls {totals.calls:,} ({calls}/s)", f"tokens {tokens}/min", retries, cache]
