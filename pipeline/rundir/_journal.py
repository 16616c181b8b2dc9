"""The run's append-only journal: one JSON line per event, flushed and fsynced in groups.

Events: ``run_started``; per job ``initial`` (the initial prompt's dev score), ``step`` (the step
record and the selected prompt), ``tested`` (test scores) and ``ended`` (status, error); ``stats``
about once a second (cumulative counters per endpoint and the spend, for the report); and
``run_ended``. A resumed run rebuilds every job from these lines (:func:`read_journal`); a torn
last line from a killed process is ignored.

Writes are appended in memory and committed by a background task in a worker thread (write,
flush, fsync), as one group per wake-up, so step boundaries reach the disk within milliseconds
without blocking the event loop or costing one fsync per step. A write that fails (a full disk)
is a storage fault: the journal records it in :attr:`Journal.fault`, calls its ``on_fault``
hook (the gateway then sends nothing new) and writes nothing more; the lines not written are
redone on resume. A line torn by a crash or a full disk is cut off when the file is reopened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import orjson

from pipeline.clock import Clock, SystemClock
from pipeline.errors import StorageError
from pipeline.runner._state import JobHistory
from stages.messages import (
    CandidateRecord,
    Evaluated,
    Outcome,
    StepOutcome,
    StepRecord,
    Tally,
)

_OPTS = orjson.OPT_APPEND_NEWLINE


class Journal:
    """Open with :func:`open_journal`. Also the optimizer's :class:`RunObserver`."""

    def __init__(
        self,
        file: IO[bytes] | None,
        *,
        path: Path | None = None,
        on_fault: Callable[[StorageError], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._file = file
        self._path = path or Path(getattr(file, "name", "journal"))
        self.on_fault = on_fault
        self.fault: StorageError | None = None
        self._pending: list[bytes] = []
        self._wake = anyio.Event()
        self._clock = clock or SystemClock()
        self._started = self._clock.now()
        self._limiter = anyio.CapacityLimiter(1)

    def append(self, event: dict[str, Any]) -> None:
        event.setdefault("t", round(self._clock.now() - self._started, 3))
        self._pending.append(orjson.dumps(event, option=_OPTS))
        self._wake.set()

    async def sync(self) -> None:
        """Write, flush and fsync everything appended so far. Shielded: lines taken for writing
        are written, even when the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            lines, self._pending = self._pending, []
            if not lines or self.fault is not None:
                return
            try:
                await self._commit(lines)
            except StorageError as fault:
                self.fault = fault
                if self.on_fault is not None:
                    self.on_fault(fault)

    async def _commit(self, lines: list[bytes]) -> None:
        """Make ``lines`` durable (a file here: written and fsynced in a worker thread)."""
        await anyio.to_thread.run_sync(self._write, lines, limiter=self._limiter)

    async def serve(self) -> None:
        """Commit appended lines as they come, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.sync()

    # --- the optimizer's observer hooks ---------------------------------------------------

    def job_started(self, job: str, initial: Evaluated, keep_outputs: bool) -> None:
        self.append({"event": "initial", "job": job, **_evaluated(initial, keep_outputs)})

    def job_stepped(self, job: str, outcome: StepOutcome, keep_outputs: bool) -> None:
        record = dataclasses.asdict(outcome.record)
        selected = _evaluated(outcome.selected, keep_outputs)
        self.append({"event": "step", "job": job, "record": record, "selected": selected})

    def job_tested(self, job: str, scores: dict[str, float], tally: Tally | None = None) -> None:
        counts = _tally(tally or Tally())
        self.append({"event": "tested", "job": job, "scores": scores, "tally": counts})

    def job_ended(self, job: str, status: str, error: str | None) -> None:
        self.append({"event": "ended", "job": job, "status": status, "error": error})

    def _write(self, lines: list[bytes]) -> None:
        assert self._file is not None, "a journal without a file commits elsewhere"
        data = memoryview(b"".join(lines))
        try:
            while data:
                data = data[self._file.write(data) or 0 :]
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise StorageError(self._path, f"writing the journal failed: {exc}") from None


@asynccontextmanager
async def open_journal(path: Path, *, clock: Clock | None = None) -> AsyncIterator[Journal]:
    """Append to ``path``; a background task commits lines; all is synced on exit, even on
    cancellation. ``clock`` stamps each line (``t``: seconds since the journal was opened)."""
    file = await anyio.to_thread.run_sync(_open_append, path)
    journal = Journal(file, path=path, clock=clock)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.serve)
            try:
                yield journal
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await journal.sync()
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(file.close)


def _open_append(path: Path) -> IO[bytes]:
    """The journal opened for appending (unbuffered: a failed write leaves nothing queued),
    a line torn by an earlier crash or full disk cut off first."""
    try:
        file = path.open("ab", buffering=0)
        size = file.seek(0, os.SEEK_END)
        if size:
            _cut_torn_tail(path, file, size)
    except OSError as exc:
        raise StorageError(path, f"cannot open the journal: {exc}") from None
    return file


def _cut_torn_tail(path: Path, file: IO[bytes], size: int) -> None:
    with path.open("rb") as reader:
        reader.seek(max(0, size - 65536))
        tail = reader.read()
    if tail.endswith(b"\n"):
        return
    end = tail.rfind(b"\n")
    keep = size - len(tail) + end + 1 if end >= 0 else (0 if size <= 65536 else None)
    if keep is None:  # a torn line longer than 64 KiB: read it all
        keep = path.read_bytes().rfind(b"\n") + 1
    file.truncate(keep)


def _evaluated(evaluated: Evaluated, keep_outputs: bool) -> dict[str, Any]:
    outcomes = [dataclasses.asdict(o) for o in evaluated.outcomes] if keep_outputs else []
    tally = _tally(evaluated.tally)
    return {
        "prompt": evaluated.prompt,
        "score": evaluated.score,
        "outcomes": outcomes,
        "tally": tally,
    }


def _tally(tally: Tally) -> dict[str, int]:
    return dataclasses.asdict(tally)


# --- reading it back ------------------------------------------------------------------------


def read_journal(path: Path) -> tuple[dict[str, JobHistory], list[dict[str, Any]]]:
    """Every job's history, and the other events (``stats``, ``run_started``, ...) in order."""
    return read_events(_lines(path))


def read_events(
    events: Iterable[dict[str, Any]],
) -> tuple[dict[str, JobHistory], list[dict[str, Any]]]:
    """:func:`read_journal` of events read from elsewhere (a distributed run's Redis list)."""
    jobs: dict[str, JobHistory] = {}
    other: list[dict[str, Any]] = []
    for event in events:
        job = event.get("job")
        if isinstance(job, str):
            _apply(jobs.setdefault(job, JobHistory()), event)
        else:
            other.append(event)
    return jobs, other


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if path.exists():
        yield from parse_lines(path.read_bytes().splitlines())


def parse_lines(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The events of journal lines; a torn line is skipped."""
    for raw in lines:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a line torn by a kill: the step it described is redone
        if isinstance(event, dict):
            yield event


def _apply(history: JobHistory, event: dict[str, Any]) -> None:
    kind = event.get("event")
    if kind == "initial":
        history.initial = _read_evaluated(event)
    elif kind == "step":
        record = _read_record(event["record"])
        if history.steps and record.step <= history.steps[-1][0].step:
            return  # written twice: by a worker whose job another one had taken over
        history.steps.append((record, _read_evaluated(event["selected"])))
    elif kind == "tested":
        history.test_scores = {str(k): float(v) for k, v in event["scores"].items()}
        history.test_tally = _read_tally(event)
    elif kind == "ended":
        history.status, history.error = event["status"], event.get("error")


def _read_evaluated(data: dict[str, Any]) -> Evaluated:
    outcomes = tuple(Outcome(**o) for o in data.get("outcomes", []))
    return Evaluated(
        prompt=data["prompt"],
        score=float(data["score"]),
        outcomes=outcomes,
        tally=_read_tally(data),
    )


def _read_tally(data: dict[str, Any]) -> Tally:
    """The event's tally; journals written before tallies existed have none (zero)."""
    return Tally(**data.get("tally", {}))


def _read_record(data: dict[str, Any]) -> StepRecord:
    fields = dict(data)
    fields["shown"] = tuple(fields["shown"])
    fields["candidates"] = tuple(CandidateRecord(**c) for c in fields["candidates"])
    return StepRecord(**fields)
