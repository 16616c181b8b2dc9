"""``gpo run``: a configured run in a run directory, crash-safe and resumable.

The composition root of a run: configuration -> run directory -> simulator (if any) -> cache and
budget (preloaded with what earlier sessions spent) -> gateway (preflight: every endpoint answers
and accepts its key before anything is spent) -> journal -> optimizer, with live progress, a
stats sampler and a signal watcher beside it -> results.json and report.html.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import structlog

from pipeline._log import get_logger
from pipeline.cli import _logs as logs
from pipeline.cli._compare import (
    COMPARE_FILE,
    Comparing,
    check_plan,
    expand_config,
    previous_job_requests,
    print_comparison,
    refuse_comparison,
    write_plan,
)
from pipeline.cli._display import choose_mode, show_progress
from pipeline.cli._exit import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
)
from pipeline.cli._summary import print_summary
from pipeline.config._load import (
    RunConfig,
    build_jobs,
    load_config,
    unpriced_endpoints,
    with_simulator_url,
)
from pipeline.coord._conn import redacted
from pipeline.coord._links import TieredCache
from pipeline.errors import ConfigError, LLMError, StorageError
from pipeline.llm._budget import Budget
from pipeline.llm._cache import SqliteCache, open_sqlite_cache
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._ledger import open_sqlite_ledger
from pipeline.llm.batch import open_batch_log
from pipeline.report._page import write_report
from pipeline.rundir._journal import Journal, open_journal, read_journal
from pipeline.rundir._layout import RunDir, RunLock, prepare
from pipeline.runner._compare import ComparePlan, comparison_document, expand_jobs
from pipeline.runner._jobs import Job, JobResult, RunResult, RunTotals
from pipeline.runner._results import RunMeta, results_document, run_totals, write_json
from pipeline.runner._run import OptimizerRun
from pipeline.sim.server import open_simulator

if TYPE_CHECKING:
    from pipeline.coord._open import Coordination

STATS_INTERVAL_S = 1.0
DRAIN_TIMEOUT_S = 30.0
log = get_logger("gpo.run")


@dataclass(slots=True)
class Session:
    """One invocation of ``gpo run`` on a run directory, holding its lock until the run ends."""

    config: RunConfig
    rundir: RunDir
    jobs: list[Job]
    lock: RunLock
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    started_mono: float = field(default_factory=time.monotonic)
    started_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    interrupted: bool = False
    previous: RunTotals = field(default_factory=RunTotals)
    """What earlier sessions of a resumed run used (their spend is in the preloaded budget)."""
    compare: Comparing | None = None
    """Set for ``gpo compare``: the plan, the configured jobs' names, requests per job."""
    cancel_batches: bool = False
    """``gpo run --cancel-batches``: a stop also cancels the provider batches still open."""
    workers: int | None = None
    """``gpo run --workers N``: the jobs are done by worker processes (``pipeline.dist``)."""
    reclaim_s: float = 30.0
    """With workers: a job not renewed for this long is taken over by another worker."""


def open_session(
    config_path: Path,
    *,
    run_dir: Path | None,
    budget_usd: float | None,
    json: bool,
    presets: tuple[str, ...] | None = None,
    seeds: int = 1,
) -> Session:
    """Everything that can be checked before the event loop does anything: ConfigError if not.
    With ``presets``, the session is a comparison of them over ``seeds`` seeds."""
    config = load_config(config_path)
    if budget_usd is not None:
        if budget_usd < 0:
            raise ConfigError(f"--budget-usd: expected a number >= 0, found {budget_usd}")
        config = dataclasses.replace(
            config, budget=dataclasses.replace(config.budget, usd=budget_usd)
        )
    jobs = build_jobs(config)
    unpriced_endpoints(config)  # a USD cap with an unknown price: refused before anything
    target = run_dir or config.run_dir or Path("runs") / config.path.stem
    compare = None
    if presets is not None:
        plan = ComparePlan(presets, seeds, config.seed)
        compare = Comparing(plan, tuple(j.name for j in jobs))
        jobs = expand_jobs(jobs, plan, config.settings)
        config = expand_config(config, plan)
        target = run_dir or target.with_name(target.name + "-compare")
    lock = RunLock.acquire(target)  # before anything is written there
    try:
        rundir = _prepare(target, config, compare)
    except BaseException:
        lock.release()
        raise
    return Session(config=config, rundir=rundir, jobs=jobs, lock=lock, json=json, compare=compare)


def _prepare(target: Path, config: RunConfig, compare: Comparing | None) -> RunDir:
    if compare is None:
        refuse_comparison(target)
        return prepare(target, config)
    check_plan(target, compare.plan)
    rundir = prepare(target, config)
    write_plan(rundir.path, compare.plan, rundir.run_id)
    return rundir


async def run_session(session: Session) -> int:
    """Run (or resume) the session's run; the exit code. Releases the run directory's lock."""
    structlog.contextvars.bind_contextvars(run_id=session.rundir.run_id)
    with session.lock, logs.to_file(session.rundir.logs, json=session.json):
        try:
            return await _run(session)
        except (StorageError, BaseExceptionGroup) as exc:
            fault = storage_fault_in(exc)
            if fault is None:
                raise
        print(
            f"error: {fault}\nThe run stopped cleanly: nothing more was sent and every "
            "dollar is in the ledger. Fix the cause (free disk space, restore the file), then "
            "run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_STORAGE


async def _run(session: Session) -> int:
    for endpoint in unpriced_endpoints(session.config):
        log.warning(
            "price_unknown",
            endpoint=endpoint.name,
            model=endpoint.model,
            detail='its cost is shown as unknown; set price = {...} or "free" to count it',
        )
    rundir = session.rundir
    async with _simulated(session.config) as config:
        history, other = read_journal(rundir.journal)
        if session.workers is not None:
            failure = await _distribute(session, config, history)
            if failure is not None:
                print(f"error: {failure}", file=sys.stderr)
                return EXIT_ERROR
            history, other = read_journal(rundir.journal)
        session.previous = previous_totals(other)
        async with (
            _coordinated(config, rundir.run_id) as coordination,
            open_sqlite_ledger(rundir.ledger, legacy_cache=rundir.cache) as ledger,
            open_sqlite_cache(rundir.cache) as cache,
            open_batch_log(rundir.batches) as batch_log,
        ):
            budget = Budget(run_caps=config.budget, ledger=ledger)
            if session.compare is not None:
                session.compare.earlier = previous_job_requests(other)
                session.compare.counter.inner = ledger
                budget.ledger = session.compare.counter
            budget.preload(ledger.spent)
            async with open_gateway(
                config.endpoints,
                budget=budget,
                cache=cache if coordination is None else TieredCache(cache, coordination.cache),
                batch_log=batch_log,
                coordination=coordination,
            ) as gw:
                await _preflight(gw, config)
                return await _optimize(session, config, gw, cache, history)


async def _distribute(session: Session, config: RunConfig, history: dict[str, Any]) -> str | None:
    """The jobs not yet ended, done by workers; then the run goes on as a resumed run whose jobs
    have ended (nothing is sent). Interrupted: only the jobs that ended are reported. Why the
    workers failed, if they did."""
    from pipeline.dist._coordinator import distribute, worker_logs

    simulated = [e.base_url for e in config.endpoints if e.name in config.simulated]
    assert session.workers is not None
    outcome = await distribute(
        session,
        config,
        history,
        workers=session.workers,
        reclaim_s=session.reclaim_s,
        simulator_url=simulated[0] if simulated else None,
    )
    if outcome.failure is not None:
        return f"{outcome.failure}\n{worker_logs(session.rundir.path)}"
    if outcome.interrupted:
        session.interrupted = True
        done = set(outcome.ended) | {n for n, h in history.items() if h.status is not None}
        session.jobs = [j for j in session.jobs if j.name in done]
    return None


def storage_fault_in(exc: BaseException) -> StorageError | None:
    """The storage fault that ``exc`` is or (alone) contains, else None."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        faults, rest = exc.split(StorageError)
        if faults is not None and rest is None:
            return next(e for e in _leaves(faults) if isinstance(e, StorageError))
    return None


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@asynccontextmanager
async def _coordinated(config: RunConfig, run_id: str) -> AsyncIterator[Coordination | None]:
    """The Redis session of ``[run] coordination`` (None for "local"); a Redis that cannot be
    reached is a ``ConfigError`` before anything is spent."""
    if config.coordination == "local":
        yield None
        return
    from pipeline.coord._open import open_coordination

    async with open_coordination(
        config.coordination, run=run_id, budget_scope=config.budget_scope
    ) as coordination:
        log.info("coordination", url=redacted(config.coordination), session=coordination.session)
        yield coordination


@asynccontextmanager
async def _simulated(config: RunConfig) -> AsyncIterator[RunConfig]:
    if config.simulator is None or not config.simulated:
        yield config
        return
    async with open_simulator(config.simulator) as sim:
        yield with_simulator_url(config, sim.base_url)


async def _preflight(gateway: Gateway, config: RunConfig) -> None:
    real = [e.name for e in config.endpoints if e.name not in config.simulated]
    try:
        await gateway.preflight(real)
    except LLMError as exc:
        raise ConfigError(f"endpoint {exc.endpoint!r} is not usable: {exc}") from None


async def _optimize(
    session: Session,
    config: RunConfig,
    gateway: Gateway,
    cache: SqliteCache,
    history: dict[str, Any],
) -> int:
    async with open_journal(session.rundir.journal) as journal:
        journal.on_fault = gateway.storage_fault
        journal.append(
            {
                "event": "run_started",
                "run_id": session.rundir.run_id,
                "resumed": session.rundir.resumed,
            }
        )
        run = OptimizerRun(
            gateway, session.jobs, config.settings, observer=journal, history=history
        )
        try:
            result = await _supervise(session, run, gateway, journal)
        finally:
            with anyio.CancelScope(shield=True):
                await gateway.save_unsaved()
        status = _status(session, result)
        journal.append(stats_event(gateway, session.compare))
        journal.append({"event": "run_ended", "status": status})
    if journal.fault is not None:
        raise journal.fault
    await cache.flush()
    if result is None:  # interrupted: what the run did so far
        wall_s = time.monotonic() - session.started_mono
        result = RunResult(jobs=run.job_results(), totals=run_totals(gateway, wall_s=wall_s))
    totals = session.previous + result.totals
    if session.workers is not None:  # the workers' time is this session's
        totals = dataclasses.replace(totals, wall_s=time.monotonic() - session.started_mono)
    result = dataclasses.replace(result, totals=totals)
    _write_outputs(session, gateway, result, status)
    _print_summary(session, gateway, result)
    return _exit_code(status, result.jobs)


async def _supervise(
    session: Session, run: OptimizerRun, gateway: Gateway, journal: Journal
) -> RunResult | None:
    """Run the optimizer with progress, stats and signals beside it. A signal cancels the run;
    the display then reads the end of the event stream and draws its last frame."""
    result: RunResult | None = None
    run_scope = anyio.CancelScope()
    async with anyio.create_task_group() as helpers:
        helpers.start_soon(_watch_signals, session, gateway, run_scope)
        helpers.start_soon(_sample_stats, session, gateway, journal, run)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_show, session, run, gateway)
            with run_scope:
                result = await run.run()
        helpers.cancel_scope.cancel()
    return result


async def _show(session: Session, run: OptimizerRun, gateway: Gateway) -> None:
    started = time.monotonic()
    budget = gateway.budget

    def totals() -> RunTotals:
        return session.previous + run_totals(gateway, wall_s=time.monotonic() - started)

    await show_progress(
        run.events(),
        totals,
        total_jobs=len(session.jobs),
        mode="off" if session.workers is not None else choose_mode(sys.stderr, json=session.json),
        cap_usd=session.config.budget.usd,
        job_cost=lambda job: budget.state(f"job:{job}").spent_usd,
    )


async def _watch_signals(session: Session, gateway: Gateway, scope: anyio.CancelScope) -> None:
    """The first SIGINT/SIGTERM stops sending and lets requests in flight finish (so they are
    paid once, cached and counted), then cancels the run; a second one cancels at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            session.interrupted = True
            log.warning("run_interrupted", signal=signal.Signals(signum).name)
            gateway.hold()
            await _leave_batches(session, gateway)
            with anyio.move_on_after(DRAIN_TIMEOUT_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_on_signal, signals, tg.cancel_scope)
                    await gateway.drained()
                    tg.cancel_scope.cancel()
            scope.cancel()
            return


async def _leave_batches(session: Session, gateway: Gateway) -> None:
    """Provider batches still open keep running (a resume adopts them), unless the user asked
    ``--cancel-batches``: then they are cancelled (what they answered is still billed)."""
    if not gateway.batches_open:
        return
    if session.cancel_batches:
        asked = await gateway.cancel_batches()
        log.warning("batches_cancelled", batches=asked)
    else:
        log.warning(
            "batches_left_running",
            batches=gateway.batches_open,
            detail="run again to adopt their answers; --cancel-batches cancels them",
        )


async def _cancel_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    await signals.__anext__()
    scope.cancel()


async def _sample_stats(
    session: Session, gateway: Gateway, journal: Journal, run: OptimizerRun
) -> None:
    while True:
        await anyio.sleep(STATS_INTERVAL_S)
        journal.append({**stats_event(gateway, session.compare), "queues": run.queue_depths()})


def stats_event(gateway: Gateway, compare: Comparing | None = None) -> dict[str, Any]:
    endpoints = {
        name: {
            "requests": s.requests,
            "batches": s.batches,
            "batch_requests": s.batch_requests,
            "rate_limited": s.rate_limited,
            "retries": s.retries_total,
            "cost_usd": s.cost_usd,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "cache_hits": s.cache_hits,
        }
        for name, s in gateway.statistics().items()
    }
    event = {
        "event": "stats",
        "spent_usd": gateway.budget.state().spent_usd,
        "endpoints": endpoints,
    }
    if compare is not None:  # this session's requests per job (earlier sessions have theirs)
        event["job_requests"] = dict(compare.counter.requests)
    return event


def previous_totals(events: list[dict[str, Any]]) -> RunTotals:
    """HTTP activity of earlier sessions: the last stats sample before each later start. Their
    spend is left out (the budget, preloaded from the ledger, holds it), and so is their wall
    time (``wall_s`` is the last session's)."""
    total, last = RunTotals(), RunTotals()
    for event in events:
        if event.get("event") == "run_started":
            total, last = total + last, RunTotals()
        elif event.get("event") == "stats":
            last = _totals_of_sample(event)
    return total + last


def _totals_of_sample(event: dict[str, Any]) -> RunTotals:
    rows = [r for r in event.get("endpoints", {}).values() if isinstance(r, dict)]
    return RunTotals(
        calls=sum(int(r.get("requests", 0)) + int(r.get("batch_requests", 0)) for r in rows),
        batches=sum(int(r.get("batches", 0)) for r in rows),
        batch_requests=sum(int(r.get("batch_requests", 0)) for r in rows),
        cache_hits=sum(int(r.get("cache_hits", 0)) for r in rows),
        retries=sum(int(r.get("retries", 0)) for r in rows),
        rate_limited=sum(int(r.get("rate_limited", 0)) for r in rows),
        input_tokens=sum(int(r.get("input_tokens", 0)) for r in rows),
        output_tokens=sum(int(r.get("output_tokens", 0)) for r in rows),
    )


def _status(session: Session, result: RunResult | None) -> str:
    if session.interrupted or result is None:
        return "interrupted"
    if any(j.status == "budget_exhausted" for j in result.jobs):
        return "budget_exhausted"
    return "finished" if all(j.status == "finished" for j in result.jobs) else "failed"


def _exit_code(status: str, jobs: tuple[JobResult, ...]) -> int:
    return {
        "interrupted": EXIT_INTERRUPTED,
        "budget_exhausted": EXIT_BUDGET,
        "failed": EXIT_ERROR,
    }.get(status, EXIT_OK)


def _write_outputs(session: Session, gateway: Gateway, result: RunResult, status: str) -> None:
    config = session.config
    meta = RunMeta(
        run_id=session.rundir.run_id,
        started_at=session.started_at,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        status=status,
        config_path=str(config.path),
        strategy=config.settings.strategy.describe(),
    )
    document = results_document(
        result.jobs,
        meta=meta,
        budget=gateway.budget,
        caps=config.budget,
        totals=result.totals,
        endpoints=gateway.statistics(),
        prices=gateway.prices(),
    )
    write_json(session.rundir.results, document)
    if session.compare is not None:
        comparison = session.compare.result(gateway.budget, session.jobs, result)
        document = comparison_document(comparison, run_id=session.rundir.run_id, status=status)
        write_json(session.rundir.path / COMPARE_FILE, document)
    write_report(session.rundir.path)


def _print_summary(session: Session, gateway: Gateway, result: RunResult) -> None:
    print_summary(result, session.out)
    if session.compare is not None:
        print(file=session.out)
        print_comparison(session.compare.result(gateway.budget, session.jobs, result), session.out)
        print(f"\ncompare: {session.rundir.path / COMPARE_FILE}", file=session.out)
    print(
        f"\nresults: {session.rundir.results}\nreport:  {session.rundir.report}", file=session.out
    )
