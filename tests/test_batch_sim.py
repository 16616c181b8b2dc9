"""Provider batches end to end: the gateway's batcher, the HTTP transport's batch wire and the
simulator's batch APIs (OpenAI and Anthropic) over loopback; a session killed with a batch in
flight and a resumed one that adopts it; ``gpo run`` in batch mode equal to realtime."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.llm._cache import MemoryCache, ResponseCache
from pipeline.llm._endpoint import BatchPolicy, EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest, Completion
from pipeline.llm.batch import BatchLog, open_batch_log
from pipeline.sim.server import SimConfig, Simulator, open_simulator
from tests.cli_helpers import run_gpo

RETRY = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, retry_after_cap_s=1.0)
PRICE = Price(
    input_per_mtok=0.15, output_per_mtok=0.6, batch_input_per_mtok=0.075, batch_output_per_mtok=0.3
)


@asynccontextmanager
async def batch_gateway(
    sim: Simulator,
    *,
    kind: str = "openai",
    mode: str = "eval",
    journal: BatchLog | None = None,
    cache: ResponseCache | None = None,
    **policy: Any,
) -> AsyncIterator[Gateway]:
    config = EndpointConfig(
        name="sim",
        kind=kind,  # type: ignore[arg-type]
        model="sim-1",
        base_url=sim.base_url,
        retry=RETRY,
        price=PRICE,
        batch=BatchPolicy(mode=mode, linger_s=0.05, poll_s=0.05, max_poll_s=0.1, **policy),  # type: ignore[arg-type]
    )
    async with open_gateway(
        [config], cache=cache, rng=random.Random(1), batch_log=journal
    ) as gateway:
        yield gateway


def questions(count: int) -> list[ChatRequest]:
    return [ChatRequest.of(f"What is {i} plus {i}?", seed=i, max_tokens=32) for i in range(count)]


async def ask(gateway: Gateway, requests: list[ChatRequest], **kw: Any) -> list[Completion]:
    out: dict[int, Completion] = {}

    async def one(i: int) -> None:
        out[i] = await gateway.chat("sim", requests[i], **kw)

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    return [out[i] for i in range(len(requests))]


async def test_a_batch_answers_as_realtime_does_at_the_batch_price() -> None:
    async with open_simulator(SimConfig(batch_delay_s=0.2)) as sim:
        async with batch_gateway(sim) as gw:
            batched = await ask(gw, questions(12), deferrable=True)
            realtime = await ask(gw, [q.with_(seed=q.seed) for q in questions(12)])
        stats = sim.stats
    assert stats.batches_created == 1
    assert stats.batch_sizes == [12]
    assert [c.text for c in batched] == [c.text for c in realtime]
    assert all(c.cached for c in realtime)  # the batch's answers were cached
    for c in batched:
        full = PRICE.cost(c.usage.input_tokens, c.usage.output_tokens)
        assert c.cost_usd == pytest.approx(full / 2)


async def test_anthropic_message_batches_through_the_simulator() -> None:
    async with (
        open_simulator(SimConfig(batch_delay_s=0.2)) as sim,
        batch_gateway(sim, kind="anthropic", mode="all") as gw,
    ):
        answers = await ask(gw, questions(5))
        stats = sim.stats
    assert stats.batches_created == 1
    assert all(a.text for a in answers)
    assert stats.batch_input_tokens == sum(a.usage.input_tokens for a in answers)


async def test_a_killed_session_batch_is_adopted_and_never_submitted_twice(tmp_path: Path) -> None:
    cache = MemoryCache()
    path = tmp_path / "batches.sqlite"
    async with open_simulator(SimConfig(batch_delay_s=1.0)) as sim:
        async with (
            open_batch_log(path) as journal,
            batch_gateway(sim, journal=journal, cache=cache) as gw,
        ):
            with anyio.move_on_after(0.5):  # killed while the batch runs
                await ask(gw, questions(6), deferrable=True)
        assert sim.stats.batches_created == 1
        async with (
            open_batch_log(path) as journal,
            batch_gateway(sim, journal=journal, cache=cache) as gw,
        ):
            answers = await ask(gw, questions(6), deferrable=True)
            adopted = gw.statistics()["sim"].batches_adopted
        stats = sim.stats
    assert stats.batches_created == 1
    assert stats.batches_duplicated == 0
    assert adopted == 1
    assert all(a.cached and a.text for a in answers)


async def test_failed_batches_and_failed_requests_are_sent_again() -> None:
    config = SimConfig(batch_delay_s=0.1, batch_fail_rate=0.3, batch_error_rate=0.3, seed=3)
    async with open_simulator(config) as sim:
        async with batch_gateway(sim, retries=8) as gw:
            answers = await ask(gw, questions(20), deferrable=True)
            retries = gw.statistics()["sim"].batch_retries
        stats = sim.stats
    assert all(a.text for a in answers)
    assert retries > 0
    assert stats.batches_created > 1
    assert stats.batches_duplicated == 0  # re-sending failed work is not a duplicate


DEMO = """
[run]
seed = 3
[simulator]
seed = 3
batch_delay_s = 0.2
[endpoints.sim]
kind = "simulator"
price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }
BATCH
[optimizer]
preset = "gpo"
candidates = 4
epochs = 1
batch_size = 8
[[jobs]]
data = "builtin:arithmetic"
dev_size = 8
test_size = 8
"""


def test_gpo_run_in_batch_mode_equals_realtime_at_about_half_the_cost(tmp_path: Path) -> None:
    outcomes = {}
    for name, keys in (
        ("rt", ""),
        ("bt", 'batch = "eval"\nbatch_linger_s = 0.1\nbatch_poll_s = 0.05'),
    ):
        config = tmp_path / f"{name}.toml"
        config.write_text(DEMO.replace("BATCH", keys))
        done = run_gpo(["run", str(config), "--run-dir", str(tmp_path / name)], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outcomes[name] = orjson.loads((tmp_path / name / "results.json").read_bytes())
    rt, bt = outcomes["rt"], outcomes["bt"]
    assert [j["best_prompt"] for j in bt["jobs"]] == [j["best_prompt"] for j in rt["jobs"]]
    assert [j["best_test_score"] for j in bt["jobs"]] == [j["best_test_score"] for j in rt["jobs"]]
    assert bt["totals"]["batches"] > 0
    assert bt["totals"]["batch_requests"] > 0
    ratio = bt["budget"]["spent_usd"] / rt["budget"]["spent_usd"]
    assert 0.45 < ratio < 0.6


async def test_expired_batches_are_retried_then_sent_realtime_when_the_user_chose_so() -> None:
    config = SimConfig(batch_delay_s=5.0, batch_expire_s=0.2)  # every batch expires unfinished
    async with open_simulator(config) as sim:
        async with batch_gateway(sim, retries=1, fallback="realtime") as gw:
            answers = await ask(gw, questions(4), deferrable=True)
            stats = gw.statistics()["sim"]
        sim_stats = sim.stats
    assert all(a.text for a in answers)
    assert sim_stats.batches_created == 2  # the first and its one retry
    assert sim_stats.batch_requests_expired > 0
    assert stats.batch_realtime == 4
    assert stats.requests == 4  # then realtime, once each


def test_racing_rounds_go_through_batches_with_the_same_results(tmp_path: Path) -> None:
    outcomes = {}
    for name, keys in (
        ("rt", ""),
        ("bt", 'batch = "eval"\nbatch_linger_s = 0.1\nbatch_poll_s = 0.05'),
    ):
        config = tmp_path / f"{name}.toml"
        text = DEMO.replace("BATCH", keys).replace(
            "epochs = 1", 'epochs = 1\nevaluation = "racing"'
        )
        config.write_text(text)
        done = run_gpo(["run", str(config), "--run-dir", str(tmp_path / name)], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outcomes[name] = orjson.loads((tmp_path / name / "results.json").read_bytes())
    rt, bt = outcomes["rt"], outcomes["bt"]
    assert [j["best_prompt"] for j in bt["jobs"]] == [j["best_prompt"] for j in rt["jobs"]]
    steps = sum(len(j["step_records"]) for j in bt["jobs"])
    # Without racing a step is one batch; with it, one per round (4), and scoring the initial
    # prompt and the test split take theirs.
    assert bt["totals"]["batches"] > steps + 2
