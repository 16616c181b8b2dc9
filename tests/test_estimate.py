"""``gpo estimate``: requests where an endpoint has no ``n``, unknown and known prices in the
rendered table, and the estimate against a real run on the simulator."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.llm._endpoint import BatchPolicy, EndpointConfig, RetryPolicy
from pipeline.llm._gateway import open_gateway
from pipeline.llm._pricing import Price
from pipeline.runner._estimate import (
    RACING_SHARE,
    EndpointEstimate,
    Estimate,
    estimate,
    render,
)
from pipeline.runner._jobs import Job, OptimizerSettings
from pipeline.runner._run import optimize
from pipeline.sim.server import SimConfig, open_simulator
from pipeline.sim.tasks import Task, builtin_tasks
from stages.strategy import strategy
from tests.cli_helpers import gpo_env, run_gpo

PRICE = Price(input_per_mtok=0.15, output_per_mtok=0.60)
SETTINGS = OptimizerSettings(strategy=strategy("gpo", epochs=1))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST_RETRY = RetryPolicy(max_attempts=6, base_s=0.01, cap_s=0.05, retry_after_cap_s=1.0)


def builtin(name: str) -> Task:
    return next(t for t in builtin_tasks() if t.name == name)


def endpoint(name: str, **changes: Any) -> EndpointConfig:
    values: dict[str, Any] = {"model": "sim-1", "base_url": "http://127.0.0.1:9/v1", "price": PRICE}
    return EndpointConfig(name=name, **(values | changes))


def job(task: str = "arithmetic", **changes: Any) -> Job:
    examples = builtin(task).examples
    values: dict[str, Any] = {"task_endpoint": "task", "optimizer_endpoint": "opt"}
    values |= {"dev_size": 16, "test_size": 16}
    return Job(name=task, examples=examples, **(values | changes))


def optimizer_usage(optimizer: EndpointConfig) -> EndpointEstimate:
    return estimate([job()], SETTINGS, [endpoint("task"), optimizer]).endpoints["opt"]


# --- endpoints without n ------------------------------------------------------------------------


def test_supports_n_false_asks_once_per_candidate_each_repeating_the_input() -> None:
    with_n = optimizer_usage(endpoint("opt"))
    without_n = optimizer_usage(endpoint("opt", supports_n=False))
    candidates = SETTINGS.strategy.candidates
    assert with_n.requests > 0
    assert without_n.requests == candidates * with_n.requests
    assert without_n.input_tokens == candidates * with_n.input_tokens
    assert without_n.output_tokens == with_n.output_tokens


def test_an_anthropic_endpoint_is_asked_once_per_candidate() -> None:
    with_n = optimizer_usage(endpoint("opt"))
    anthropic = optimizer_usage(endpoint("opt", kind="anthropic"))
    candidates = SETTINGS.strategy.candidates
    assert anthropic.requests == candidates * with_n.requests
    assert anthropic.input_tokens == candidates * with_n.input_tokens


def test_the_worst_case_counts_every_choice_asked_alone_and_every_reask() -> None:
    usage = optimizer_usage(endpoint("opt", supports_n=False))
    plan = SETTINGS.strategy
    assert usage.requests_worst == (1 + plan.max_reasks) * usage.requests
    assert usage.input_worst >= (1 + plan.max_reasks) * usage.input_tokens


# --- prices -------------------------------------------------------------------------------------


def unpriced(name: str) -> EndpointConfig:
    config = endpoint(
        name, model="no-such-model-for-gpo", base_url="http://localhost:8000/v1", price=None
    )
    assert config.effective_price is None
    return config


def test_an_unknown_price_shows_unknown_never_zero_dollars() -> None:
    result = estimate([job(optimizer_endpoint=None)], SETTINGS, [unpriced("task")])
    text = render(result)
    assert (result.usd, result.usd_worst) == (None, None)
    assert "cost: unknown expected, unknown worst case" in text
    assert "$0" not in text
    assert "unknown: no price is known for model 'no-such-model-for-gpo'" in price_line(
        text, "task"
    )


def test_one_unknown_price_makes_the_total_unknown_while_the_others_show_theirs() -> None:
    result = estimate([job()], SETTINGS, [unpriced("task"), endpoint("opt")])
    text = render(result)
    assert result.usd is None
    assert result.endpoints["opt"].usd is not None
    assert result.endpoints["opt"].usd > 0
    assert "cost: unknown expected" in text
    assert f"${result.endpoints['opt'].usd:,.4f}" in price_line(text, "opt")


def price_line(text: str, name: str) -> str:
    cost = text.split("cost:", 1)[1]
    lines = [line for line in cost.splitlines() if line.split()[:1] == [name]]
    assert len(lines) == 1, text
    return lines[0]


def test_each_endpoint_shows_its_price_with_its_source_and_date() -> None:
    listed = Price(
        input_per_mtok=0.15,
        output_per_mtok=0.6,
        source="genai-prices 0.2.3: openai gpt-4o-mini",
        as_of="2026-12-01",
    )
    result = estimate([job()], SETTINGS, [endpoint("task", price=listed), endpoint("opt")])
    text = render(result)
    task = price_line(text, "task")
    assert "$0.15 / $0.6 per M tokens in / out" in task
    assert "genai-prices 0.2.3: openai gpt-4o-mini" in task
    assert "2026-12-01" in task
    assert "(config)" in price_line(text, "opt")


def test_the_rendered_estimate_states_its_answer_assumption() -> None:
    endpoints = [endpoint("task"), endpoint("opt")]
    real = words(render(estimate([job()], SETTINGS, endpoints)))
    simulated = words(render(estimate([job()], SETTINGS, endpoints, simulated={"task"})))
    assert "task answers of 150 tokens of reasoning plus the gold answer" in real
    assert "simulator" not in real
    assert "(task: the simulator's one reasoning line, about 15 tokens, plus the answer)" in (
        simulated
    )


def words(text: str) -> str:
    return " ".join(text.split())


def test_gpo_estimate_of_a_simulator_config_assumes_the_simulators_short_answers() -> None:
    done = run_gpo(["estimate", str(EXAMPLES / "sim_demo.toml")], cwd=EXAMPLES, env=gpo_env(None))
    assert done.returncode == 0, done.stderr
    assert "sim: the simulator's one reasoning line" in words(done.stdout)
    assert "$0.15 / $0.6 per M tokens in / out (config)" in price_line(done.stdout, "sim")


# --- against a run ------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # 19 s at a load average of 12 on 2 cores
async def test_the_estimate_comes_within_its_targets_of_a_simulated_run() -> None:
    """Task and embedding calls on one endpoint, candidates on another without ``n``: requests
    within 10 %, tokens and dollars within a factor of 1.5, and the worst case above the run."""
    roles = {"task_endpoint": "sim", "optimizer_endpoint": "opt", "embedding_endpoint": "sim"}
    jobs = [
        job(name, dev_size=24, test_size=24, **roles)
        for name in ("arithmetic", "object_counting", "word_sorting")
    ]
    with anyio.fail_after(240):
        async with open_simulator(SimConfig(seed=0)) as sim:
            configs = [
                endpoint("sim", base_url=sim.base_url, retry=FAST_RETRY),
                endpoint("opt", base_url=sim.base_url, retry=FAST_RETRY, supports_n=False),
            ]
            predicted = estimate(jobs, SETTINGS, configs, simulated={"sim", "opt"})
            async with open_gateway(configs, rng=random.Random(0)) as gateway:
                await optimize(gateway, jobs, SETTINGS)
                actual = gateway.statistics()
    assert set(predicted.endpoints) == {"sim", "opt"}
    for name, usage in predicted.endpoints.items():
        run = actual[name]
        assert run.retries_total == 0  # no faults: every request is a first attempt
        assert_close(usage.requests, run.requests, 1.10, f"{name} requests")
        assert_close(usage.input_tokens, run.input_tokens, 1.5, f"{name} input tokens")
        assert_close(usage.output_tokens, run.output_tokens, 1.5, f"{name} output tokens")
        assert usage.usd is not None
        assert usage.usd_worst is not None
        assert_close(usage.usd, run.cost_usd, 1.5, f"{name} dollars")
        assert usage.requests_worst >= run.requests
        assert usage.input_worst >= run.input_tokens
        assert usage.output_worst >= run.output_tokens
        assert usage.usd_worst >= run.cost_usd
    assert_total(predicted, sum(s.cost_usd for s in actual.values()))


def assert_close(expected: float, actual: float, factor: float, what: str) -> None:
    assert actual > 0, what
    assert 1 / factor <= expected / actual <= factor, f"{what}: {expected} vs {actual}"


def assert_total(predicted: Estimate, spent: float) -> None:
    assert predicted.usd is not None
    assert predicted.usd_worst is not None
    assert_close(predicted.usd, spent, 1.5, "total dollars")
    assert predicted.usd_worst >= spent


def test_racing_expects_a_share_of_the_step_calls_and_at_worst_all_of_them() -> None:
    racing = OptimizerSettings(strategy=strategy("gpo", epochs=1, evaluation="racing"))
    endpoints = [endpoint("task"), endpoint("opt")]
    full = estimate([job()], SETTINGS, endpoints)
    raced = estimate([job()], racing, endpoints)
    per_step = SETTINGS.strategy.candidates * 16  # dev 16
    saved = full.endpoints["task"].requests - raced.endpoints["task"].requests
    assert saved == full.steps * (per_step - round(per_step * RACING_SHARE)) > 0
    assert raced.endpoints["task"].requests_worst == full.endpoints["task"].requests_worst
    assert "Racing jobs" in render(raced)
    assert "Racing" not in render(full)


# --- provider batches ---------------------------------------------------------------------------


def test_batching_evaluation_halves_its_cost_and_leaves_the_optimizers() -> None:
    half = Price(
        input_per_mtok=0.15,
        output_per_mtok=0.6,
        batch_input_per_mtok=0.075,
        batch_output_per_mtok=0.3,
    )
    plain = [endpoint("task", price=half), endpoint("opt", price=half)]
    batched = [endpoint("task", price=half, batch=BatchPolicy(mode="eval")), plain[1]]
    realtime = estimate([job()], SETTINGS, plain)
    result = estimate([job()], SETTINGS, batched)
    task, opt = result.endpoints["task"], result.endpoints["opt"]
    assert realtime.usd_batch is None
    assert task.usd is not None
    assert task.usd_batch == pytest.approx(task.usd / 2)
    assert opt.usd_batch is None
    assert result.usd_batch == pytest.approx(task.usd / 2 + (opt.usd or 0))
    assert result.usd == pytest.approx(realtime.usd or 0)


def test_the_batched_wall_time_follows_the_stated_latency_and_the_chain_of_batches() -> None:
    configs = [endpoint("task", batch=BatchPolicy(mode="eval")), endpoint("opt")]
    one = estimate([job()], SETTINGS, configs, batch_latency_s=600)
    steps = one.steps
    assert one.batch_rounds == [steps + 2]  # initial scoring, a batch per step, test scoring
    assert one.batch_wall_s == pytest.approx((steps + 2) * 600)
    racing = OptimizerSettings(strategy=strategy("gpo", epochs=1, evaluation="racing"))
    raced = estimate([job()], racing, configs, batch_latency_s=600)
    assert raced.batch_rounds == [4 * steps + 2]  # a batch per racing round
    waves = OptimizerSettings(strategy=strategy("gpo", epochs=1), max_active_jobs=1)
    two = estimate([job(), job("word_sorting")], waves, configs, batch_latency_s=600)
    assert two.batch_wall_s == pytest.approx(2 * (steps + 2) * 600)  # one job at a time
    text = render(one)
    assert "with provider batches (task)" in text
    assert "at 10m 00s per batch" in text
