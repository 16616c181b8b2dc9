"""``gpo run CONFIG --workers N``: the process that started a distributed run.

The coordinator holds the run directory (its lock, journal, ledger and, when endpoints are
simulated, the simulator the workers call). It queues the jobs not yet ended in Redis (with the
journal lines of those begun earlier, so they resume), publishes the run and starts N local
workers (``python -m pipeline.cli worker``; more can join from other machines with
``gpo worker``). While they work it copies the run's journal from Redis into the local journal
as it grows and shows progress. Once every job has ended it closes the run, waits for its
workers, and writes the workers' spend (read from the run's accounts in Redis, reservations
still open counted in full) into the run's ledger. Then ``gpo run`` goes on as for a resumed run
whose jobs have all ended: ``results.json``, the report and the summary, with the usual exit
codes; nothing is sent.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectSendStream

from pipeline._log import get_logger
from pipeline.cli._display import choose_mode, show_progress
from pipeline.cli._run import Session, _totals_of_sample
from pipeline.config._load import RunConfig
from pipeline.coord._conn import redacted
from pipeline.coord._open import Coordination, open_coordination
from pipeline.dist._queue import JobQueue
from pipeline.dist._worker import run_spec
from pipeline.errors import ConfigError
from pipeline.llm._budget import Reservation
from pipeline.llm._ledger import open_sqlite_ledger
from pipeline.rundir._journal import Journal, open_journal, parse_lines
from pipeline.runner._jobs import (
    JobFinished,
    JobStarted,
    ProgressEvent,
    RunTotals,
    StepFinished,
    build_context,
)

if TYPE_CHECKING:
    from pipeline.runner._state import JobHistory

log = get_logger("gpo.coordinator")
POLL_S = 0.25
"""How often the coordinator reads the journal's new lines from Redis."""
STOP_WAIT_S = 40.0
"""How long workers have to leave once the run is done (or interrupted) before they are killed."""
SILENCE_S = 60.0
"""With every local worker gone and jobs left, how long to wait for other workers' news."""


@dataclass
class Outcome:
    """How the distributed part ended: ``ended`` jobs (all of them unless stopped early)."""

    ended: set[str]
    interrupted: bool = False
    failure: str | None = None


@dataclass
class _Tail:
    """The run's journal as it arrives from Redis: copied into the local journal, turned into
    progress events, the workers' latest counters summed."""

    journal: Journal
    total_steps: Mapping[str, int]
    started_mono: float = field(default_factory=time.monotonic)
    offset: int = 0
    ended: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    best: dict[str, float] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_line_mono: float = field(default_factory=time.monotonic)

    def take(self, lines: list[bytes]) -> list[ProgressEvent]:
        self.offset += len(lines)
        if lines:
            self.last_line_mono = time.monotonic()
        events: list[ProgressEvent] = []
        for event in parse_lines(lines):
            if event.get("event") == "worker_stats":
                self.workers[str(event.get("worker"))] = event
                continue
            self.journal.append(event)
            events += self._progress(event)
        return events

    def _progress(self, event: dict[str, Any]) -> list[ProgressEvent]:
        job = event.get("job")
        if not isinstance(job, str):
            return []
        out: list[ProgressEvent] = []
        if job not in self.seen:
            self.seen.add(job)
            out.append(JobStarted(job=job, total_steps=self.total_steps.get(job, 0)))
        kind = event.get("event")
        if kind == "step":
            record = event["record"]
            score = float(record["selected_score"])
            best = self.best[job] = max(score, self.best.get(job, score))
            out.append(
                StepFinished(
                    job=job,
                    step=int(record["step"]),
                    total_steps=self.total_steps.get(job, 0),
                    word_budget=record.get("word_budget"),
                    selected_score=score,
                    best_dev_score=best,
                )
            )
        elif kind == "initial":
            self.best.setdefault(job, float(event["score"]))
        elif kind == "ended":
            self.ended.add(job)
            best_dev = self.best.get(job)
            out.append(
                JobFinished(
                    job=job,
                    status=event["status"],
                    best_dev_score=best_dev,
                    error=event.get("error"),
                )
            )
        return out

    def totals(self) -> RunTotals:
        summed = RunTotals(wall_s=time.monotonic() - self.started_mono)
        for sample in self.workers.values():
            summed = summed + _totals_of_sample(sample)
        spent = sum(float(s.get("spent_usd", 0.0)) for s in self.workers.values())
        return dataclasses.replace(summed, cost_usd=spent)

    def stats_event(self) -> dict[str, Any]:
        """The workers' counters summed, as a ``stats`` event of the local journal."""
        endpoints: dict[str, dict[str, float]] = {}
        for sample in self.workers.values():
            for name, row in sample.get("endpoints", {}).items():
                mine = endpoints.setdefault(name, {})
                for key, value in row.items():
                    mine[key] = mine.get(key, 0) + value
        spent = sum(float(s.get("spent_usd", 0.0)) for s in self.workers.values())
        return {
            "event": "stats",
            "spent_usd": spent,
            "endpoints": endpoints,
            "workers": len(self.workers),
        }


def pending_jobs(session: Session, history: Mapping[str, JobHistory]) -> list[str]:
    """The session's jobs that have not ended, in order."""
    return [
        j.name
        for j in session.jobs
        if history.get(j.name) is None or history[j.name].status is None
    ]


async def distribute(
    session: Session,
    config: RunConfig,
    history: Mapping[str, JobHistory],
    *,
    workers: int,
    reclaim_s: float = 30.0,
    simulator_url: str | None,
) -> Outcome:
    """Have the run's jobs not yet ended done by workers (see the module); how it ended."""
    if config.coordination == "local":
        raise ConfigError(
            "--workers needs coordination over Redis: set [run] coordination = "
            '"redis://HOST:PORT/DB" in the config, or GPO_REDIS_URL'
        )
    pending = pending_jobs(session, history)
    if not pending:
        return Outcome(ended=set())
    run = session.rundir.run_id
    async with open_coordination(
        config.coordination, run=run, budget_scope=config.budget_scope
    ) as coordination:
        queue = JobQueue(
            coordination.redis, url=config.coordination, run=run, consumer="coordinator"
        )
        offset = await queue.seed(_history_lines(session.rundir.journal, set(pending)))
        await queue.enqueue([(name, name in history) for name in pending])
        share = -(-len(pending) // max(1, workers))
        await queue.publish(run_spec(config, simulator_url, share))
        log.info("run_published", run=run, url=redacted(config.coordination), jobs=len(pending))
        try:
            outcome = await _follow(session, config, queue, pending, offset, workers, reclaim_s)
        finally:
            with anyio.CancelScope(shield=True):
                await queue.finish()
        await _import_spend(session, coordination)
    return outcome


def _history_lines(journal: Path, jobs: set[str]) -> list[bytes]:
    if not journal.exists():
        return []
    events = parse_lines(journal.read_bytes().splitlines())
    return [orjson.dumps(e) for e in events if e.get("job") in jobs]


async def _follow(
    session: Session,
    config: RunConfig,
    queue: JobQueue,
    pending: list[str],
    offset: int,
    workers: int,
    reclaim_s: float,
) -> Outcome:
    steps = {
        job.name: build_context(job, i, config.settings).total_steps
        for i, job in enumerate(session.jobs)
    }
    logs = session.rundir.path / "workers"
    logs.mkdir(exist_ok=True)
    async with open_journal(session.rundir.journal) as journal, AsyncExitStack() as stack:
        journal.append(
            {
                "event": "run_started",
                "run_id": queue.run,
                "resumed": session.rundir.resumed,
                "workers": workers,
            }
        )
        tail = _Tail(journal, steps, offset=offset)
        procs = []
        for i in range(workers):
            spawn = _worker(config.coordination, queue.run, logs, i, reclaim_s)
            procs.append(await stack.enter_async_context(spawn))
            journal.append({"event": "worker_started", "worker": spawn.name, "pid": procs[-1].pid})
        send, receive = anyio.create_memory_object_stream[ProgressEvent](10_000)
        outcome = Outcome(ended=tail.ended)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_show, session, tail, receive, len(pending))
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(_on_signal, signals, outcome, tg.cancel_scope)
                async with send:
                    await _pump(queue, tail, send, set(pending), procs, outcome)
            tg.cancel_scope.cancel()
        journal.append(tail.stats_event())
        await _stop(procs, signal.SIGTERM if outcome.interrupted else None)
    return outcome


async def _pump(
    queue: JobQueue,
    tail: _Tail,
    send: MemoryObjectSendStream[ProgressEvent],
    pending: set[str],
    procs: list[Process],
    outcome: Outcome,
) -> None:
    """Copy the journal until every pending job has ended (or the workers are all gone)."""
    sampled = time.monotonic()
    while not pending <= tail.ended:
        for event in tail.take(await queue.read(tail.offset)):
            send.send_nowait(event)
        if time.monotonic() - sampled >= 1.0 and tail.workers:
            tail.journal.append(tail.stats_event())
            sampled = time.monotonic()
        if _given_up(procs, tail):
            outcome.failure = _why_gone(procs)
            return
        await anyio.sleep(POLL_S)


def _given_up(procs: list[Process], tail: _Tail) -> bool:
    """Every local worker is gone with jobs left: they failed (none left cleanly), or nothing
    came from any other worker for ``SILENCE_S``. Without local workers, never."""
    if not procs or any(p.returncode is None for p in procs):
        return False
    failed = all(p.returncode != 0 for p in procs)
    return failed or time.monotonic() - tail.last_line_mono > SILENCE_S


def _why_gone(procs: list[Process]) -> str:
    codes = ", ".join(str(p.returncode) for p in procs)
    return f"every local worker stopped (exit codes {codes}) with jobs left"


async def _on_signal(
    signals: AsyncIterator[int], outcome: Outcome, scope: anyio.CancelScope
) -> None:
    async for signum in signals:
        log.warning("run_interrupted", signal=signal.Signals(signum).name)
        outcome.interrupted = True
        scope.cancel()
        return


async def _show(
    session: Session, tail: _Tail, events: anyio.abc.ObjectReceiveStream[ProgressEvent], total: int
) -> None:
    async def stream() -> AsyncIterator[ProgressEvent]:
        async with events:
            async for event in events:
                yield event

    await show_progress(
        stream(),
        tail.totals,
        total_jobs=total,
        mode=choose_mode(sys.stderr, json=session.json),
        cap_usd=session.config.budget.usd,
    )


class _worker:
    """A local worker process, its output in ``workers/worker-I.log``; on exit, killed if it
    has not stopped (see :func:`_stop`)."""

    def __init__(self, url: str, run: str, logs: Path, index: int, reclaim_s: float) -> None:
        self.name = f"w{index}-{os.getpid()}"
        self._args = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "worker",
            url,
            "--run",
            run,
            "--name",
            self.name,
            "--reclaim-s",
            str(reclaim_s),
        ]
        self._log_path = logs / f"worker-{index}.log"
        self._log: IO[bytes] | None = None
        self._proc: Process | None = None

    async def __aenter__(self) -> Process:
        self._log = self._log_path.open("ab")
        self._proc = await anyio.open_process(
            self._args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # a Ctrl-C reaches the coordinator, which stops them
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self._proc

    async def __aexit__(self, *_: object) -> None:
        assert self._proc is not None
        assert self._log is not None
        with anyio.CancelScope(shield=True):
            if self._proc.returncode is None:
                self._proc.kill()
            await self._proc.wait()
            await self._proc.aclose()
        self._log.close()


async def _stop(procs: list[Process], sig: signal.Signals | None) -> None:
    """Let the workers leave (the run is done: they see it), or send them ``sig``; those still
    there after ``STOP_WAIT_S`` are killed on the way out."""
    with anyio.CancelScope(shield=True):
        if sig is not None:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(sig)
        with anyio.move_on_after(STOP_WAIT_S):
            for proc in procs:
                await proc.wait()


async def _import_spend(session: Session, coordination: Coordination) -> None:
    """Write what the workers spent on each job (Redis's ``job:RUN:NAME`` accounts, open
    reservations in full) into the run's ledger, as the difference with what it already holds:
    importing twice adds nothing."""
    await coordination.accounts.reap()
    run = session.rundir.run_id
    async with open_sqlite_ledger(session.rundir.ledger) as ledger:
        for i, job in enumerate(session.jobs, start=1):
            totals = await coordination.accounts.spent(f"job:{run}:{job.name}")
            shared = (
                totals.spent_pusd + totals.reserved_pusd,
                totals.spent_tokens + totals.reserved_tokens,
            )
            local = ledger.spent.get(f"job:{job.name}", (0, 0))
            pusd, tokens = shared[0] - local[0], shared[1] - local[1]
            if pusd <= 0 and tokens <= 0:
                continue
            entry = Reservation(i, ("run", f"job:{job.name}"), max(pusd, 0), max(tokens, 0))
            await ledger.opened(entry)
            ledger.settled(entry, entry.pusd, entry.tokens)
        await ledger.flush()


def worker_logs(run_dir: Path) -> str:
    """Where the local workers' output is, with the last line each wrote."""
    lines = [f"their output is in {run_dir / 'workers'}:"]
    for log_file in sorted((run_dir / "workers").glob("worker-*.log")):
        text = log_file.read_text(errors="replace").strip().splitlines()
        lines.append(f"  {log_file.name}: {text[-1] if text else '(empty)'}")
    return "\n".join(lines)
