"""``gpo estimate``: what a run will use, before it spends anything.

Counts come from the algorithm (they are exact for requests as long as every candidate is new);
tokens come from the actual data and prompts. *Expected* assumes answers of about
``EXPECTED_ANSWER_TOKENS`` tokens and candidate prompts of about ``EXPECTED_PROMPT_TOKENS``;
*worst case* assumes every reply uses its ``max_tokens``, every step re-asks as often as allowed,
and counts input tokens with the same byte bound the budget reserves. The wall-time lower bound
only follows from configured rate limits (requests/min, tokens/min); latency adds to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.endpoint import EndpointConfig
from pipeline.jobs import Job, OptimizerSettings, build_context
from pipeline.tokens import max_input_tokens, typical_input_tokens
from pipeline.values import Message
from stages.evaluation import task_messages
from stages.messages import JobContext
from stages.metaprompt import ShownPrompt, build_meta_prompt

EXPECTED_ANSWER_TOKENS = 150
EXPECTED_PROMPT_TOKENS = 80


@dataclass(slots=True)
class Usage:
    """Requests and tokens for one endpoint, expected and worst case."""

    requests: int = 0
    requests_worst: int = 0
    input_tokens: int = 0
    input_worst: int = 0
    output_tokens: int = 0
    output_worst: int = 0

    def add(
        self,
        count: int,
        per_input: tuple[int, int],
        per_output: tuple[int, int],
        worst_count: int | None = None,
    ) -> None:
        worst = count if worst_count is None else worst_count
        self.requests += count
        self.requests_worst += worst
        self.input_tokens += count * per_input[0]
        self.input_worst += worst * per_input[1]
        self.output_tokens += count * per_output[0]
        self.output_worst += worst * per_output[1]


@dataclass(slots=True)
class Estimate:
    endpoints: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))
    usd: float = 0.0
    usd_worst: float = 0.0
    min_wall_s: float | None = None
    jobs: int = 0
    steps: int = 0


def estimate(
    jobs: Iterable[Job], settings: OptimizerSettings, endpoints: Iterable[EndpointConfig]
) -> Estimate:
    result = Estimate()
    for index, job in enumerate(jobs):
        ctx = build_context(job, index, settings)
        result.jobs += 1
        result.steps += ctx.total_steps
        _task_calls(ctx, result.endpoints[ctx.task_endpoint])
        _optimizer_calls(ctx, result.endpoints[ctx.optimizer_endpoint])
        if ctx.embedding_endpoint and ctx.strategy.trajectory == "relevance":
            _embedding_calls(ctx, result.endpoints[ctx.embedding_endpoint])
    _price(result, {e.name: e for e in endpoints})
    return result


def _task_calls(ctx: JobContext, usage: Usage) -> None:
    dev, test = ctx.splits.dev, ctx.splits.test
    candidates = ctx.strategy.candidates
    longest = ctx.initial_prompt + " word" * ctx.strategy.budget_start
    per_dev = _mean_input(ctx, dev, ctx.initial_prompt, longest)
    per_test = _mean_input(ctx, test, ctx.initial_prompt, longest)
    output = (min(EXPECTED_ANSWER_TOKENS, ctx.scorer_max_tokens), ctx.scorer_max_tokens)
    usage.add(len(dev) * (1 + ctx.total_steps * candidates), per_dev, output)
    usage.add(len(test) * (2 if ctx.total_steps else 1), per_test, output)


def _mean_input(
    ctx: JobContext, examples: Iterable[object], prompt: str, longest: str
) -> tuple[int, int]:
    inputs = [getattr(e, "input", "") for e in examples]
    if not inputs:
        return (0, 0)
    typical = sum(typical_input_tokens(task_messages(prompt, q, ctx.placement)) for q in inputs)
    worst = max(max_input_tokens(task_messages(longest, q, ctx.placement)) for q in inputs)
    return (typical // len(inputs), worst)


def _optimizer_calls(ctx: JobContext, usage: Usage) -> None:
    if not ctx.total_steps:
        return
    strategy = ctx.strategy
    meta = _meta_prompt(ctx)
    per_input = (typical_input_tokens(meta), max_input_tokens(meta))
    per_output = (
        strategy.candidates * EXPECTED_PROMPT_TOKENS,
        strategy.candidates * ctx.optimizer_max_tokens,
    )
    usage.add(
        ctx.total_steps,
        per_input,
        per_output,
        worst_count=ctx.total_steps * (1 + strategy.max_reasks),
    )
    if strategy.reflection or strategy.trajectory == "summarization":
        usage.add(ctx.total_steps, per_input, (EXPECTED_ANSWER_TOKENS, ctx.optimizer_max_tokens))


def _meta_prompt(ctx: JobContext) -> tuple[Message, ...]:
    shown = [ShownPrompt(text=ctx.initial_prompt, score=50.0)] * max(0, ctx.strategy.k - 1)
    text = build_meta_prompt(
        ctx.strategy,
        exemplars=[(e.input, e.target) for e in ctx.splits.exemplars],
        placement=ctx.placement,
        shown=shown,
        current=ShownPrompt(text=ctx.initial_prompt, score=50.0),
        word_budget=ctx.strategy.budget_start,
    )
    return (Message(role="user", content=text),)


def _embedding_calls(ctx: JobContext, usage: Usage) -> None:
    per_text = EXPECTED_PROMPT_TOKENS
    texts = 1 + ctx.total_steps * ctx.strategy.candidates
    usage.add(ctx.total_steps + 1, (texts * per_text // (ctx.total_steps + 1),) * 2, (0, 0))


def _price(result: Estimate, endpoints: dict[str, EndpointConfig]) -> None:
    bounds: list[float] = []
    for name, usage in result.endpoints.items():
        config = endpoints[name]
        price = config.effective_price
        result.usd += price.cost(usage.input_tokens, usage.output_tokens)
        result.usd_worst += price.cost(usage.input_worst, usage.output_worst)
        if config.rpm:
            bounds.append(usage.requests / config.rpm * 60)
        if config.tpm:
            bounds.append((usage.input_tokens + usage.output_tokens) / config.tpm * 60)
    result.min_wall_s = max(bounds) if bounds else None


def render(result: Estimate) -> str:
    """The estimate as a table for a person."""
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
    lines += ["", f"cost: ${result.usd:,.4f} expected, ${result.usd_worst:,.4f} worst case"]
    if result.min_wall_s is None:
        lines.append("wall time: no rate limits configured, so no lower bound from limits")
    else:
        lines.append(
            f"wall time: at least {_duration(result.min_wall_s)} at the configured "
            "rate limits (latency comes on top)"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
