"""A run's totals: one type, summed once from the gateway, added up over sessions, and written
to results.json in its documented shape."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.cli._run import previous_totals
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import RunTotals
from pipeline.runner._results import RunMeta, results_document, run_totals

PRICED = EndpointConfig(name="fake", model="m", price=Price(input_per_mtok=1e6))
DOCUMENTED = [
    "calls",
    "batches",
    "batch_requests",
    "cache_hits",
    "retries",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "wall_s",
]


async def test_run_totals_sum_every_endpoint_and_read_the_budget() -> None:
    budget = Budget(run_caps=Caps(usd=50.0))
    async with open_gateway([PRICED], transports={"fake": FakeTransport()}, budget=budget) as gw:
        await gw.chat("fake", ChatRequest.of("one two three", n=2))
        totals = run_totals(gw, wall_s=3.5)
    assert totals.calls == 1
    assert totals.input_tokens == 4
    assert totals.output_tokens == 10  # two choices of five words (the fake counts words)
    assert totals.cost_usd == pytest.approx(4.0)
    assert (totals.wall_s, totals.cost_known) == (3.5, True)


async def test_run_totals_know_the_cost_is_unknown_after_an_unpriced_call() -> None:
    unpriced = EndpointConfig(name="fake", model="an-unknown-model", price=None)
    async with open_gateway([unpriced], transports={"fake": FakeTransport()}) as gw:
        await gw.chat("fake", ChatRequest.of("one"))
        totals = run_totals(gw, wall_s=1.0)
    assert not totals.cost_known


def test_totals_add_field_by_field() -> None:
    one = RunTotals(calls=1, cache_hits=2, retries=3, rate_limited=1, input_tokens=4)
    two = RunTotals(calls=10, output_tokens=5, cost_usd=0.5, wall_s=2.0, cost_known=False)
    total = one + two
    assert (total.calls, total.cache_hits, total.retries, total.rate_limited) == (11, 2, 3, 1)
    assert (total.input_tokens, total.output_tokens) == (4, 5)
    assert (total.cost_usd, total.wall_s, total.cost_known) == (0.5, 2.0, False)


def test_previous_totals_add_the_last_stats_sample_of_each_earlier_session() -> None:
    def stats(requests: int, rate_limited: int = 0) -> dict[str, Any]:
        row = {"requests": requests, "retries": 1, "rate_limited": rate_limited}
        return {"event": "stats", "spent_usd": 9.0, "endpoints": {"a": row, "b": row}}

    events = [
        {"event": "run_started"},
        stats(1),
        stats(5, rate_limited=1),
        {"event": "run_started"},
        stats(2),
    ]
    totals = previous_totals(events)
    assert (totals.calls, totals.retries, totals.rate_limited) == (14, 4, 2)
    assert (totals.cost_usd, totals.wall_s) == (0.0, 0.0)  # the budget holds earlier spend


def document(totals: RunTotals) -> dict[str, object]:
    meta = RunMeta(
        run_id="r",
        started_at="t0",
        finished_at="t1",
        status="finished",
        config_path="c.toml",
        strategy={},
    )
    return results_document(
        (), meta=meta, budget=Budget(), caps=Caps(), totals=totals, endpoints={}
    )


def test_results_json_totals_keep_their_documented_shape() -> None:
    totals = RunTotals(calls=3, rate_limited=2, cost_usd=0.25, wall_s=1.23456)
    written = document(totals)["totals"]
    assert isinstance(written, dict)
    assert list(written) == DOCUMENTED
    assert (written["calls"], written["cost_usd"], written["wall_s"]) == (3, 0.25, 1.235)


def test_results_json_costs_are_null_when_unknown() -> None:
    written = document(RunTotals(cost_usd=0.25, cost_known=False))
    assert written["totals"]["cost_usd"] is None  # type: ignore[index]
    assert written["budget"]["spent_usd"] is None  # type: ignore[index]
