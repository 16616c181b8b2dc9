"""The live progress display: the view as a state machine over synthetic events, the rich frame
at 60, 80 and 120 columns, the ETA's smoothing, the three output modes of show_progress on
in-memory streams, and the final summary table."""

from __future__ import annotations

import dataclasses
import io
import itertools
from collections.abc import AsyncIterator, Callable, Iterable

import anyio
import orjson
import pytest
from rich.console import Console
from rich.text import Text

from pipeline.cli._display import Mode, choose_mode, show_progress
from pipeline.cli._live import LiveFrame
from pipeline.cli._summary import print_summary
from pipeline.cli._view import ProgressView, SmoothedEta
from pipeline.runner._jobs import (
    BudgetUpdate,
    JobFinished,
    JobResult,
    JobStarted,
    JobStatus,
    ProgressEvent,
    RunResult,
    RunTotals,
    StepFinished,
)

ESC = "\x1b"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
DEMO = ["arithmetic", "word_sorting", "boolean_expressions", "object_counting", "counting_system"]


def step(
    job: str, k: int, total: int = 6, *, best: float = 50.0, words: int = 40, initial: float = 40.0
) -> StepFinished:
    return StepFinished(
        job=job,
        step=k,
        total_steps=total,
        word_budget=words,
        selected_score=best,
        best_dev_score=best,
        initial_dev_score=initial,
    )


def finished(job: str, status: JobStatus = "finished", best: float | None = 80.0) -> JobFinished:
    error = None if status == "finished" else "BudgetExhausted: the job's cap"
    return JobFinished(job=job, status=status, best_dev_score=best, error=error)


def view_of(
    events: Iterable[ProgressEvent], total_jobs: int, cap: float | None = None
) -> ProgressView:
    view = ProgressView(total_jobs=total_jobs, cap_usd=cap)
    for event in events:
        view.apply(event)
    return view


def no_cost(job: str) -> float:
    return 0.0


def frame(
    view: ProgressView,
    totals: RunTotals | None = None,
    *,
    width: int = 100,
    height: int = 40,
    cost: Callable[[str], float] = no_cost,
) -> list[str]:
    """The live display's lines as a terminal of ``width`` x ``height`` shows them."""
    console = Console(
        file=io.StringIO(), width=width, height=height, force_terminal=True, record=True
    )
    console.print(LiveFrame.of(view, totals or RunTotals(), cost))
    return console.export_text().splitlines()


def header_of(lines: list[str]) -> str:
    """The table header's last line."""
    return next(line for line in lines if line.startswith("job "))


def text(lines: list[str]) -> str:
    return "\n".join(lines)


def row_of(lines: list[str], job: str) -> str:
    return next(line for line in lines if line.startswith(job))


def demo_view() -> ProgressView:
    """Five jobs at different steps, one finished, one out of budget; two more waiting."""
    view = view_of([JobStarted(job=n, total_steps=9) for n in DEMO], 7, cap=1.0)
    for i, name in enumerate(DEMO):
        for k in range(1, i + 2):
            view.apply(step(name, k, 9, best=50.0 + 3 * k, words=40 - 3 * k, initial=41.7 + i))
    view.apply(finished("arithmetic", best=95.8))
    view.apply(finished("word_sorting", "budget_exhausted", best=None))
    return view


DEMO_TOTALS = RunTotals(
    calls=4321,
    cache_hits=48,
    retries=26,
    rate_limited=11,
    input_tokens=292_291,
    output_tokens=83_759,
    cost_usd=0.1234,
    wall_s=12.0,
)


def demo_cost(job: str) -> float:
    return 0.01 * (DEMO.index(job) + 1)


# --- the view and its frame ------------------------------------------------------------------


def test_a_row_shows_step_initial_and_best_dev_word_budget_and_cost() -> None:
    view = view_of([JobStarted(job="sorting", total_steps=18), step("sorting", 3, 18)], 1)
    row = row_of(frame(view, cost=lambda job: 0.0123), "sorting")
    assert "3/18" in row
    assert "40.0 →  50.0" in row
    assert " 40 " in row
    assert "$0.0123" in row
    assert "██░░░░░░░░░░" in row


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_frame_fits_the_width_with_the_essential_columns(width: int) -> None:
    lines = frame(demo_view(), DEMO_TOTALS, width=width, cost=demo_cost)
    assert all(len(line) <= width for line in lines), max(len(line) for line in lines)
    assert "initial → best" in header_of(lines)
    for name in DEMO:
        row = row_of(lines, name)
        assert "→" in row
        assert f"${demo_cost(name):.4f}" in row
    assert "1/9" in row_of(lines, "arithmetic")
    assert "done" in row_of(lines, "arithmetic")
    assert "budget" in row_of(lines, "word_sorting")
    assert "41.7 →  95.8" in row_of(lines, "arithmetic")
    assert "spent $0.1234 of $1.00 (12%)" in text(lines)
    assert "cache hits 48" in text(lines)


def test_the_word_budget_column_is_left_out_of_narrow_terminals() -> None:
    narrow, wide = frame(demo_view(), width=60), frame(demo_view(), width=80)
    assert "words" not in header_of(narrow)
    assert "words" in header_of(wide)


def test_rows_keep_the_order_the_jobs_started_in_between_refreshes() -> None:
    view = view_of([JobStarted(job=n, total_steps=6) for n in ("a1", "b2", "c3")], 3)
    before = frame(view)
    for event in (step("c3", 1), step("a1", 1), step("c3", 2), finished("b2")):
        view.apply(event)
    after = frame(view)
    for job in ("a1", "b2", "c3"):
        assert before.index(row_of(before, job)) == after.index(row_of(after, job))
    first = after.index(header_of(after)) + 1
    assert [line.split()[0] for line in after[first : first + 3]] == ["a1", "b2", "c3"]


def test_ended_jobs_keep_their_row_and_are_counted_by_status() -> None:
    events: list[ProgressEvent] = [JobStarted(job=n, total_steps=6) for n in "abcd"]
    events += [finished("a"), finished("b", "failed"), finished("c", "budget_exhausted")]
    lines = frame(view_of(events, 5))
    assert "jobs 3/5 done (1 finished, 1 failed, 1 budget-exhausted)" in lines[0]
    assert "1 active" in lines[0]
    assert "1 waiting" in lines[0]
    assert [row_of(lines, j).split()[2] for j in "abc"] == ["done", "failed", "budget"]


def test_costs_read_unknown_when_an_endpoint_has_no_price() -> None:
    view = view_of([JobStarted(job="a", total_steps=6), step("a", 1)], 1, cap=1.0)
    lines = frame(view, RunTotals(cost_usd=0.5, cost_known=False), cost=lambda job: 0.5)
    assert row_of(lines, "a").endswith("unknown")
    assert "spent unknown (an endpoint has no price)" in text(lines)


def test_budget_updates_and_unknown_jobs_do_not_break_the_view() -> None:
    view = view_of([BudgetUpdate(spent_usd=1, reserved_usd=0, remaining_usd=None)], 1)
    view.apply(step("ghost", 1))
    view.apply(finished("never-started", "failed", best=None))
    assert view.finished
    assert "1 failed" in frame(view)[0]


def test_finished_once_every_job_has_ended() -> None:
    view = view_of([JobStarted(job="a", total_steps=1), step("a", 1, 1)], 2)
    before = view.finished
    view.apply(finished("a"))
    view.apply(finished("b", "failed", best=None))
    assert (before, view.finished) == (False, True)
    assert frame(view, RunTotals(wall_s=5))[-1].endswith("done")


def test_rows_beyond_the_terminal_height_leave_the_active_ones_and_a_count() -> None:
    view = view_of([JobStarted(job=f"job{i:02d}", total_steps=6) for i in range(30)], 30)
    for i in range(3):
        view.apply(finished(f"job{i:02d}"))
    lines = frame(view, height=12)
    rows = [line for line in lines if line.startswith("job") and "/6" in line]
    assert len(rows) <= 12 - 5
    assert rows[0].startswith("job03")
    assert f"… and {30 - len(rows)} more" in lines
    assert len(lines) <= 12


def test_long_names_end_in_an_ellipsis_and_status_parts_wrap_whole() -> None:
    name = "a_very_long_job_name_" * 5
    view = view_of([JobStarted(job=name, total_steps=6), step(name, 2)], 1)
    totals = RunTotals(calls=123_456, retries=42, cache_hits=9_999, cost_usd=12.5)
    lines = frame(view, totals, width=60)
    assert all(len(line) <= 60 for line in lines)
    assert any(line.startswith("a_very_long_job") and "…" in line for line in lines)
    assert "cache hits 9,999" in text(lines)


def test_calls_per_second_is_over_the_recent_window_not_since_start() -> None:
    view = ProgressView(total_jobs=1)
    view.observe(RunTotals(calls=0, wall_s=0))
    view.observe(RunTotals(calls=1_000, wall_s=10))  # a burst at the start
    for t in range(11, 101):
        lines = frame(view, RunTotals(calls=1_000 + 10 * (t - 10), wall_s=t))
    assert "(10.0/s)" in text(lines)  # since start it would be 19.0/s


def test_tokens_per_minute_and_money_against_the_cap() -> None:
    view = ProgressView(total_jobs=1, cap_usd=1.0)
    totals = RunTotals(input_tokens=50_000, output_tokens=10_000, cost_usd=0.25, wall_s=60)
    status = text(frame(view, RunTotals()) + frame(view, totals))
    assert "tokens 60.0k/min" in status
    assert "spent $0.2500 of $1.00 (25%)" in status


def test_summary_line_is_one_plain_line() -> None:
    view = view_of([JobStarted(job="a", total_steps=6)], 2)
    line = view.summary_line(RunTotals(calls=10, wall_s=65, rate_limited=2, retries=3))
    assert line.startswith("[1:05] jobs 0/2 done")
    assert "retries 3 (429s 2)" in line
    assert "elapsed" not in line
    assert "\n" not in line
    assert ESC not in line


# --- the ETA ---------------------------------------------------------------------------------


def test_eta_appears_once_some_steps_are_done() -> None:
    view = view_of([JobStarted(job=n, total_steps=10) for n in "ab"], 2)
    assert "ETA —" in text(frame(view, RunTotals(wall_s=1)))
    for k in (1, 2):
        view.apply(step("a", k, 10))
        view.apply(step("b", k, 10))
    # 4 of 20 steps in 20 s: 16 left at 0.2 steps/s
    assert "ETA 1:20" in text(frame(view, RunTotals(wall_s=20)))
    assert "steps 4/20" in text(frame(view, RunTotals(wall_s=20)))


def test_eta_counts_waiting_jobs_as_the_mean_started_job() -> None:
    view = view_of([JobStarted(job="a", total_steps=10), step("a", 1, 10), step("a", 2, 10)], 3)
    assert "steps 2/30" in text(frame(view, RunTotals(wall_s=10)))


def steady(eta: SmoothedEta, *, until: int, total: int = 400) -> list[float]:
    """One step a second, looked at every second: the ETAs."""
    return [eta.update(t, t, total - t) or 0.0 for t in range(1, until + 1)]


def test_eta_counts_down_steadily_at_a_steady_rate() -> None:
    etas = steady(SmoothedEta(), until=120)
    assert all(b <= a for a, b in itertools.pairwise(etas))
    assert etas[-1] == pytest.approx(400 - 120)


def test_a_burst_of_steps_does_not_make_the_eta_jump() -> None:
    eta = SmoothedEta()
    before = steady(eta, until=120)[-1]
    after = eta.update(121, 121 + 60, 400 - 121 - 60)  # 61 steps in one second
    assert after is not None
    assert before - 1 - 0.1 * before <= after <= before
    later = [eta.update(t, t + 60, 400 - t - 60) or 0.0 for t in range(122, 150)]
    assert all(abs(b - a) <= 1 + 0.1 * a for a, b in itertools.pairwise([after, *later]))


def test_a_burst_of_step_events_moves_the_shown_eta_by_a_bounded_amount() -> None:
    names = [f"j{i}" for i in range(10)]
    view = view_of([JobStarted(job=n, total_steps=30) for n in names], 10)
    etas: list[float | None] = []
    for t in range(1, 121):  # a step a second, one job after the other, a look a second
        view.apply(step(names[t % 10], t // 10 + 1, 30))
        etas.append(view.observe(RunTotals(wall_s=t))[2])
    for name in names:  # a burst: every job finishes a step in the same second
        view.apply(step(name, 14, 30))
    burst = view.observe(RunTotals(wall_s=121))[2]
    before = etas[-1]
    assert before is not None
    assert burst is not None
    assert abs(burst - (before - 1)) <= 0.1 * before


def test_the_eta_is_never_negative_and_zero_when_nothing_is_left() -> None:
    eta = SmoothedEta()
    steady(eta, until=30, total=40)
    values = [eta.update(t, 40, 0) for t in range(31, 40)]
    assert values == [0.0] * 9
    stalled = SmoothedEta()
    steady(stalled, until=10, total=20)
    assert all((stalled.update(t, 10, 10) or 0.0) >= 0 for t in range(11, 200))


# --- show_progress ---------------------------------------------------------------------------


class TickClock:
    """A clock whose sleep returns only when the test ticks it: one redraw per tick, and
    :meth:`tick` returns once that redraw is done (the redraw loop is asleep again)."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[None](100)
        self._ticks = self._sleeps = 0
        self._slept = anyio.Event()

    def now(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self._sleeps += 1
        self._slept.set()
        await self._receive.receive()

    async def tick(self) -> None:
        self._ticks += 1
        await self._send.send(None)
        while self._sleeps <= self._ticks:
            self._slept = anyio.Event()
            await self._slept.wait()

    def close(self) -> None:
        self._send.close()
        self._receive.close()


async def scripted(clock: TickClock) -> AsyncIterator[ProgressEvent]:
    """Two jobs: one finishes, one fails; the display redraws twice along the way."""
    yield JobStarted(job="a", total_steps=2)
    yield JobStarted(job="b", total_steps=2)
    await clock.tick()
    yield step("a", 1, 2)
    yield step("a", 2, 2, best=80.0)
    yield finished("a")
    await clock.tick()
    yield finished("b", "budget_exhausted", best=None)


async def run_display(mode: Mode, stream: io.StringIO) -> None:
    clock = TickClock()
    try:
        await show_progress(
            scripted(clock),
            lambda: RunTotals(calls=7, wall_s=1.0),
            total_jobs=2,
            mode=mode,
            stream=stream,
            width=80,
            clock=clock,
        )
    finally:
        clock.close()


async def test_plain_mode_writes_periodic_lines_and_a_line_per_ended_job() -> None:
    stream = io.StringIO()
    await run_display("plain", stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # tick, job a, tick, job b, final
    assert lines[0].startswith("[0:01] jobs 0/2 done")
    assert lines[1] == "job a finished: best dev 80.0, 2/2 steps"
    assert lines[3].startswith("job b budget_exhausted: best dev —, 0/2 steps (BudgetExhausted")
    assert "jobs 2/2 done" in lines[4]
    assert ESC not in stream.getvalue()


async def test_tty_mode_redraws_in_place_and_restores_the_cursor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    await run_display("tty", stream)
    out = stream.getvalue()
    assert out.startswith(HIDE_CURSOR)
    assert out.endswith(SHOW_CURSOR)
    assert f"{ESC}[1A{ESC}[2K" in out  # up over the previous frame, clearing it
    assert "jobs 2/2 done (1 finished, 0 failed, 1 budget-exhausted)" in out.rsplit("[1A", 1)[1]
    assert all(len(line) <= 80 for line in _plain(out).splitlines())
    assert capsys.readouterr().out == ""  # nothing on stdout


def _plain(terminal: str) -> str:
    """The text of a terminal's output without its escape sequences."""
    return Text.from_ansi(terminal).plain


async def test_tty_mode_restores_the_cursor_when_cancelled() -> None:
    async def endless() -> AsyncIterator[ProgressEvent]:
        yield JobStarted(job="a", total_steps=2)
        await anyio.sleep_forever()

    stream = io.StringIO()
    with anyio.move_on_after(0.05):
        await show_progress(
            endless(), RunTotals, total_jobs=1, mode="tty", stream=stream, interval_s=0.01
        )
    assert stream.getvalue().startswith(HIDE_CURSOR)
    assert stream.getvalue().endswith(SHOW_CURSOR)
    assert stream.getvalue().count(HIDE_CURSOR) == 1


async def test_json_mode_writes_progress_and_job_records() -> None:
    stream = io.StringIO()
    await run_display("json", stream)
    records = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == [
        "progress",
        "job_finished",
        "progress",
        "job_finished",
        "progress",
    ]
    first, done = records[0], records[1]
    assert first["calls"] == 7
    assert first["jobs"] == {
        "finished": 0,
        "failed": 0,
        "budget_exhausted": 0,
        "active": 2,
        "waiting": 0,
        "total": 2,
    }
    assert [a["job"] for a in first["active"]] == ["b", "a"]
    assert done["job"] == "a"
    assert done["status"] == "finished"
    assert done["best_dev"] == 80.0
    assert records[-1]["steps_done"] == 2


async def test_json_records_keep_their_fields() -> None:
    stream = io.StringIO()
    await run_display("json", stream)
    progress, done = (orjson.loads(line) for line in stream.getvalue().splitlines()[:2])
    assert list(progress) == [
        "event",
        *("calls", "retries", "rate_limited", "cache_hits", "input_tokens", "output_tokens"),
        *("spent_usd", "cap_usd", "elapsed_s", "cost_known", "steps_done", "steps_total"),
        *("calls_per_s", "tokens_per_min", "eta_s", "jobs", "active"),
    ]
    fields = ["job", "total_steps", "step", "best_dev", "word_budget", "status", "error"]
    assert list(done) == ["event", *fields]
    assert list(progress["active"][0]) == fields


async def test_off_mode_reads_every_event_and_writes_nothing() -> None:
    read: list[ProgressEvent] = []

    async def events() -> AsyncIterator[ProgressEvent]:
        for event in (JobStarted(job="a", total_steps=1), step("a", 1, 1), finished("a")):
            read.append(event)
            yield event

    stream = io.StringIO()
    await show_progress(events(), RunTotals, total_jobs=1, mode="off", stream=stream)
    assert len(read) == 3
    assert stream.getvalue() == ""


async def test_real_timer_redraws_while_events_are_slow() -> None:
    async def slow() -> AsyncIterator[ProgressEvent]:
        yield JobStarted(job="a", total_steps=1)
        await anyio.sleep(0.06)

    stream = io.StringIO()
    await show_progress(
        slow(), RunTotals, total_jobs=1, mode="plain", stream=stream, interval_s=0.01
    )
    assert len(stream.getvalue().splitlines()) >= 3


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_choose_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert choose_mode(FakeTerminal(True), json=False) == "tty"
    assert choose_mode(FakeTerminal(False), json=False) == "plain"
    assert choose_mode(FakeTerminal(True), json=True) == "json"
    monkeypatch.setenv("TERM", "dumb")
    assert choose_mode(FakeTerminal(True), json=False) == "plain"


# --- the summary table -----------------------------------------------------------------------


def result(
    name: str, status: JobStatus, scores: tuple[float | None, ...], cost: float
) -> JobResult:
    d0, d1, t0, t1 = scores
    return JobResult(
        name=name,
        status=status,
        error=None if status == "finished" else "ConfigError: bad data",
        initial_prompt="p",
        best_prompt="p",
        initial_dev_score=d0,
        best_dev_score=d1,
        initial_test_score=t0,
        best_test_score=t1,
        steps=0 if d0 is None else 18,
        trajectory=(),
        step_records=(),
        cost_usd=cost,
    )


def summary_run(*, cost_known: bool = True) -> RunResult:
    jobs = (
        result("arithmetic", "finished", (43.8, 87.5, 50.0, 81.2), 0.0176),
        result("a_much_longer_task_name", "finished", (50.0, 100.0, 25.0, 59.4), 1.5),
        result("broken", "failed", (None, None, None, None), 0.0),
    )
    counts = {"calls": 9897, "cache_hits": 448, "retries": 3, "input_tokens": 10}
    totals = RunTotals(**counts, output_tokens=5, cost_usd=1.52, wall_s=49.2, cost_known=cost_known)
    return RunResult(jobs=jobs, totals=totals)


def summary_lines(run: RunResult, width: int | None) -> list[str]:
    out = io.StringIO()
    print_summary(run, out, width=width)
    return out.getvalue().splitlines()


def test_summary_table_has_a_row_per_job_the_means_the_totals_and_the_errors() -> None:
    lines = summary_lines(summary_run(), 120)
    assert "dev score" in lines[0]
    assert "initial → best" in lines[1]
    assert len({line.index("→") for line in lines[3:6] + lines[7:8]}) == 1  # arrows line up
    assert "43.8 →  87.5" in row_of(lines, "arithmetic")
    assert "$0.0176" in row_of(lines, "arithmetic")
    assert "$1.50" in row_of(lines, "a_much_longer_task_name")
    assert "— →     —" in row_of(lines, "broken")
    total = row_of(lines, "all 3 jobs (mean)")
    assert "46.9 →  93.8" in total
    assert " 36 " in total
    assert "$1.52" in total
    assert "3 jobs: 2 finished, 1 failed" in lines
    assert "9,897 calls, 448 cache hits, 3 retries, 10 tokens in, 5 out, 0:49 wall" in lines
    assert lines[-1] == "broken: ConfigError: bad data"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_summary_table_fits_the_terminal(width: int) -> None:
    lines = summary_lines(summary_run(), width)
    assert all(len(line) <= width for line in lines)
    for name in ("arithmetic", "broken", "all 3 jobs"):
        assert any(line.startswith(name) for line in lines), name
    assert "$0.0176" in row_of(lines, "arithmetic")
    assert "43.8 → 87.5" in row_of(lines, "arithmetic").replace("→  ", "→ ")


def test_summary_in_a_file_is_never_cut_and_has_no_trailing_spaces() -> None:
    lines = summary_lines(summary_run(), None)
    assert any(line.startswith("a_much_longer_task_name ") for line in lines)
    assert "steps" in lines[1]
    assert all(line == line.rstrip() for line in lines)
    assert ESC not in text(lines)


def test_summary_counts_unread_outputs_and_dropped_optimizer_replies() -> None:
    run = summary_run()
    counts = [(300, 10, {"parse_failures": 3}), (100, 2, {"rejected_unchanged": 2}), (0, 0, {})]
    jobs = tuple(
        dataclasses.replace(j, outputs_judged=n, unextractable=k, optimizer_replies=r)
        for j, (n, k, r) in zip(run.jobs, counts, strict=True)
    )
    lines = summary_lines(dataclasses.replace(run, jobs=jobs), 200)
    expected = (
        "no answer read in 12 of 400 outputs (3.0%), 3 optimizer replies without tags, "
        "2 returning the current prompt"
    )
    assert expected in lines


def test_summary_costs_read_unknown_when_an_endpoint_has_no_price() -> None:
    lines = summary_lines(summary_run(cost_known=False), 120)
    assert row_of(lines, "arithmetic").endswith("unknown")
    assert row_of(lines, "all 3 jobs").endswith("unknown")


def test_job_names_are_shown_as_they_are_never_as_markup() -> None:
    name = "[/oops] [red]x"
    view = view_of([JobStarted(job=name, total_steps=3)], 1)
    assert row_of(frame(view), name)
    run = RunResult(jobs=(result(name, "finished", (1.0, 2.0, 1.0, 2.0), 0.0),), totals=RunTotals())
    assert row_of(summary_lines(run, 120), name)
