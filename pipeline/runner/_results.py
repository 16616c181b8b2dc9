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
from pipeline.llm._pricing import Price
from pipeline.llm._stats import EndpointStatistics
from pipeline.runner._jobs import JobResult

SCHEMA = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunMeta:
    run_id: str
    started_at: str
    finished_at: str
    status: str
    config_path: str
    strategy: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """HTTP activity of this session plus the sessions before it (a resumed run)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{f: getattr(self, f) + getattr(other, f) for f in _COUNTERS})


_COUNTERS = ("calls", "cache_hits", "retries", "input_tokens", "output_tokens")


def counters_of(stats: Mapping[str, EndpointStatistics]) -> Counters:
    values = stats.values()
    return Counters(
        calls=sum(s.requests for s in values),
        cache_hits=sum(s.cache_hits for s in values),
        retries=sum(s.retries_total for s in values),
        input_tokens=sum(s.input_tokens for s in values),
        output_tokens=sum(s.output_tokens for s in values),
    )


def results_document(
    jobs: tuple[JobResult, ...],
    *,
    meta: RunMeta,
    budget: Budget,
    caps: Caps,
    counters: Counters,
    wall_s: float,
    endpoints: Mapping[str, EndpointStatistics],
    prices: Mapping[str, Price | None] | None = None,
) -> dict[str, Any]:
    """The document; with ``prices``, an endpoint called at an unknown price makes every cost
    ``null`` (unknown), never a misleading $0."""
    spent = budget.state()
    prices = prices or {}
    known = all(prices.get(n, Price()) is not None or not s.calls for n, s in endpoints.items())
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
        "totals": {
            **dataclasses.asdict(counters),
            "cost_usd": spent_usd,
            "wall_s": round(wall_s, 3),
        },
        "endpoints": {
            name: _endpoint(s, prices.get(name, Price())) for name, s in endpoints.items()
        },
    }


def _job(job: JobResult, cost_known: bool) -> dict[str, Any]:
    data = dataclasses.asdict(job)
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
