"""The live progress display: the view as a state machine over synthetic events, the three output
modes of show_progress on in-memory streams, and the final summary table."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterable

import anyio
import orjson
import pytest

from pipeline.cli._display import (
    CLEAR_LINE,
    HIDE_CURSOR,
    SHOW_CURSOR,
    Mode,
    ProgressView,
    Totals,
    choose_mode,
    show_progress,
    summary_table,
    totals_from,
)
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports._fake import FakeTransport
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


def step(job: str, k: int, total: int = 6, *, best: float = 50.0, words: int = 40) -> StepFinished:
    return StepFinished(
        job=job,
        step=k,
        total_steps=total,
        word_budget=words,
        selected_score=best,
        best_dev_score=best,
    )


def finished(job: str, status: JobStatus = "finished", best: float | None = 80.0) -> JobFinished:
    error = None if status == "finished" else "BudgetExhausted: the job's cap"
    return JobFinished(job=job, status=status, best_dev_score=best, error=error)


def view_of(events: Iterable[ProgressEvent], total_jobs: int) -> ProgressView:
    view = ProgressView(total_jobs=total_jobs)
    for event in events:
        view.apply(event)
    return view


def text(lines: list[str]) -> str:
    return "\n".join(lines)


# --- the view --------------------------------------------------------------------------------


def test_an_active_job_shows_its_step_best_score_and_word_budget() -> None:
    view = view_of([JobStarted(job="sorting", total_steps=18), step("sorting", 3, 18)], 1)
    row = next(line for line in view.render(Totals()) if "sorting" in line)
    assert "3/18" in row
    assert "50.0" in row
    assert " 40 " in row
    assert row.endswith("  ██░░░░░░░░░░")


def test_rows_are_most_recently_active_first() -> None:
    view = view_of(
        [JobStarted(job=n, total_steps=6) for n in ("a1", "b2", "c3")] + [step("a1", 1)], 3
    )
    rows = [
        line.split()[0] for line in view.render(Totals()) if line.startswith("  ") and "/" in line
    ]
    assert rows == ["a1", "c3", "b2"]


def test_ended_jobs_leave_the_rows_and_are_counted_by_status() -> None:
    events: list[ProgressEvent] = [JobStarted(job=n, total_steps=6) for n in "abcd"]
    events += [finished("a"), finished("b", "failed"), finished("c", "budget_exhausted")]
    view = view_of(events, 5)
    first = view.render(Totals())[0]
    assert "jobs 3/5 done (1 finished, 1 failed, 1 budget-exhausted)" in first
    assert "1 active" in first
    assert "1 waiting" in first
    assert not any(line.startswith("  a ") for line in view.render(Totals()))


def test_budget_updates_and_unknown_jobs_do_not_break_the_view() -> None:
    view = view_of([BudgetUpdate(spent_usd=1, reserved_usd=0, remaining_usd=None)], 1)
    view.apply(step("ghost", 1))
    view.apply(finished("never-started", "failed", best=None))
    assert view.finished
    assert "1 failed" in view.render(Totals())[0]


def test_finished_once_every_job_has_ended() -> None:
    view = view_of([JobStarted(job="a", total_steps=1), step("a", 1, 1)], 2)
    before = view.finished
    view.apply(finished("a"))
    view.apply(finished("b", "failed", best=None))
    assert (before, view.finished) == (False, True)
    assert "done" in view.render(Totals(elapsed_s=5))[-1]


def test_eta_appears_once_some_steps_are_done() -> None:
    view = view_of([JobStarted(job=n, total_steps=10) for n in "ab"], 2)
    assert "ETA —" in text(view.render(Totals(elapsed_s=1)))
    for k in (1, 2):
        view.apply(step("a", k, 10))
        view.apply(step("b", k, 10))
    # 4 of 20 steps in 20 s: 16 left at 0.2 steps/s
    assert "ETA 1:20" in text(view.render(Totals(elapsed_s=20)))
    assert "steps 4/20" in text(view.render(Totals(elapsed_s=20)))


def test_eta_counts_waiting_jobs_as_the_mean_started_job() -> None:
    view = view_of([JobStarted(job="a", total_steps=10), step("a", 1, 10), step("a", 2, 10)], 3)
    assert "steps 2/30" in text(view.render(Totals(elapsed_s=10)))


def test_job_rows_are_capped_with_a_count_of_the_rest() -> None:
    view = view_of([JobStarted(job=f"job{i:02d}", total_steps=6) for i in range(30)], 30)
    lines = view.render(Totals(), max_rows=5)
    rows = [line for line in lines if line.startswith("  job") and "/6" in line]
    assert len(rows) == 4
    assert "  ... and 26 more" in lines


def test_lines_fit_the_width_and_long_names_are_truncated() -> None:
    name = "a_very_long_job_name_" * 5
    view = view_of([JobStarted(job=name, total_steps=6), step(name, 2)], 1)
    totals = Totals(calls=123_456, retries=42, cache_hits=9_999, spent_usd=12.5, cap_usd=100.0)
    lines = view.render(totals, width=50)
    assert all(len(line) <= 49 for line in lines)
    assert any("a_very_long_job" in line and "…" in line for line in lines)
    assert "cache hits 9,999" in text(lines)  # status parts wrap, they are not cut off


def test_calls_per_second_is_over_the_recent_window_not_since_start() -> None:
    view = ProgressView(total_jobs=1)
    view.render(Totals(calls=0, elapsed_s=0))
    view.render(Totals(calls=1_000, elapsed_s=10))  # a burst at the start
    for t in range(11, 101):
        lines = view.render(Totals(calls=1_000 + 10 * (t - 10), elapsed_s=t))
    assert "(10.0/s)" in text(lines)  # since start it would be 19.0/s


def test_tokens_per_minute_and_money_against_the_cap() -> None:
    view = ProgressView(total_jobs=1)
    totals = Totals(input_tokens=50_000, output_tokens=10_000, spent_usd=0.25, cap_usd=1.0)
    status = text(view.render(Totals(elapsed_s=0)) + view.render(_at(totals, 60)))
    assert "tokens 60.0k/min" in status
    assert "spent $0.2500 of $1.00 (25%)" in status


def test_summary_line_is_one_plain_line() -> None:
    view = view_of([JobStarted(job="a", total_steps=6)], 2)
    line = view.summary_line(Totals(calls=10, elapsed_s=65, rate_limited=2, retries=3))
    assert line.startswith("[1:05] jobs 0/2 done")
    assert "retries 3 (429s 2)" in line
    assert "\n" not in line
    assert ESC not in line


def _at(totals: Totals, elapsed_s: float) -> Totals:
    fields = {k: getattr(totals, k) for k in Totals.__dataclass_fields__}
    return Totals(**{**fields, "elapsed_s": elapsed_s})


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
            lambda: Totals(calls=7, elapsed_s=1.0),
            total_jobs=2,
            mode=mode,
            stream=stream,
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


async def test_tty_mode_redraws_in_place_and_restores_the_cursor() -> None:
    stream = io.StringIO()
    await run_display("tty", stream)
    out = stream.getvalue()
    assert out.startswith(HIDE_CURSOR)
    assert out.endswith(SHOW_CURSOR)
    assert f"{ESC}[5F" in out  # up over the previous frame
    assert CLEAR_LINE in out
    last_frame = out.rsplit("F", 1)[1]
    assert "jobs 2/2 done (1 finished, 0 failed, 1 budget-exhausted)" in last_frame


async def test_tty_mode_restores_the_cursor_when_cancelled() -> None:
    async def endless() -> AsyncIterator[ProgressEvent]:
        yield JobStarted(job="a", total_steps=2)
        await anyio.sleep_forever()

    stream = io.StringIO()
    with anyio.move_on_after(0.05):
        await show_progress(
            endless(), Totals, total_jobs=1, mode="tty", stream=stream, interval_s=0.01
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


async def test_off_mode_reads_every_event_and_writes_nothing() -> None:
    read: list[ProgressEvent] = []

    async def events() -> AsyncIterator[ProgressEvent]:
        for event in (JobStarted(job="a", total_steps=1), step("a", 1, 1), finished("a")):
            read.append(event)
            yield event

    stream = io.StringIO()
    await show_progress(events(), Totals, total_jobs=1, mode="off", stream=stream)
    assert len(read) == 3
    assert stream.getvalue() == ""


async def test_real_timer_redraws_while_events_are_slow() -> None:
    async def slow() -> AsyncIterator[ProgressEvent]:
        yield JobStarted(job="a", total_steps=1)
        await anyio.sleep(0.06)

    stream = io.StringIO()
    await show_progress(slow(), Totals, total_jobs=1, mode="plain", stream=stream, interval_s=0.01)
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


async def test_totals_from_reads_the_gateway_and_the_budget() -> None:
    config = EndpointConfig(name="fake", model="m", price=Price(input_per_mtok=1e6))
    budget = Budget(run_caps=Caps(usd=50.0))
    async with open_gateway([config], transports={"fake": FakeTransport()}, budget=budget) as gw:
        await gw.chat("fake", ChatRequest.of("one two three", n=2))
        totals = totals_from(gw, started=10.0, now=13.5)
    assert totals.calls == 1
    assert totals.input_tokens == 4
    assert totals.output_tokens == 10  # two choices of five words (the fake counts words)
    assert totals.spent_usd == pytest.approx(4.0)
    assert totals.cap_usd == 50.0
    assert totals.elapsed_s == 3.5


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


def test_summary_table_has_aligned_rows_a_totals_row_and_the_errors() -> None:
    jobs = (
        result("arithmetic", "finished", (43.8, 87.5, 50.0, 81.2), 0.0176),
        result("a_much_longer_task_name", "finished", (50.0, 100.0, 25.0, 59.4), 1.5),
        result("broken", "failed", (None, None, None, None), 0.0),
    )
    counts = {
        "calls": 9897,
        "cache_hits": 448,
        "retries": 3,
        "input_tokens": 10,
        "output_tokens": 5,
    }
    totals = RunTotals(**counts, cost_usd=1.52, wall_s=49.2)
    table = summary_table(RunResult(jobs=jobs, totals=totals)).splitlines()
    assert table[0].startswith("job  ")
    assert "dev (initial → best)  test (initial → best)  steps" in table[0]
    body = table[:7]
    assert len({len(line) for line in body}) == 1  # right-aligned last column: equal widths
    assert len({line.index("→") for line in body[2:] if "→" in line}) == 1
    assert "43.8 →  87.5" in table[2]
    assert "$0.0176" in table[2]
    assert "$1.50" in table[3]
    assert "    — →     —" in table[4]
    assert table[6].startswith("all 3 jobs (mean)")
    assert "2 finished, 1 failed" in table[6]
    assert "46.9 →  93.8" in table[6]
    assert "36" in table[6]
    assert "$1.52" in table[6]
    assert table[7] == "9,897 calls, 448 cache hits, 3 retries, 10 tokens in, 5 out, 0:49 wall"
    assert table[8] == "broken: ConfigError: bad data"
