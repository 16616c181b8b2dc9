"""``gpo estimate``'s table: an :class:`~pipeline.runner._estimate.Estimate` for a person.

Requests and tokens per endpoint (expected and worst case), what they cost at which price, the
wall-time lower bound the rate limits set, and the assumptions behind the expected figures.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the estimate imports render from here: no import back at run time
    from pipeline.runner._estimate import Estimate


def render(result: Estimate) -> str:
    """The estimate as a table for a person, with the prices used and the assumptions made."""
    lines = [
        f"{result.jobs} jobs, {result.steps} optimization steps in all",
        "",
        f"{'endpoint':<16} {'requests':>10} {'(worst)':>10} {'tokens in':>12} "
        f"{'(worst)':>12} {'tokens out':>12} {'(worst)':>12}",
    ]
    for name, u in sorted(result.endpoints.items()):
        lines.append(
            f"{name:<16} {u.requests:>10,} {u.requests_worst:>10,} "
            f"{u.input_tokens:>12,} {u.input_worst:>12,} {u.output_tokens:>12,} "
            f"{u.output_worst:>12,}"
        )
    lines += ["", f"cost: {_usd(result.usd)} expected, {_usd(result.usd_worst)} worst case"]
    lines += [f"  {name:<14} {_endpoint_cost(result, name)}" for name in sorted(result.endpoints)]
    lines += [*_batched(result), _wall(result.min_wall_s), ""]
    return "\n".join(lines + _assumptions(result))


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def _endpoint_cost(result: Estimate, name: str) -> str:
    """The endpoint's cost (expected / worst) and the price it follows from, with its source."""
    usage, price = result.endpoints[name], result.prices.get(name)
    if price is None:
        return (
            f"unknown: no price is known for model {result.models.get(name, '?')!r} (set "
            "price = { input_per_mtok = ..., output_per_mtok = ... } to count it)"
        )
    cost = f"{_usd(usage.usd)} / {_usd(usage.usd_worst)}"
    if price.free:
        return f"{cost}  free" + ("" if price.source == "free" else f" ({price.source})")
    return f"{cost}  at {price.summary()}"


def _batched(result: Estimate) -> list[str]:
    """Where some endpoint batches: realtime and batch cost side by side, and the wall time at
    the stated latency per batch."""
    if result.usd_batch is None:
        return []
    batched = [n for n, u in sorted(result.endpoints.items()) if u.usd_batch is not None]
    latency = _duration(result.batch_latency_s)
    lines = [
        f"with provider batches ({', '.join(batched)}): {_usd(result.usd_batch)} expected, "
        f"against {_usd(result.usd)} realtime (the worst case above is realtime's, a bound)",
    ]
    if result.batch_wall_s is not None:
        lines.append(
            f"wall time with batches: about {_duration(result.batch_wall_s)}, at {latency} per "
            f"batch (--batch-latency-min), {max(result.batch_rounds)} batch round trips for the "
            "longest job one after another"
        )
    return lines


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "wall time: no rate limits configured, so no lower bound from limits"
    return (
        f"wall time: at least {_duration(seconds)} at the configured "
        "rate limits (latency comes on top)"
    )


def _assumptions(result: Estimate) -> list[str]:
    simulated = sorted(result.simulated)
    answers = f"{result.reasoning_tokens} tokens of reasoning plus the gold answer"
    if simulated:
        answers += (
            f" ({', '.join(simulated)}: the simulator's one reasoning line, about "
            f"{result.sim_reasoning_tokens} tokens, plus the answer)"
        )
    expected = (
        f"Expected: task answers of {answers}, at most scorer_max_tokens; candidate prompts "
        f"growing by a third of each step's word budget up to {result.prompt_words} words; every "
        "candidate new, every reply parsed at the first ask; one request per candidate where "
        "an endpoint has no n (supports_n = false, Anthropic)."
    )
    worst = (
        "Worst case: every reply at its max_tokens, candidate prompts as long as the "
        "optimizer's max_tokens, every re-ask used, each candidate asked for in a request of "
        "its own, inputs at the byte bound the budget reserves. Retries come on top of both (a "
        "429 is not billed)."
    )
    if result.racing_share is not None:
        expected += (
            f" Racing jobs: {result.racing_share:.0%} of full evaluation's task calls in steps "
            "(as measured on the simulator, B9; it depends on how far candidates differ)."
        )
        worst += " Racing stops no candidate in the worst case."
    return [*textwrap.wrap(expected, 100), *textwrap.wrap(worst, 100)]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
