"""``gpo demo``: the gateway against the in-process simulator, offline, in a few seconds.

It sends task questions and optimizer-style requests (n = 8) through one gateway while the
simulator enforces a rate limit and injects faults, then replays the same requests from the
response cache, and prints what happened: calls, retries, 429s, cache hits, tokens, dollars.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from pipeline.budget import Budget, Caps
from pipeline.cache import open_sqlite_cache
from pipeline.endpoint import EndpointConfig
from pipeline.gateway import Gateway, open_gateway
from pipeline.pricing import Price
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig, open_simulator
from pipeline.sim.tasks import builtin_tasks
from pipeline.stats import EndpointStatistics
from pipeline.values import ChatRequest

DEMO_FAULTS = "429=0.03,500=0.02,503=0.01,reset=0.005,truncate=0.005,fewer_choices=0.1"
PROMPT = "Let's think step by step."
META = (
    "Here are instructions with their scores (0-100):\ntext: {p}\nscore: {s}\n"
    "Write a new improved instruction. You may change up to {k} words. "
    "Put it between <START> and <END>."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    questions: int = 240
    seed: int = 0
    rpm: float = 6000.0
    latency_ms: float = 60.0
    budget_usd: float = 0.50
    run_dir: Path | None = None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo on the built-in simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--questions", type=int, default=240, help="task questions to send")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None, help="keep the cache here")
    p.set_defaults(handler=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    config = DemoConfig(questions=args.questions, seed=args.seed, run_dir=args.run_dir)
    if config.run_dir is not None:
        await demo(config, config.run_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="gpo-demo-") as tmp:
            await demo(config, Path(tmp))
    return 0


async def demo(config: DemoConfig, run_dir: Path) -> dict[str, EndpointStatistics]:
    sim_config = SimConfig(
        rpm=config.rpm,
        latency_ms=config.latency_ms,
        seed=config.seed,
        faults=FaultSpec.parse(DEMO_FAULTS),
    )
    requests = _requests(config)
    async with (
        open_simulator(sim_config) as sim,
        open_sqlite_cache(run_dir / "cache.sqlite") as cache,
    ):
        endpoint = EndpointConfig(
            name="sim",
            model="sim-1",
            base_url=sim.base_url,
            price=Price(input_per_mtok=0.15, output_per_mtok=0.60),
            max_in_flight=64,
        )
        budget = Budget(run_caps=Caps(usd=config.budget_usd))
        for label in ("first pass (paid calls)", "second pass (from the cache)"):
            async with open_gateway(
                [endpoint], budget=budget, cache=cache, rng=random.Random(config.seed)
            ) as gateway:
                started = anyio.current_time()
                correct = await _send_all(gateway, requests)
                _report(label, gateway, correct, len(requests), anyio.current_time() - started)
        print(
            f"\nsimulator saw {sum(sim.stats.requests.values())} HTTP requests in all; "
            f"budget spent ${budget.state().spent_usd:.4f} of ${config.budget_usd:.2f}"
        )
        return gateway.statistics()


@dataclass(frozen=True, slots=True)
class _Item:
    request: ChatRequest
    target: str | None


def _requests(config: DemoConfig) -> list[_Item]:
    rng = random.Random(config.seed)
    examples = [(t.name, e) for t in builtin_tasks() for e in t.examples]
    picked = rng.sample(examples, min(config.questions, len(examples)))
    items = [
        _Item(ChatRequest.of(f"{e.input}\n{PROMPT}", temperature=0.0, max_tokens=256), e.target)
        for _, e in picked
    ]
    for i in range(max(1, config.questions // 40)):
        meta = META.format(p=PROMPT, s=40 + i, k=50 - i)
        items.append(
            _Item(ChatRequest.of(meta, n=8, temperature=1.0, seed=i, max_tokens=200), None)
        )
    return items


async def _send_all(gateway: Gateway, items: Sequence[_Item]) -> int:
    correct = 0

    async def one(item: _Item) -> None:
        nonlocal correct
        completion = await gateway.chat("sim", item.request)
        if item.target is not None and _last_answer(completion.text) == _norm(item.target):
            correct += 1

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(one, item)
    return correct


def _last_answer(text: str) -> str:
    match = re.search(r"answer is\s*(.+?)\.?\s*$", text.strip(), re.IGNORECASE | re.DOTALL)
    return _norm(match.group(1) if match else text.strip().splitlines()[-1])


def _norm(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def _report(label: str, gateway: Gateway, correct: int, total: int, wall_s: float) -> None:
    s = gateway.statistics()["sim"]
    retries = ", ".join(f"{k} {v}" for k, v in sorted(s.retries.items())) or "none"
    p50 = f"{s.latency_p50_s * 1000:.0f} ms" if s.latency_p50_s is not None else "-"
    p95 = f"{s.latency_p95_s * 1000:.0f} ms" if s.latency_p95_s is not None else "-"
    print(f"\n== {label}: {total} gateway calls in {wall_s:.2f} s")
    print(f"  HTTP requests {s.requests:>6}   cache hits {s.cache_hits:>6}   failures {s.failures}")
    print(f"  retries       {s.retries_total:>6}   ({retries})")
    print(f"  tokens in/out {s.input_tokens}/{s.output_tokens}   cost ${s.cost_usd:.4f}")
    print(f"  latency p50 {p50}, p95 {p95}   task answers correct: {correct}")
