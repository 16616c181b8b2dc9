"""Live progress of a run: a rich display at a terminal, summary lines, or JSON lines.

:func:`show_progress` reads a run's progress events into a :class:`~pipeline.cli._view.ProgressView`
and shows it in one of three modes (:func:`choose_mode`): ``tty``, a live display redrawn in place
(``_live``); ``plain``, a summary line every 10 s and a line per ended job; ``json``, the same as
JSON lines. Everything goes to one stream (stderr): stdout is left to the summary table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Literal, TextIO

import anyio
import orjson
from rich.console import Console
from rich.live import Live

from pipeline.cli._live import LiveFrame
from pipeline.cli._view import ProgressView
from pipeline.clock import Clock, SystemClock
from pipeline.runner._jobs import JobFinished, ProgressEvent, RunTotals

Mode = Literal["tty", "plain", "json", "off"]


def choose_mode(stream: TextIO, *, json: bool) -> Mode:
    """``json`` when asked; ``tty`` for a capable terminal; ``plain`` otherwise."""
    try:
        tty = stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    return "json" if json else "tty" if tty else "plain"


def _no_cost(job: str) -> float:
    return 0.0


@dataclass(slots=True)
class _Output:
    """Writes one mode: a rich Live display (tty), or lines (plain, json)."""

    mode: Mode
    stream: TextIO
    view: ProgressView
    totals: Callable[[], RunTotals]
    job_cost: Callable[[str], float]
    width: int | None = None
    live: Live | None = None

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start(self) -> None:
        """At a terminal: hide the cursor and draw the first frame (nothing goes to stdout)."""
        if self.mode == "tty":
            console = Console(
                file=self.stream,
                force_terminal=True,
                width=self.width,
                markup=False,
                highlight=False,
            )
            self.live = Live(
                console=console,
                auto_refresh=False,  # redrawn by :meth:`tick`: no refresh thread
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
            self.tick()

    def tick(self) -> None:
        if self.live is not None:
            frame = LiveFrame.of(self.view, self.totals(), self.job_cost)
            self.live.update(frame, refresh=True)
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
        """Leave the last frame on screen and show the cursor again."""
        if self.live is not None:
            self.live.stop()

    async def redraw(self, clock: Clock, interval: float) -> None:
        while True:
            await clock.sleep(interval)
            self.tick()


async def show_progress(
    events: AsyncIterable[ProgressEvent],
    totals: Callable[[], RunTotals],
    *,
    total_jobs: int,
    mode: Mode,
    cap_usd: float | None = None,
    job_cost: Callable[[str], float] = _no_cost,
    stream: TextIO | None = None,
    width: int | None = None,
    interval_s: float | None = None,
    clock: Clock | None = None,
) -> None:
    """Show a run's progress until its events end, then draw the final state once. Events are
    read as they come (the run never waits for the display); the view is redrawn every
    ``interval_s`` (0.5 s at a terminal, else 10 s) by ``clock.sleep``. ``totals`` is the run's
    totals now, ``cap_usd`` its dollar cap, ``job_cost`` what a job has spent so far; ``width``
    fixes the terminal's width (default: its own). At a terminal the cursor is hidden while
    drawing and restored on the way out, cancellation included."""
    view = ProgressView(total_jobs=total_jobs, cap_usd=cap_usd)
    out = _Output(mode, stream or sys.stderr, view, totals, job_cost, width)
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
