"""B9 racing: what ``evaluation = "racing"`` saves, and what it costs in quality.

The simulator's built-in tasks, each run with full evaluation (GPO as published) and with
racing, on the same seeds (same splits, same optimizer sampling: the first step of both meets
the same candidates). Figures: the task model's calls with racing over those with full
evaluation (every call: the initial and test scoring, which racing leaves alone, included),
and the mean difference of the best prompt's test accuracy, racing minus full, paired over
(task, seed), with its standard error. Also: the share of candidates racing stopped, and how
often step 1 (the same candidates in both) selected the same prompt.

``python -m benchmarks.racing`` prints one JSON object (``just bench --only b9`` runs it).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from benchmarks.run import simulator
from pipeline.cli import _logs as logs
from pipeline.llm._cache import NoCache
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.runner._jobs import Job, JobResult, OptimizerSettings
from pipeline.runner._run import optimize
from pipeline.sim.tasks import builtin_tasks
from stages.strategy import Strategy, strategy

MODES = ("full", "racing")


@dataclass(frozen=True, slots=True)
class Run:
    """One mode on one seed: the task model's calls and every job's result."""

    task_calls: int
    jobs: tuple[JobResult, ...]


def _jobs(mode: str, args: argparse.Namespace) -> list[Job]:
    bound = {"racing_z": args.z, "racing_rounds": args.rounds} if mode == "racing" else {}
    plan = strategy("gpo", epochs=args.epochs, evaluation=mode, **bound)
    return [
        Job(
            name=task.name,
            examples=task.examples,
            task_endpoint="task",
            optimizer_endpoint="opt",
            embedding_endpoint="opt",
            dev_size=args.dev,
            test_size=args.test,
            strategy=plan,
        )
        for task in builtin_tasks()
    ]


async def _run(url: str, mode: str, seed: int, args: argparse.Namespace) -> Run:
    endpoints = [
        EndpointConfig(name=name, model="sim-1", base_url=url, max_in_flight=128)
        for name in ("task", "opt")
    ]
    async with open_gateway(endpoints, cache=NoCache()) as gateway:
        settings = OptimizerSettings(seed=seed, call_workers=128)
        result = await optimize(gateway, _jobs(mode, args), settings)
        calls = gateway.statistics()["task"].calls
    unfinished = [j.name for j in result.jobs if j.status != "finished"]
    if unfinished:
        raise RuntimeError(f"{mode}, seed {seed}: jobs {unfinished} did not finish")
    return Run(task_calls=calls, jobs=result.jobs)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for fewer than two values)."""
    if len(values) < 2:
        return statistics.fmean(values), 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def _candidates(runs: Sequence[Run]) -> tuple[int, int]:
    """(candidates stopped early, new candidates) over the runs' steps."""
    new = [c for r in runs for j in r.jobs for s in j.step_records for c in s.candidates if c.new]
    return sum(c.raced_out for c in new), len(new)


def _first_step_agreement(full: Sequence[Run], racing: Sequence[Run]) -> tuple[int, int]:
    """(jobs whose step 1 selected the same prompt in both modes, jobs compared)."""
    pairs = [
        (a.step_records[0].selected, b.step_records[0].selected)
        for f, r in zip(full, racing, strict=True)
        for a, b in zip(f.jobs, r.jobs, strict=True)
        if a.step_records and b.step_records
    ]
    return sum(a == b for a, b in pairs), len(pairs)


def summary(runs: dict[str, list[Run]]) -> dict[str, Any]:
    full, racing = runs["full"], runs["racing"]
    diffs = [
        (b.best_test_score or 0.0) - (a.best_test_score or 0.0)
        for f, r in zip(full, racing, strict=True)
        for a, b in zip(f.jobs, r.jobs, strict=True)
    ]
    diff, se = mean_se(diffs)
    stopped, new = _candidates(racing)
    same, compared = _first_step_agreement(full, racing)
    return {
        "call_ratio": sum(r.task_calls for r in racing) / sum(r.task_calls for r in full),
        "task_calls_full": sum(r.task_calls for r in full),
        "task_calls_racing": sum(r.task_calls for r in racing),
        "test_diff": diff,
        "test_diff_se": se,
        "pairs": len(diffs),
        "test_full": statistics.fmean(j.best_test_score or 0.0 for r in full for j in r.jobs),
        "test_racing": statistics.fmean(j.best_test_score or 0.0 for r in racing for j in r.jobs),
        "stopped": stopped,
        "new_candidates": new,
        "first_step_same": same,
        "first_step_compared": compared,
    }


async def b9(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    for seed in range(args.seeds):
        async with simulator("--seed", str(seed)) as url:
            for mode in MODES:
                runs[mode].append(await _run(url, mode, seed, args))
    sizes = {"seeds": args.seeds, "dev": args.dev, "test": args.test}
    return {**summary(runs), **sizes, "z": args.z, "rounds": args.rounds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.racing", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dev", type=int, default=48, help="the paper's BBH dev split")
    parser.add_argument("--test", type=int, default=144, help="the paper's BBH test split")
    parser.add_argument("--epochs", type=int, default=3, help="the paper's (T = 18 at dev 48)")
    parser.add_argument("--z", type=float, default=Strategy().racing_z, help="racing_z")
    parser.add_argument("--rounds", type=int, default=Strategy().racing_rounds)
    args = parser.parse_args(argv)
    logs.configure(level=logging.ERROR)
    out = anyio.run(b9, args)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
