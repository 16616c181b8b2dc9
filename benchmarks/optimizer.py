"""Optimizer benchmarks, each run in a fresh process (``python -m benchmarks.optimizer NAME``) that
prints one JSON object, so that peak memory belongs to that benchmark alone.

  B3 scale: 1,000 jobs with small dev sets, all in the cycle at once, against the simulator.
  B4 critical path: simulator latency 500 ms (constant), no limits: wall time of one GPO step
     over the ideal (one optimizer call + one task call).
  B5 quality: every preset on the synthetic tasks and the BBH files, several seeds: mean test
     accuracy and mean dollars spent per preset.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

import anyio
import orjson

from benchmarks.run import simulator
from pipeline.cli import _logs as logs
from pipeline.llm._cache import NoCache
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.llm._pricing import Price
from pipeline.runner._jobs import Job, OptimizerSettings, StepFinished
from pipeline.runner._run import open_optimizer, optimize
from pipeline.sim.tasks import builtin_tasks
from pipeline.tasks._data import Example, load_examples
from stages.strategy import PRESETS, strategy

BBH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"
PRICE = Price(input_per_mtok=0.15, output_per_mtok=0.60)  # priced like gpt-4o-mini


def _endpoint(url: str, **kw: Any) -> EndpointConfig:
    return EndpointConfig(name="sim", model="sim-1", base_url=url, price=PRICE, **kw)


def _builtin() -> list[tuple[str, tuple[Example, ...]]]:
    return [
        (t.name, tuple(Example(e.input, e.target) for e in t.examples)) for t in builtin_tasks()
    ]


async def b3(jobs: int) -> dict[str, Any]:
    tasks = _builtin()
    plan = strategy("gpo", candidates=4, epochs=2)
    work = [
        Job(
            name=f"job{i}",
            examples=tasks[i % len(tasks)][1],
            task_endpoint="sim",
            embedding_endpoint="sim",
            dev_size=8,
            test_size=8,
            initial_prompt=f"Let's think step by step. (variant {i})",
            strategy=plan,
        )
        for i in range(jobs)
    ]
    settings = OptimizerSettings(max_active_jobs=jobs, call_workers=256)
    async with (
        simulator() as url,
        open_gateway([_endpoint(url, max_in_flight=128)], cache=NoCache()) as gateway,
    ):
        started = time.monotonic()
        result = await optimize(gateway, work, settings)
    finished = sum(j.status == "finished" for j in result.jobs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "jobs": jobs,
        "finished": finished,
        "calls": result.totals.calls,
        "wall_s": time.monotonic() - started,
        "peak_rss_mb": rss_mb,
    }


async def b4() -> dict[str, Any]:
    name, examples = _builtin()[0]
    job = Job(
        name=name,
        examples=examples,
        task_endpoint="sim",
        embedding_endpoint="sim",
        dev_size=16,
        test_size=0,
        strategy=strategy("gpo", epochs=3),
    )
    async with (
        simulator("--latency-ms", "500", "--latency-sigma", "0") as url,
        open_gateway([_endpoint(url, max_in_flight=256)]) as gateway,
    ):
        times: dict[int, float] = {}
        async with open_optimizer(gateway, [job], OptimizerSettings(call_workers=256)) as run:
            async for event in run.events():
                if isinstance(event, StepFinished):
                    times[event.step] = time.monotonic()
    steps = sorted(times)
    per_step = [times[b] - times[a] for a, b in itertools.pairwise(steps)]
    return {"ideal_s": 1.0, "step_s": mean(per_step), "steps_timed": len(per_step)}


async def b5(seeds: int, dev: int, test: int, tasks_limit: int | None) -> dict[str, Any]:
    tasks = _builtin() + [(f"bbh_{p.stem}", load_examples(p)) for p in sorted(BBH.glob("*.json"))]
    tasks = tasks[:tasks_limit] if tasks_limit else tasks
    task_files = [str(p) for p in sorted(BBH.glob("*.json"))]
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for seed in range(seeds):
        async with simulator("--seed", str(seed), "--tasks", *task_files) as url:
            for preset in PRESETS:
                jobs = [
                    Job(
                        name=n,
                        examples=ex,
                        task_endpoint="sim",
                        embedding_endpoint="sim",
                        dev_size=dev,
                        test_size=test,
                        strategy=PRESETS[preset],
                    )
                    for n, ex in tasks
                ]
                async with open_gateway([_endpoint(url, max_in_flight=128)]) as gateway:
                    result = await optimize(
                        gateway, jobs, OptimizerSettings(seed=seed, call_workers=128)
                    )
                rows[preset].extend((j.best_test_score or 0.0, j.cost_usd) for j in result.jobs)
    return {
        p: {
            "test_accuracy": mean(a for a, _ in r),
            "cost_usd": mean(c for _, c in r),
            "jobs": len(r),
        }
        for p, r in rows.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.optimizer")
    parser.add_argument("name", choices=["b3", "b4", "b5"])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dev", type=int, default=24)
    parser.add_argument("--test", type=int, default=72)
    parser.add_argument("--tasks", type=int, default=None, help="use only the first N tasks")
    args = parser.parse_args(argv)
    logs.configure(level=logging.ERROR)
    if args.name == "b3":
        out = anyio.run(b3, args.jobs)
    elif args.name == "b4":
        out = anyio.run(b4)
    else:
        out = anyio.run(b5, args.seeds, args.dev, args.test, args.tasks)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
