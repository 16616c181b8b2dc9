"""``results.json``: what a run produced, in a stable, documented shape (schema 1).

Written atomically (a temporary file renamed over the old one), so a reader never sees half a
file. Jobs that had not ended when a run was interrupted appear with status ``interrupted``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline.llm._budget import Budget, Caps
from pipeline.llm._gateway import Gateway
from pipeline.llm._pricing import Price
from pipeline.llm._stats import EndpointStatistics
from pipeline.runner._jobs import JobResult, RunTotals

SCHEMA = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunMeta:
    run_id: str
    started_at: str
    finished_at: str
    status: str
    config_path: str
    strategy: Mapping[str, Any]


def run_totals(gateway: Gateway, *, wall_s: float) -> RunTotals:
    """Every endpoint's statistics summed, with the run's spend from the budget (which holds
    what earlier sessions of a resumed run spent, preloaded from its ledger)."""
    stats = gateway.statistics().values()
    return RunTotals(
        calls=sum(s.requests + s.batch_requests for s in stats),
        batches=sum(s.batches for s in stats),
        batch_requests=sum(s.batch_requests for s in stats),
        cache_hits=sum(s.cache_hits for s in stats),
        retries=sum(s.retries_total for s in stats),
        rate_limited=sum(s.rate_limited for s in stats),
        input_tokens=sum(s.input_tokens for s in stats),
        output_tokens=sum(s.output_tokens for s in stats),
        cost_usd=gateway.budget.state().spent_usd,
        wall_s=wall_s,
        cost_known=gateway.cost_known,
    )


def results_document(
    jobs: tuple[JobResult, ...],
    *,
    meta: RunMeta,
    budget: Budget,
    caps: Caps,
    totals: RunTotals,
    endpoints: Mapping[str, EndpointStatistics],
    prices: Mapping[str, Price | None] | None = None,
) -> dict[str, Any]:
    """The document; when ``totals.cost_known`` is False (an endpoint without a price was
    called), every cost is ``null`` (unknown), never a misleading $0."""
    spent = budget.state()
    prices = prices or {}
    known = totals.cost_known
    spent_usd = spent.spent_usd if known else None
    return {
        "schema": SCHEMA,
        **dataclasses.asdict(meta),
        "budget": {
            "cap_usd": caps.usd,
            "spent_usd": spent_usd,
            "cap_tokens": caps.tokens,
            "spent_tokens": spent.spent_tokens,
        },
        "prices": {name: p.describe() if p else None for name, p in prices.items()},
        "jobs": [_job(j, known) for j in jobs],
        "totals": _totals(totals),
        "endpoints": {
            name: _endpoint(s, prices.get(name, Price())) for name, s in endpoints.items()
        },
    }


def _totals(totals: RunTotals) -> dict[str, Any]:
    """The documented shape: the counters, the cost (null when unknown), the wall time."""
    counters = {f: getattr(totals, f) for f in _TOTALS}
    cost = totals.cost_usd if totals.cost_known else None
    return {**counters, "cost_usd": cost, "wall_s": round(totals.wall_s, 3)}


_TOTALS = (
    "calls",
    "batches",
    "batch_requests",
    "cache_hits",
    "retries",
    "input_tokens",
    "output_tokens",
)


def _job(job: JobResult, cost_known: bool) -> dict[str, Any]:
    data = dataclasses.asdict(job)
    data["unextractable_share"] = job.unextractable_share
    if not cost_known:
        data["cost_usd"] = None
    return data


def _endpoint(stats: EndpointStatistics, price: Price | None) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    data.pop("endpoint")
    if price is None:
        data["cost_usd"] = None
    return data


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)
