"""``gpo estimate`` for endpoints that use their provider's batch API (``batch = "eval"|"all"``).

Cost: the calls that go into batches (evaluation's with "eval", every call with "all") at the
endpoint's batch price (:func:`pipeline.llm._pricing.batch_price`), the rest at its realtime
price. Wall time: a job's steps wait for their batches one after another, so a job takes about
(its chain of batch round trips) x (a batch's latency), and the jobs run ``max_active_jobs`` at a
time; a batch's latency is not known in advance, so it is a stated assumption
(:data:`BATCH_LATENCY_S`, ``gpo estimate --batch-latency-min``).
"""

from __future__ import annotations

import math

from pipeline.llm._endpoint import EndpointConfig
from stages.messages import JobContext

BATCH_LATENCY_S = 1800.0
"""The assumed time from creating a batch to its results (providers promise 24 h; small batches
usually take minutes to an hour)."""


def batching(config: EndpointConfig | None) -> str:
    return "off" if config is None else config.batch.mode


def batch_rounds(ctx: JobContext, configs: dict[str, EndpointConfig]) -> int:
    """A job's chain of batch round trips: the initial scoring, per step its evaluation (one
    per racing round) and, with "all" on the optimizer's endpoint, its optimizer call, then
    the test scoring. 0 when none of its calls batch."""
    task = batching(configs.get(ctx.task_endpoint))
    optimizer = batching(configs.get(ctx.optimizer_endpoint))
    per_step = 0
    if task != "off":
        per_step += ctx.strategy.racing_rounds if ctx.strategy.evaluation == "racing" else 1
    if optimizer == "all":
        per_step += 2 if ctx.strategy.reflection else 1
    evaluation = 2 if task != "off" else 0
    return evaluation + per_step * ctx.total_steps if per_step or evaluation else 0


def batch_wall_s(rounds: list[int], max_active_jobs: int, latency_s: float) -> float | None:
    """The expected wall time of the batched run: waves of ``max_active_jobs`` jobs, each as
    long as its longest chain of round trips (None when nothing batches)."""
    if not rounds or not max(rounds):
        return None
    ordered = sorted(rounds, reverse=True)
    waves = [ordered[i] for i in range(0, len(ordered), max_active_jobs)]
    assert math.isfinite(latency_s)
    return sum(waves) * latency_s
