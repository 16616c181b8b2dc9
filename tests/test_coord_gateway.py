"""Gateways of several "processes" (each its own Redis client and session, as replicas of an app
would have) sharing one rate limit, one budget cap, one cache and single-flight through a real
redis-server, against the simulator over loopback; what reached the simulator is the truth."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from pipeline.coord._open import open_coordination
from pipeline.errors import BudgetExhausted, ConfigError, RetriesExhausted
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest
from pipeline.sim.server import SimConfig, Simulator, open_simulator
from tests.redis_server import RedisServer

RETRY = RetryPolicy(max_attempts=6, base_s=0.05, cap_s=0.5, retry_after_cap_s=2.0)
PRICE = Price(input_per_mtok=0.15, output_per_mtok=0.6)


def endpoint(sim: Simulator, *, rpm: float | None = None) -> EndpointConfig:
    return EndpointConfig(
        name="sim", model="sim-1", base_url=sim.base_url, retry=RETRY, price=PRICE, rpm=rpm
    )


@asynccontextmanager
async def replicas(
    url: str, sim: Simulator, count: int, *, rpm: float | None = None, cap: float | None = None
) -> AsyncIterator[list[Gateway]]:
    """``count`` gateways, each on its own coordination session of one run."""
    async with AsyncExitStack() as stack:
        gateways = []
        for i in range(count):
            coordination = await stack.enter_async_context(open_coordination(url, run="r1"))
            gateways.append(
                await stack.enter_async_context(
                    open_gateway(
                        [endpoint(sim, rpm=rpm)],
                        budget=Budget(run_caps=Caps(usd=cap)),
                        rng=random.Random(i),
                        coordination=coordination,
                    )
                )
            )
        yield gateways


def question(i: int) -> ChatRequest:
    return ChatRequest.of(f"What is {i} plus {i}?", seed=i, max_tokens=64)


async def ask_all(gateways: Sequence[Gateway], per_gateway: int) -> list[int]:
    """Distinct questions from every gateway at once; how many each got answered (a budget
    refusal ends that gateway's asking)."""
    answered = [0] * len(gateways)

    async def one(g: int, i: int) -> None:
        try:
            await gateways[g].chat("sim", question(g * 100_000 + i))
        except BudgetExhausted:
            return
        answered[g] += 1

    async with anyio.create_task_group() as tg:
        for g in range(len(gateways)):
            for i in range(per_gateway):
                tg.start_soon(one, g, i)
    return answered


def billed_usd(sim: Simulator) -> float:
    stats = sim.stats
    return PRICE.cost(stats.billed_input_tokens, stats.billed_output_tokens)


async def test_four_replicas_share_one_rate_limit(redis_url: str) -> None:
    rpm = 3000.0  # 50 requests/s; the simulator refuses past it with 429s
    async with open_simulator(SimConfig(rpm=rpm, seed=3)) as sim:
        async with replicas(redis_url, sim, 4, rpm=rpm) as gateways:
            start = anyio.current_time()
            answered = await ask_all(gateways, 40)
            elapsed = anyio.current_time() - start
        assert answered == [40] * 4
        # each replica alone would send at 50/s: together 200/s and most of them refused
        assert sim.stats.rate_limited <= 2, sim.stats.rate_limited
        assert elapsed >= (160 - rpm / 60) / (rpm / 60) * 0.9


async def test_without_coordination_the_same_replicas_overrun_the_limit() -> None:
    """The contrast that makes the test above meaningful: separate limiters overrun."""
    rpm = 3000.0
    async with open_simulator(SimConfig(rpm=rpm, seed=3)) as sim:
        async with AsyncExitStack() as stack:
            gateways = [
                await stack.enter_async_context(
                    open_gateway([endpoint(sim, rpm=rpm)], rng=random.Random(i))
                )
                for i in range(4)
            ]
            with pytest.raises(BaseExceptionGroup) as gave_up:  # some run out of retries
                await ask_all(gateways, 40)
        assert gave_up.group_contains(RetriesExhausted)
        assert sim.stats.rate_limited > 10


async def test_a_shared_cap_holds_over_every_replica_counted_at_the_server(
    redis_url: str,
) -> None:
    cap = 0.002
    async with open_simulator(SimConfig(seed=5, latency_ms=20)) as sim:
        async with replicas(redis_url, sim, 4, cap=cap) as gateways:
            answered = await ask_all(gateways, 150)
            spent = [g.budget.state().spent_usd for g in gateways]
        assert sum(answered) < 600, "the cap must have stopped the replicas"
        assert billed_usd(sim) <= cap
        assert sum(spent) == pytest.approx(billed_usd(sim), rel=1e-6)
        assert billed_usd(sim) >= 0.8 * cap, "the cap is spent, not hoarded"


async def test_one_request_in_flight_in_two_replicas_is_sent_once(redis_url: str) -> None:
    async with open_simulator(SimConfig(seed=7, latency_ms=200, latency_sigma=0)) as sim:
        async with replicas(redis_url, sim, 2) as (a, b):
            results = []

            async def ask(gateway: Gateway) -> None:
                results.append(await gateway.chat("sim", question(1)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, a)
                tg.start_soon(ask, b)
            later = await b.chat("sim", question(1))
        assert sim.stats.requests["/v1/chat/completions"] == 1
        assert results[0].choices == results[1].choices == later.choices
        assert sorted(r.cached for r in results) == [False, True]
        assert later.cached


async def test_a_redis_restart_mid_run_pauses_and_loses_no_spend(
    redis_url: str, redis_server: RedisServer
) -> None:
    cap = 1.0
    async with open_simulator(SimConfig(seed=9, latency_ms=30)) as sim:
        async with replicas(redis_url, sim, 2, cap=cap) as gateways:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask_all, gateways, 60)
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(redis_server.kill)
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(redis_server.start)
            for gateway in gateways:
                assert gateway.budget.open_reservations == 0
            local = sum(g.budget.state().spent_usd for g in gateways)
        async with open_coordination(redis_url) as reader:
            totals = await reader.accounts.spent("run:r1")
        assert sim.stats.requests["/v1/chat/completions"] >= 120
        assert local == pytest.approx(billed_usd(sim), rel=1e-6)
        # every settlement reached Redis after the restart, or its reservation counts in full
        assert totals.reserved_pusd == 0
        assert totals.spent_pusd / 1e12 >= local - 1e-9


async def test_an_unreachable_redis_is_one_clear_config_error() -> None:
    with anyio.fail_after(20), pytest.raises(ConfigError, match="cannot reach Redis at redis://"):
        async with open_coordination("redis://127.0.0.1:1/0"):
            pass
