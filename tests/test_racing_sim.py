"""Racing on the simulator over loopback HTTP: fewer task-model calls than full evaluation, the
selected prompts scored on the whole dev split, and every preset runs with it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest

from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.runner._jobs import Job, OptimizerSettings, RunResult
from pipeline.runner._run import optimize
from pipeline.sim.server import SimConfig, open_simulator
from pipeline.sim.tasks import builtin_tasks
from stages.strategy import PRESETS, Strategy, strategy

FAST_RETRY = RetryPolicy(max_attempts=6, base_s=0.01, cap_s=0.05, retry_after_cap_s=1.0)


@asynccontextmanager
async def two_endpoints(seed: int) -> AsyncIterator[Gateway]:
    """The simulator as a task endpoint and an optimizer endpoint, so calls count apart."""
    async with open_simulator(SimConfig(seed=seed)) as sim:
        configs = [
            EndpointConfig(
                name=name, model="sim-1", base_url=sim.base_url, max_in_flight=64, retry=FAST_RETRY
            )
            for name in ("task", "opt")
        ]
        async with open_gateway(configs, rng=random.Random(seed)) as gateway:
            yield gateway


def jobs(plan: Strategy, *, dev: int, test: int, tasks: int = 4) -> list[Job]:
    return [
        Job(
            name=t.name,
            examples=t.examples,
            task_endpoint="task",
            optimizer_endpoint="opt",
            embedding_endpoint="opt",
            dev_size=dev,
            test_size=test,
            strategy=plan,
        )
        for t in builtin_tasks()[:tasks]
    ]


async def run(seed: int, work: Sequence[Job]) -> tuple[RunResult, int]:
    """The run's result and the task model's calls."""
    with anyio.fail_after(240):
        async with two_endpoints(seed) as gateway:
            result = await optimize(gateway, work, OptimizerSettings(seed=seed))
            return result, gateway.statistics()["task"].calls


@pytest.mark.timeout(300)
async def test_racing_asks_the_task_model_less_and_selects_full_dev_scores() -> None:
    dev, test = 48, 24
    full, full_calls = await run(4, jobs(strategy("gpo", epochs=1), dev=dev, test=test, tasks=2))
    raced, raced_calls = await run(
        4, jobs(strategy("gpo", epochs=1, evaluation="racing"), dev=dev, test=test, tasks=2)
    )

    assert {j.status for j in full.jobs + raced.jobs} == {"finished"}
    records = [r for j in raced.jobs for r in j.step_records]
    new = [c for r in records for c in r.candidates if c.new]
    stopped = [c for c in new if c.raced_out]
    assert stopped
    assert all(c.examples_scored is not None and c.examples_scored < dev for c in stopped)
    # every call counted: racing asked exactly what its records say it scored
    scored = sum(c.examples_scored or 0 for c in new)
    initial_and_test = sum(
        dev + test * (1 + (j.best_prompt != j.initial_prompt)) for j in raced.jobs
    )
    assert raced_calls == scored + initial_and_test < full_calls
    for record in records:
        chosen = [c for c in record.candidates if c.prompt == record.selected and c.new]
        assert chosen
        assert all(not c.raced_out and c.examples_scored == dev for c in chosen)
    for job in raced.jobs:  # the trajectory holds full-dev scores only: multiples of 100 / dev
        assert all(round(e.score * dev / 100, 6).is_integer() for e in job.trajectory)
        assert job.best_test_score is not None


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_every_preset_runs_with_racing(preset: str) -> None:
    plan = strategy(preset, epochs=1, candidates=4, evaluation="racing", racing_z=0.5)
    result, _ = await run(3, jobs(plan, dev=16, test=8, tasks=1))

    (job,) = result.jobs
    assert job.status == "finished", job.error
    assert job.steps == (0 if preset == "baseline" else 2)
    best = max(job.trajectory, key=lambda e: e.score)
    assert (job.best_prompt, job.best_dev_score) == (best.prompt, best.score)
    for record in job.step_records:
        assert all(c.examples_scored == 16 for c in record.candidates if c.new and not c.raced_out)
        assert (record.reflection is not None) == PRESETS[preset].reflection
