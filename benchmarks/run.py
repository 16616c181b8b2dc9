"""``just bench``: measured ratios against their targets, printed as a table.

The simulator runs as a separate process (as a remote API would), so the gateway and the server
do not share one core. Every figure is a ratio measured within one run: the machines are shared
and noisy, so compare ratios, not absolute times.

  B1  saturation: 2,000 requests, simulator at 12,000 RPM and ~50 ms latency, gateway configured
      with that limit. Figure: ideal time (2,000 / limit) over wall time; the detail counts the
      429s the gateway got and their share of its HTTP requests (expected: none).
  B1b learned limits: the same with no limit configured in the gateway.
  B2  overhead: simulator with no latency or limits; requests/s through the gateway (cache off,
      then an on-disk cache that only misses) over requests/s of a bare aiohttp loop.
  B3, B4, B5: the optimizer at scale (peak RSS at 1,000 jobs; CPU time per request at 5,000
      jobs over that at 250), on the critical path, and per preset (see benchmarks/optimizer.py;
      each runs in a fresh process).
  B6  cap use: spent / cap of a capped ``gpo run`` at the default settings on the simulator,
      for caps of $0.03 and $1.00 (see benchmarks/money.py).
  B8  provider batches: the demo's jobs with batch = "eval" on the simulator's batch API, dollars
      over those of the same run realtime, results compared; then a batch-mode run killed three
      times with a batch in flight: batches the simulator saw submitted twice (see
      benchmarks/batch.py).
  B9  racing: task-model calls with ``evaluation = "racing"`` over those with full evaluation
      on the simulator's built-in tasks, 3 seeds, and the paired difference of test accuracy
      (see benchmarks/racing.py; a fresh process).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import anyio.to_thread
import orjson

from benchmarks.money import cap_use
from pipeline.cli import _logs as logs
from pipeline.llm._budget import Budget
from pipeline.llm._cache import NoCache, ResponseCache, open_sqlite_cache
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.llm._ledger import open_sqlite_ledger
from pipeline.llm._stats import EndpointStatistics
from pipeline.llm._values import ChatRequest


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    figure: float
    target: str
    passed: bool
    detail: str


@asynccontextmanager
async def simulator(*args: str) -> AsyncIterator[str]:
    """Start ``gpo sim`` as a subprocess; yield its base URL; stop it on exit."""
    cmd = [sys.executable, "-m", "pipeline.sim.cli", "--port", "0", *args]
    async with await anyio.open_process(cmd) as proc:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
        url = line.decode().strip().removeprefix("listening on ")
        try:
            yield url
        finally:
            proc.terminate()
            await proc.wait()


def _request(i: int) -> ChatRequest:
    return ChatRequest.of(
        f"Benchmark question {i}: what is {i} + {i}?", temperature=0.0, max_tokens=32, seed=i
    )


async def _fan_out(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i < count with at most ``concurrency`` at once; wall seconds."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def guarded(i: int) -> None:
        async with limiter:
            await one(i)

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(guarded, i)
    return anyio.current_time() - started


async def _through_gateway(
    url: str,
    count: int,
    concurrency: int,
    *,
    rpm: float | None,
    cache: ResponseCache,
    budget: Budget | None = None,
) -> tuple[float, EndpointStatistics]:
    endpoint = EndpointConfig(
        name="sim", model="sim-1", base_url=url, rpm=rpm, max_in_flight=concurrency
    )
    async with open_gateway(
        [endpoint], cache=cache, budget=budget, rng=random.Random(0)
    ) as gateway:

        async def one(i: int) -> None:
            await gateway.chat("sim", _request(i))

        wall = await _fan_out(count, concurrency, one)
        return wall, gateway.statistics()["sim"]


async def _bare(url: str, count: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            r = _request(i)
            body = {
                "model": "sim-1",
                "temperature": 0.0,
                "max_tokens": 32,
                "seed": i,
                "messages": [{"role": "user", "content": r.messages[0].content}],
            }
            async with session.post(
                f"{url}/chat/completions",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                orjson.loads(await resp.read())

        return await _fan_out(count, concurrency, one)


async def b1(count: int, *, learned: bool) -> Row:
    rpm = 12_000.0
    async with simulator("--rpm", str(int(rpm)), "--latency-ms", "50") as url:
        wall, stats = await _through_gateway(
            url, count, 64, rpm=None if learned else rpm, cache=NoCache()
        )
    ideal = count / (rpm / 60.0)
    ratio = ideal / wall
    target = 0.85 if learned else 0.95
    name = "B1b learned limits" if learned else "B1 saturation"
    limited = stats.rate_limited / max(1, stats.requests)
    return Row(
        name,
        ratio,
        f">= {target} and 0 failed",
        ratio >= target and stats.failures == 0,
        f"{count} requests, wall {wall:.2f} s, ideal {ideal:.2f} s, failed {stats.failures}, "
        f"429s {stats.rate_limited} of {stats.requests} HTTP requests ({limited:.2%})",
    )


B2_MODES = ("bare", "cache off", "cache on, misses", "cache + ledger")


async def _b2_wall(mode: str, url: str, count: int, concurrency: int, files: Path) -> float:
    """Seconds for ``count`` requests in one B2 mode; every cache and ledger file is new."""
    if mode == "bare":
        return await _bare(url, count, concurrency)
    if mode == "cache off":
        return (await _through_gateway(url, count, concurrency, rpm=None, cache=NoCache()))[0]
    async with open_sqlite_cache(files / "cache.sqlite") as cache:
        if mode == "cache on, misses":
            return (await _through_gateway(url, count, concurrency, rpm=None, cache=cache))[0]
        async with open_sqlite_ledger(files / "ledger.sqlite") as ledger:
            budget = Budget(ledger=ledger)
            run = await _through_gateway(
                url, count, concurrency, rpm=None, cache=cache, budget=budget
            )
            return run[0]


async def b2(count: int, concurrency: int, rounds: int = 5) -> list[Row]:
    """Interleaved: each round runs every mode (in a rotated order) against the same simulator,
    so a busy spell of the shared machine hits all modes alike; medians over the rounds."""
    ratios: dict[str, list[float]] = {mode: [] for mode in B2_MODES[1:]}
    async with simulator() as url:
        await _bare(url, 200, concurrency)  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                order = B2_MODES[r % len(B2_MODES) :] + B2_MODES[: r % len(B2_MODES)]
                walls = {}
                for mode in order:
                    files = Path(tmp) / f"{r}-{B2_MODES.index(mode)}"
                    files.mkdir()
                    walls[mode] = await _b2_wall(mode, url, count, concurrency, files)
                for mode in ratios:
                    ratios[mode].append(walls["bare"] / walls[mode])
    rows = []
    for mode, values in ratios.items():
        mid = statistics.median(values)
        rows.append(
            Row(
                f"B2 overhead, {mode}",
                mid,
                ">= 0.5",
                mid >= 0.5,
                f"median of {rounds} interleaved rounds, range {min(values):.3f}-"
                f"{max(values):.3f} (gateway req/s over a bare aiohttp loop's)",
            )
        )
    return rows


async def optimizer_bench(name: str, *args: str) -> dict[str, Any]:
    """Run ``benchmarks.optimizer NAME`` in a fresh process; its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.optimizer", name, *args]
    result = await anyio.run_process(cmd, check=True)
    return dict(orjson.loads(result.stdout.decode().strip().splitlines()[-1]))


async def b3(jobs: int = 1000, small: int = 250, large: int = 5000) -> Row:
    """Peak RSS at ``jobs`` jobs; CPU time per request at ``large`` jobs over that at ``small``,
    the small run made just before and just after the large one (a busy spell of the shared
    machine inflates CPU time too). Each run is a fresh process, its garbage collector set as
    ``gpo`` sets it."""
    out = await optimizer_bench("b3", "--jobs", str(jobs))
    before = await optimizer_bench("b3", "--jobs", str(small))
    high = await optimizer_bench("b3", "--jobs", str(large))
    after = await optimizer_bench("b3", "--jobs", str(small))
    low = (before["cpu_ms_per_call"] + after["cpu_ms_per_call"]) / 2
    growth = high["cpu_ms_per_call"] / low
    finished = all(o["finished"] == o["jobs"] for o in (out, before, high, after))
    ok = finished and out["peak_rss_mb"] < 400 and growth <= 1.15
    return Row(
        "B3 scale (peak RSS, MB)",
        out["peak_rss_mb"],
        "< 400; CPU <= 1.15x",
        ok,
        f"{out['finished']:,}/{out['jobs']:,} jobs finished, {out['calls']:,} calls in "
        f"{out['wall_s']:.0f} s; CPU/request {small:,} vs {large:,} jobs: "
        f"{low:.3f} ms vs {high['cpu_ms_per_call']:.3f} ms ({growth:.2f}x), "
        f"garbage collection {high['gc_share']:.1%} of it",
    )


async def b4() -> Row:
    out = await optimizer_bench("b4")
    low, high = out["ratio_range"]
    plain_low, plain_high = out["plain_range"]
    return Row(
        "B4 critical path",
        out["ratio"],
        ">= 0.8",
        out["ratio"] >= 0.8,
        f"median of {out['seeds']} seeds ({low:.3f}-{high:.3f}); ideal 1.0 s a step + 0.5 s a "
        f"re-ask ({out['reasks_per_step']:.2f} a step); {out['step_s']:.3f} s a step; without "
        f"the re-ask allowance {out['plain']:.3f} ({plain_low:.3f}-{plain_high:.3f})",
    )


async def b5(args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--seeds", str(args.seeds), "--dev", str(args.dev), "--test", str(args.test)]
    if args.ablations:
        extra.append("--ablations")
    return await optimizer_bench("b5", *extra)


def print_quality(table: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nB5 quality on the simulator: {args.seeds} seeds x "
        f"{table['gpo']['jobs'] // args.seeds} tasks, dev {args.dev}, test {args.test}"
    )
    print(
        f"{'preset':<15} {'mean test accuracy':>19} {'vs gpo (paired SE)':>19} "
        f"{'gain on test (SE)':>18} {'built-in':>9} {'mean $ per job':>15}"
    )
    for preset, row in sorted(table.items(), key=lambda kv: -kv[1]["test_accuracy"]):
        versus = f"{row['vs_gpo']:+.1f} ({row['vs_gpo_se']:.1f})"
        gain = f"{row['gain']:+.1f} ({row['gain_se']:.1f})"
        print(
            f"{preset:<15} {row['test_accuracy']:>18.1f}% {versus:>19} {gain:>18} "
            f"{row['gain_builtin']:>+9.1f} {row['cost_usd']:>15.4f}"
        )


def print_table(rows: list[Row]) -> None:
    print(f"\n{'benchmark':<28} {'figure':>7}  {'target':<20} {'ok':<4} detail")
    print("-" * 100)
    for r in rows:
        print(
            f"{r.name:<28} {r.figure:>7.3f}  {r.target:<20} {'yes' if r.passed else 'NO':<4} "
            f"{r.detail}"
        )


async def b8() -> list[Row]:
    cmd = [sys.executable, "-m", "benchmarks.batch"]
    done = await anyio.run_process(cmd, check=True)
    out = orjson.loads(done.stdout)
    killed = out["killed"]
    return [
        Row(
            "B8 batch (dollars)",
            out["ratio"],
            "<= 0.52, same results",
            out["ratio"] <= 0.52 and out["identical"],
            f"${out['batch']['spent']:.4f} in {out['batch']['batches']} batches vs "
            f"${out['realtime']['spent']:.4f} realtime; best prompts and scores identical: "
            f"{out['identical']}",
        ),
        Row(
            "B8 batches submitted twice",
            float(killed["duplicated"]),
            "0 over 3 kills",
            killed["duplicated"] == 0 and killed["kills"] == 3 and out["killed_identical"],
            f"{killed['kills']} kills with a batch in flight, {killed['batches']} batches, "
            f"{killed['requests_duplicated']} requests twice; results equal the uninterrupted "
            f"run's: {out['killed_identical']}",
        ),
    ]


async def b9() -> Row:
    cmd = [sys.executable, "-m", "benchmarks.racing"]
    done = await anyio.run_process(cmd, check=True)
    out = dict(orjson.loads(done.stdout.decode().strip().splitlines()[-1]))
    ratio, diff, se = out["call_ratio"], out["test_diff"], out["test_diff_se"]
    return Row(
        "B9 racing (task calls)",
        ratio,
        "<= 0.6; test +-1 pt",
        ratio <= 0.6 and abs(diff) <= 1.0,
        f"{out['task_calls_racing']:,} vs {out['task_calls_full']:,} calls; test accuracy racing "
        f"- full {diff:+.2f} (SE {se:.2f}) over {out['pairs']} (task, seed) pairs; "
        f"{out['stopped']} of {out['new_candidates']} candidates stopped; step 1 selected alike "
        f"in {out['first_step_same']} of {out['first_step_compared']} jobs",
    )


async def b6(cap_usd: float, target: float) -> Row:
    out = await anyio.to_thread.run_sync(cap_use, cap_usd)
    ok = target <= out["use"] <= 1.0 and out["exit"] == 3
    return Row(
        f"B6 cap use at ${cap_usd:.2f}",
        out["use"],
        f">= {target}, <= 1",
        ok,
        f"spent ${out['spent']:.4f} of ${cap_usd:.2f}, exit {out['exit']} (30 jobs, defaults)",
    )


ALL = ["b1", "b1b", "b2", "b3", "b4", "b5", "b6", "b8", "b9"]


async def main_async(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any] | None]:
    rows: list[Row] = []
    selected = set(args.only or ALL)
    if "b1" in selected:
        rows.append(await b1(args.requests, learned=False))
    if "b1b" in selected:
        rows.append(await b1(args.requests, learned=True))
    if "b2" in selected:
        rows.extend(await b2(args.overhead_requests, 32))
    if "b3" in selected:
        rows.append(await b3())
    if "b4" in selected:
        rows.append(await b4())
    if "b6" in selected:
        rows.append(await b6(0.03, 0.90))
        rows.append(await b6(1.00, 0.97))
    if "b8" in selected:
        rows.extend(await b8())
    if "b9" in selected:
        rows.append(await b9())
    quality = await b5(args) if "b5" in selected else None
    return rows, quality


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="just bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=ALL)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--overhead-requests", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3, help="B5 seeds")
    parser.add_argument("--dev", type=int, default=24, help="B5 dev split (paper: 48)")
    parser.add_argument("--test", type=int, default=72, help="B5 test split (paper: 144)")
    parser.add_argument("--ablations", action="store_true", help="B5: gpo's ablations too")
    args = parser.parse_args(argv)
    logs.configure(level=logging.WARNING)
    rows, quality = anyio.run(main_async, args)
    if rows:
        print_table(rows)
    if quality:
        print_quality(quality, args)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
