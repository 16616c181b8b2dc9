"""The gateway against the simulator over loopback: real HTTP, real faults, real limits."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from pipeline.errors import (
    AuthenticationFailed,
    BadRequest,
    BudgetExhausted,
    NotFound,
    QuotaExceeded,
)
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._cache import MemoryCache, ResponseCache
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._secret import Secret
from pipeline.llm._values import ChatRequest
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig, Simulator, open_simulator

FAST_RETRY = RetryPolicy(max_attempts=8, base_s=0.01, cap_s=0.05, retry_after_cap_s=2.0)


@asynccontextmanager
async def sim_gateway(
    sim_config: SimConfig,
    *,
    cache: ResponseCache | None = None,
    budget: Budget | None = None,
    **endpoint: Any,
) -> AsyncIterator[tuple[Simulator, Gateway]]:
    async with open_simulator(sim_config) as sim:
        config = EndpointConfig(
            name="sim", model="sim-1", base_url=sim.base_url, retry=FAST_RETRY, **endpoint
        )
        async with open_gateway(
            [config], cache=cache, budget=budget, rng=random.Random(1)
        ) as gateway:
            yield sim, gateway


def chat_requests(count: int, n: int = 1) -> list[ChatRequest]:
    return [
        ChatRequest.of(f"What is {i} plus {i}?", n=n, seed=i, max_tokens=64, temperature=0.7)
        for i in range(count)
    ]


async def gather(gateway: Gateway, requests: list[ChatRequest]) -> list[int]:
    counts: list[int] = []

    async def one(req: ChatRequest) -> None:
        counts.append(len((await gateway.chat("sim", req)).choices))

    async with anyio.create_task_group() as tg:
        for req in requests:
            tg.start_soon(one, req)
    return counts


async def test_mixed_faults_lose_nothing() -> None:
    faults = FaultSpec.parse("429=0.03,500=0.03,503=0.02,reset=0.01,truncate=0.01,no_usage=0.02")
    async with sim_gateway(SimConfig(seed=3, faults=faults)) as (sim, gateway):
        counts = await gather(gateway, chat_requests(300, n=2))
        stats = gateway.statistics()["sim"]
    assert counts == [2] * 300
    assert stats.retries_total > 0
    assert stats.requests == 300 + stats.retries_total
    assert sum(sim.stats.faults.values()) >= stats.retries_total


@pytest.mark.parametrize(
    ("endpoint", "sim_faults", "request_", "error"),
    [
        ({"api_key": Secret("sk-invalid")}, "", ChatRequest.of("hi"), AuthenticationFailed),
        ({}, "quota", ChatRequest.of("hi"), QuotaExceeded),
        ({}, "", ChatRequest.of("hi", temperature=5.0), BadRequest),  # a 400 not naming n
    ],
)
async def test_fatal_errors_are_not_retried(
    endpoint: dict[str, Any], sim_faults: str, request_: ChatRequest, error: type[Exception]
) -> None:
    sim_config = SimConfig(faults=FaultSpec.parse(sim_faults) if sim_faults else FaultSpec())
    async with sim_gateway(sim_config, **endpoint) as (sim, gateway):
        with pytest.raises(error):
            await gateway.chat("sim", request_)
        assert sum(sim.stats.requests.values()) == 1
        assert gateway.statistics()["sim"].retries_total == 0


async def test_a_429_pauses_the_whole_endpoint() -> None:
    # 120 RPM quantized to 2 per second: 8 concurrent requests must queue behind the pause.
    async with sim_gateway(SimConfig(rpm=120)) as (sim, gateway):
        started = anyio.current_time()
        counts = await gather(gateway, chat_requests(8))
        wall = anyio.current_time() - started
    assert counts == [1] * 8
    assert wall >= 2.5  # 8 requests at 2/s after a burst of 2
    # without an endpoint-wide pause every waiting request would hit 429 on every retry
    assert sim.stats.rate_limited <= 8


async def test_fewer_choices_are_topped_up() -> None:
    faults = FaultSpec.parse("fewer_choices=1")
    async with sim_gateway(SimConfig(faults=faults)) as (sim, gateway):
        completion = await gateway.chat("sim", chat_requests(1, n=8)[0])
    assert len(completion.choices) == 8
    assert completion.requests > 1
    assert sim.stats.choices_served == 8


async def test_second_identical_run_makes_no_http_call() -> None:
    cache = MemoryCache()
    async with sim_gateway(SimConfig(), cache=cache) as (sim, gateway):
        await gather(gateway, chat_requests(20, n=3))
        first = sum(sim.stats.requests.values())
        await gather(gateway, chat_requests(20, n=3))
        second = sum(sim.stats.requests.values()) - first
    assert first == 20
    assert second == 0


async def test_identical_concurrent_requests_are_sent_once() -> None:
    async with sim_gateway(SimConfig(latency_ms=30)) as (sim, gateway):
        counts = await gather(gateway, chat_requests(1) * 40)
    assert counts == [1] * 40
    assert sim.stats.requests["/v1/chat/completions"] == 1


async def test_budget_cap_holds_over_http() -> None:
    budget = Budget(run_caps=Caps(usd=0.002))
    price = Price(input_per_mtok=5.0, output_per_mtok=15.0)
    async with sim_gateway(SimConfig(), budget=budget, price=price) as (_, gateway):
        with pytest.raises(ExceptionGroup) as info:
            await gather(gateway, chat_requests(200))
    assert info.group_contains(BudgetExhausted)
    state = budget.state()
    assert state.spent_usd <= 0.002
    assert state.reserved_usd == 0


async def test_embeddings_go_through_the_gateway() -> None:
    async with sim_gateway(SimConfig()) as (sim, gateway):
        first = await gateway.embed("sim", ["sort these words", "sort the words", "add numbers"])
        again = await gateway.embed("sim", ["sort these words"])
    assert len(first.vectors) == 3
    assert again.cached
    assert again.vectors[0] == first.vectors[0]
    assert sim.stats.requests["/v1/embeddings"] == 1


# --- preflight: the chat route exists --------------------------------------------------------


@asynccontextmanager
async def gateway_at(sim: Simulator, base_url: str) -> AsyncIterator[Gateway]:
    price = Price(input_per_mtok=5.0, output_per_mtok=15.0)
    config = EndpointConfig(name="sim", model="sim-1", base_url=base_url, price=price)
    async with open_gateway([config], budget=Budget(run_caps=Caps(usd=1.0))) as gateway:
        yield gateway


@pytest.mark.parametrize("path", ["/wrong", ""])
async def test_preflight_refuses_a_base_url_without_a_chat_route(path: str) -> None:
    async with open_simulator(SimConfig()) as sim:
        base_url = sim.base_url + path if path else sim.base_url.removesuffix("/v1")
        async with gateway_at(sim, base_url) as gateway:
            with pytest.raises(NotFound) as info:
                await gateway.preflight()
    message = str(info.value)
    assert f"no chat route at {base_url}/chat/completions (HTTP 404)" in message
    assert "check base_url (it usually ends in /v1)" in message
    assert info.value.endpoint == "sim"


async def test_preflight_passes_the_right_base_url_and_pays_for_nothing() -> None:
    async with open_simulator(SimConfig()) as sim, gateway_at(sim, sim.base_url) as gateway:
        await gateway.preflight()
        stats = gateway.statistics()["sim"]
        spent = gateway.budget.state()
    assert sim.stats.requests["/v1/chat/completions"] == 1  # the probe, answered 400, not 500
    assert sim.stats.responses[400] == 1
    assert sim.stats.choices_served == 0
    assert (sim.stats.billed_input_tokens, sim.stats.billed_output_tokens) == (0, 0)
    assert (stats.requests, stats.cost_usd) == (0, 0.0)
    assert (spent.spent_usd, spent.reserved_usd) == (0.0, 0.0)
