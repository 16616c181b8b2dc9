"""A worker of a distributed run (``gpo worker REDIS_URL``, or one of ``gpo run --workers N``).

A worker joins a run published in Redis (the one named, or the first open one), loads the run's
configuration from the path the run published (every worker must see the same config and data
files at the same paths: one checkout, or a shared file system), and then, until the run is
done: takes up to ``max_active_jobs`` jobs from the run's stream (jobs of a worker that stopped
renewing them first), rebuilds each job's history from the run's journal in Redis, runs them
through the optimizer with its own gateway (limits, budget, cache and single-flight shared over
Redis with every other worker), appends each job's events to the journal and acknowledges a job
once its ``ended`` event is stored. A killed worker's jobs are taken over after ``reclaim_s``
and resume from their journal, their calls answered from the shared cache; what it had in flight
and not yet cached is paid again (at most its requests in flight), and its open reservations
are charged in full.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson

from pipeline._log import get_logger
from pipeline.config._load import RunConfig, build_jobs, load_config, with_simulator_url
from pipeline.coord._open import Coordination, open_coordination
from pipeline.dist._queue import JobQueue, Taken
from pipeline.errors import ConfigError, LLMError
from pipeline.llm._budget import Budget
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.rundir._journal import Journal, parse_lines, read_events
from pipeline.runner._jobs import Job
from pipeline.runner._run import OptimizerRun
from pipeline.runner._state import JobHistory

log = get_logger("gpo.worker")
RECLAIM_S = 30.0
"""A job whose worker has not renewed it for this long is taken over by another worker."""
DRAIN_S = 30.0
"""On SIGTERM, how long requests in flight have to end before the worker stops anyway."""
STATS_S = 1.0
"""How often a worker stores its counters for the run's progress."""
POLL_S = 0.2
JOIN_WAIT_S = 30.0
"""How long ``gpo worker`` waits for a run to be published before it gives up."""


class RedisJournal(Journal):
    """The optimizer's observer in a worker: the journal's events, appended to the run's list
    in Redis; a job is acknowledged in the stream once its ``ended`` event is stored there."""

    def __init__(self, queue: JobQueue, taken: Sequence[Taken], worker: str) -> None:
        super().__init__(None)
        self._queue = queue
        self._taken = {t.job: t for t in taken}
        self._ended: list[Taken] = []
        self._worker = worker
        self.acked = 0

    def append(self, event: dict[str, Any]) -> None:
        event.setdefault("worker", self._worker)
        super().append(event)

    def job_ended(self, job: str, status: str, error: str | None) -> None:
        super().job_ended(job, status, error)
        if job in self._taken:
            self._ended.append(self._taken.pop(job))

    async def _commit(self, lines: list[bytes]) -> None:
        ended, self._ended = self._ended, []
        await self._queue.append(lines)
        for taken in ended:  # after its "ended" line is stored: never acked and lost
            await self._queue.ack(taken)
            self.acked += 1

    @property
    def working(self) -> list[Taken]:
        return list(self._taken.values())


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def work(
    url: str, *, run: str | None = None, reclaim_s: float = RECLAIM_S, name: str | None = None
) -> int:
    """Work on the run until it is done; how many jobs this worker ended."""
    name = name or worker_name()
    async with open_coordination(url, run=run) as probe:
        run = run or await _join(probe, url)
        queue = JobQueue(probe.redis, url=url, run=run, consumer=name, reclaim_s=reclaim_s)
        config = await _config(queue)
    jobs = {job.name: job for job in build_jobs(config)}
    async with (
        open_coordination(url, run=run, budget_scope=config.budget_scope) as coordination,
        open_gateway(
            config.endpoints, budget=Budget(run_caps=config.budget), coordination=coordination
        ) as gateway,
    ):
        queue = JobQueue(coordination.redis, url=url, run=run, consumer=name, reclaim_s=reclaim_s)
        await _preflight(gateway, config)
        log.info("worker_joined", run=run, worker=name, jobs=len(jobs))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, gateway, tg.cancel_scope)
            ended = await _loop(queue, gateway, config, jobs, name)
            tg.cancel_scope.cancel()
        return ended


async def _preflight(gateway: Gateway, config: RunConfig) -> None:
    """Every real endpoint answers and takes its key, before this worker takes a job."""
    real = [e.name for e in config.endpoints if e.name not in config.simulated]
    try:
        await gateway.preflight(real)
    except LLMError as exc:
        raise ConfigError(f"endpoint {exc.endpoint!r} is not usable: {exc}") from None


async def _watch_signals(gateway: Gateway, scope: anyio.CancelScope) -> None:
    """SIGTERM/SIGINT: send nothing more, let requests in flight end (paid once, cached), then
    stop. The jobs in work stay in the stream; another worker, or the run's next session,
    resumes them from the journal."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.warning("worker_stopping", signal=signal.Signals(signum).name)
            gateway.hold()
            with anyio.move_on_after(DRAIN_S):
                await gateway.drained()
            scope.cancel()
            return


async def _join(coordination: Coordination, url: str) -> str:
    with anyio.move_on_after(JOIN_WAIT_S):
        while True:
            runs = await JobQueue.runs(coordination.redis, url=url)
            if runs:
                return runs[0]
            await anyio.sleep(0.5)
    raise ConfigError(f"no run to join at {coordination.url} within {JOIN_WAIT_S:.0f} s")


async def _config(queue: JobQueue) -> RunConfig:
    spec = await queue.spec()
    if spec is None:
        raise ConfigError("the run has no published configuration (was it started?)")
    config = load_config(Path(spec["config"]))
    caps = dataclasses.replace(config.budget, usd=spec.get("budget_usd"))
    config = dataclasses.replace(config, budget=caps)
    share = int(spec.get("share") or config.settings.max_active_jobs)
    settings = dataclasses.replace(
        config.settings, max_active_jobs=min(share, config.settings.max_active_jobs)
    )
    config = dataclasses.replace(config, settings=settings)
    if spec.get("simulator_url"):
        config = with_simulator_url(config, str(spec["simulator_url"]))
    return config


class _Work:
    """The batches in work in this worker (each one :class:`OptimizerRun` of jobs taken
    together, sharing the worker's gateway)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.journals: list[RedisJournal] = []
        self.ended = 0

    def in_work(self) -> int:
        return sum(len(j.working) for j in self.journals)

    def wanted(self) -> int:
        """Jobs to take now: none while at least half of ``cap`` is still in work (a worker
        takes jobs in a few large batches, not one at a time, so others get their share)."""
        in_work = self.in_work()
        free = self.cap - in_work
        return 0 if in_work and free * 2 < self.cap else free


async def _loop(
    queue: JobQueue, gateway: Gateway, config: RunConfig, jobs: dict[str, Job], name: str
) -> int:
    work = _Work(max(1, config.settings.max_active_jobs))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_sample, queue, gateway, name)
        while not await queue.done():
            wanted = work.wanted()
            if not wanted:
                await anyio.sleep(POLL_S)
                continue
            taken = await queue.take(wanted, block_s=1.0)
            if not taken:
                if not work.in_work() and not await queue.remaining():
                    break
                continue
            unknown = [t.job for t in taken if t.job not in jobs]
            if unknown:
                raise ConfigError(f"jobs {unknown} are not in this worker's configuration")
            journal = RedisJournal(queue, taken, name)
            work.journals.append(journal)
            tg.start_soon(_work_on, queue, gateway, config, [jobs[t.job] for t in taken], journal)
        while work.in_work():
            await anyio.sleep(POLL_S)
        tg.cancel_scope.cancel()
    await queue.append([orjson.dumps(_stats(gateway, name))])
    ended = sum(j.acked for j in work.journals)
    log.info("worker_done", worker=name, jobs_ended=ended)
    return ended


async def _work_on(
    queue: JobQueue, gateway: Gateway, config: RunConfig, jobs: list[Job], journal: RedisJournal
) -> None:
    """Run the taken jobs to their end (resumed from the journal), renewing them meanwhile."""
    history = await _histories(queue, journal.working)
    run = OptimizerRun(gateway, jobs, config.settings, observer=journal, history=history)
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.serve)
        tg.start_soon(_renew, queue, journal, tg.cancel_scope)
        try:
            await run.run()
        finally:
            with anyio.CancelScope(shield=True):
                await journal.sync()
            tg.cancel_scope.cancel()
    if journal.fault is not None:
        raise journal.fault


async def _sample(queue: JobQueue, gateway: Gateway, name: str) -> None:
    """This worker's counters into the journal every ``STATS_S`` (for the run's progress)."""
    while True:
        await anyio.sleep(STATS_S)
        await queue.append([orjson.dumps(_stats(gateway, name))])


async def _histories(queue: JobQueue, taken: list[Taken]) -> dict[str, JobHistory]:
    """The journal's history of the jobs that resume (new jobs have none)."""
    if not any(t.resume for t in taken):
        return {}
    names = {t.job for t in taken}
    events = (e for e in parse_lines(await queue.read()) if e.get("job") in names)
    history, _ = read_events(events)
    return history


async def _renew(queue: JobQueue, journal: RedisJournal, work: anyio.CancelScope) -> None:
    """Keep the jobs in work ours; if another worker took any over (this one was too slow to
    renew), stop working on these jobs: the other worker resumes them from the journal."""
    while True:
        await anyio.sleep(queue.reclaim_s / 3)
        lost = await queue.keep(journal.working)
        if lost:
            log.warning("jobs_taken_over", jobs=[t.job for t in lost])
            work.cancel()
            return


def _stats(gateway: Gateway, name: str) -> dict[str, Any]:
    """This worker's cumulative counters (the coordinator sums each worker's last sample)."""
    from pipeline.cli._run import stats_event

    return {**stats_event(gateway), "event": "worker_stats", "worker": name}


def run_spec(config: RunConfig, simulator_url: str | None, share: int) -> dict[str, Any]:
    """What a worker needs to join: the config's path, the run's dollar cap (which a
    ``--budget-usd`` may have set), the simulator's address, and how many jobs a worker takes
    at most at once (its ``share``: the jobs over the workers started with the run)."""
    return {
        "config": str(config.path.resolve()),
        "budget_usd": config.budget.usd,
        "simulator_url": simulator_url,
        "share": share,
    }
