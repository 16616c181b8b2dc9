"""``gpo estimate``: what a run will use, before it spends anything.

Requests follow from the algorithm; tokens from each job's own data and meta-prompts, counted as
byte-level BPE tokenizers count English (:func:`pipeline.sim.tokens.count_tokens`).

*Expected*: every candidate is new, every reply parses at the first ask, nothing is retried. A
task answer is ``reasoning_tokens`` of reasoning plus the gold answer, at most
``scorer_max_tokens`` (on a simulated endpoint: the simulator's one reasoning line). Candidate
prompts grow by a third of each step's word budget up to :data:`PROMPT_WORDS` words. An endpoint
without ``n`` (``supports_n = false``, Anthropic) gets one request per candidate, each repeating
the meta-prompt, as the gateway sends them.

*Worst case*, an upper bound apart from retries: every reply at its ``max_tokens`` (and so every
candidate prompt), every re-ask used, every candidate in a request of its own (a server that
returns fewer choices than ``n`` is topped up that way), inputs at the byte bound the budget
reserves (:func:`pipeline.llm._tokens.max_input_tokens`).

Retries come on top of both (a 429 is not billed). Dollars follow each endpoint's price per
request; an unknown price makes that endpoint's cost and the total "unknown" (an estimate never
refuses). The wall-time lower bound only follows from configured rate limits. The table for a
person is :func:`render` (in ``_estimate_render``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import EMBED_BATCH
from pipeline.llm._pricing import Price, batch_price
from pipeline.llm._tokens import max_input_tokens, max_text_tokens
from pipeline.llm._values import Message
from pipeline.runner._estimate_batch import BATCH_LATENCY_S, batch_rounds, batch_wall_s
from pipeline.runner._estimate_render import render as render  # re-exported
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.sim.tokens import count_prompt_tokens, count_tokens
from pipeline.tasks._data import Example
from stages.evaluation import task_messages
from stages.messages import JobContext
from stages.metaprompt import (
    ShownPrompt,
    build_meta_prompt,
    build_reflection_prompt,
    build_summary_prompt,
)
from stages.schedule import word_budget

REASONING_TOKENS = 150  # a real task model's reasoning before its final answer
SIM_REASONING_TOKENS = 15  # the simulator's: one reasoning line and "So the answer is"
PROMPT_WORDS = 35  # candidate prompts grow to about this (or stay at a longer initial prompt)
PROMPT_GROWTH_WORDS = 15  # a candidate's growth in a step without a word budget
REPLY_OVERHEAD_TOKENS = 12  # a candidate reply besides its prompt: the tags, a short preamble
NOTE_TOKENS = 60  # a reflection on errors or a trajectory summary
RACING_SHARE = 0.8  # racing: a step's task calls over full evaluation's (B9: 0.78, simulator)

_FILLER = (
    "Read the question carefully and identify the key facts. Reason step by step, check each "
    "intermediate result, and state the final answer in the requested format."
)
_FILLER_WORDS = len(_FILLER.split())
_SLOT = "x"  # stands for a text at its bound in worst-case inputs


@dataclass(frozen=True, slots=True)
class Calls:
    """``count`` requests of about ``input`` and ``output`` tokens each."""

    count: int
    input: int
    output: int


@dataclass(slots=True)
class EndpointEstimate:
    """Requests and tokens for one endpoint, expected and worst case, and what they cost
    (``usd`` None: no price is known for the endpoint)."""

    requests: int = 0
    requests_worst: int = 0
    input_tokens: int = 0
    input_worst: int = 0
    output_tokens: int = 0
    output_worst: int = 0
    usd: float | None = 0.0
    usd_worst: float | None = 0.0
    usd_batch: float | None = None
    """Expected, with the endpoint's batch mode (None: it does not batch)."""
    calls: list[tuple[Calls, Calls]] = field(default_factory=list)
    deferrable: list[bool] = field(default_factory=list)

    def add(self, expected: Calls, worst: Calls, *, deferrable: bool = False) -> None:
        self.calls.append((expected, worst))
        self.deferrable.append(deferrable)
        self.requests += expected.count
        self.input_tokens += expected.count * expected.input
        self.output_tokens += expected.count * expected.output
        self.requests_worst += worst.count
        self.input_worst += worst.count * worst.input
        self.output_worst += worst.count * worst.output

    def price(self, price: Price | None) -> None:
        """Cost per request (a long-context tier applies to the requests that cross it)."""
        if price is None:
            self.usd = self.usd_worst = None
            return
        self.usd = sum(c.count * price.cost(c.input, c.output) for c, _ in self.calls)
        self.usd_worst = sum(w.count * price.cost(w.input, w.output) for _, w in self.calls)

    def price_batched(self, price: Price | None, batched: Price, mode: str) -> None:
        """The expected cost with ``mode``'s calls at the ``batched`` price."""
        if price is None or mode == "off":
            return
        self.usd_batch = sum(
            c.count * (batched if mode == "all" or d else price).cost(c.input, c.output)
            for (c, _), d in zip(self.calls, self.deferrable, strict=True)
        )


@dataclass(slots=True)
class Estimate:
    """Per endpoint: usage, the price used (None: unknown) and its model; totals (``usd`` None
    when some endpoint's price is unknown); what the expected figures assumed."""

    endpoints: dict[str, EndpointEstimate] = field(
        default_factory=lambda: defaultdict(EndpointEstimate)
    )
    prices: dict[str, Price | None] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    simulated: frozenset[str] = frozenset()  # task endpoints that gpo's simulator serves
    reasoning_tokens: int = REASONING_TOKENS
    sim_reasoning_tokens: int = SIM_REASONING_TOKENS
    prompt_words: int = PROMPT_WORDS
    usd: float | None = 0.0
    usd_worst: float | None = 0.0
    min_wall_s: float | None = None
    jobs: int = 0
    steps: int = 0
    racing_share: float | None = None  # set when some job races its candidates
    usd_batch: float | None = None  # expected, as configured, where some endpoint batches
    batch_rounds: list[int] = field(default_factory=list)  # per job, its batch round trips
    batch_latency_s: float = BATCH_LATENCY_S
    batch_wall_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Step:
    """One optimization step as the estimate pictures it (prompt lengths in words)."""

    t: int
    budget: int | None
    words: float  # each candidate prompt
    current: float
    shown: tuple[float, ...]  # the past prompts shown with their scores
    trajectory: tuple[float, ...]
    summary: bool  # the meta-prompt shows a trajectory summary (asked for first)


def estimate(
    jobs: Iterable[Job],
    settings: OptimizerSettings,
    endpoints: Iterable[EndpointConfig],
    *,
    simulated: Collection[str] = (),
    reasoning_tokens: int = REASONING_TOKENS,
    batch_latency_s: float = BATCH_LATENCY_S,
) -> Estimate:
    """What running ``jobs`` will use per endpoint. ``simulated`` names the endpoints that gpo's
    simulator serves (their answers are short); ``reasoning_tokens`` is what a real task model
    is expected to write before its final answer."""
    configs = {e.name: e for e in endpoints}
    result = Estimate(reasoning_tokens=reasoning_tokens, batch_latency_s=batch_latency_s)
    scored: set[tuple[object, ...]] = set()  # initial prompts already scored (sent once)
    for index, job in enumerate(jobs):
        ctx = build_context(job, index, settings)
        result.jobs += 1
        result.steps += ctx.total_steps
        if ctx.strategy.evaluation == "racing":
            result.racing_share = RACING_SHARE
        plan = _plan(ctx)
        result.batch_rounds.append(batch_rounds(ctx, configs))
        reasoning = reasoning_tokens
        if ctx.task_endpoint in simulated:
            reasoning = SIM_REASONING_TOKENS
            result.simulated |= {ctx.task_endpoint}
        _task_calls(ctx, plan, reasoning, result.endpoints[ctx.task_endpoint], scored)
        split_n = _splits_n(configs.get(ctx.optimizer_endpoint))
        usage = result.endpoints[ctx.optimizer_endpoint]
        _optimizer_calls(ctx, plan, reasoning, split_n, usage)
        if _embeds(ctx):
            assert ctx.embedding_endpoint is not None
            _embedding_calls(ctx, plan, result.endpoints[ctx.embedding_endpoint])
    _price(result, configs)
    rounds, active = result.batch_rounds, settings.max_active_jobs
    result.batch_wall_s = batch_wall_s(rounds, active, batch_latency_s)
    return result


def _splits_n(config: EndpointConfig | None) -> bool:
    """Whether the gateway asks this endpoint once per candidate (what ``_Endpoint`` does)."""
    return config is not None and not (config.supports_n and config.kind != "anthropic")


def _embeds(ctx: JobContext) -> bool:
    strategy = ctx.strategy
    return (
        strategy.trajectory == "relevance"
        and strategy.relevance_backend == "embeddings"
        and ctx.embedding_endpoint is not None
    )


# --- the picture of a run -----------------------------------------------------------------------


def _plan(ctx: JobContext) -> list[_Step]:
    strategy = ctx.strategy
    first = len(ctx.initial_prompt.split())
    cap = max(first, PROMPT_WORDS)
    trajectory, seen = [float(first)], [float(first)]
    steps = []
    for t in range(1, ctx.total_steps + 1):
        budget = word_budget(
            strategy.schedule,
            t,
            ctx.total_steps,
            start=strategy.budget_start,
            end=strategy.budget_end,
            warmup_steps=strategy.warmup_steps,
        )
        words = min(cap, trajectory[-1] + (PROMPT_GROWTH_WORDS if budget is None else budget / 3))
        shown = _shown(ctx, trajectory, seen)
        summary = strategy.trajectory == "summarization" and t >= 2
        steps.append(_Step(t, budget, words, trajectory[-1], shown, tuple(trajectory), summary))
        trajectory.append(words)
        seen += [words] * strategy.candidates
    return steps


def _shown(ctx: JobContext, trajectory: list[float], seen: list[float]) -> tuple[float, ...]:
    """The past prompts shown: the trajectory's (recency, relevance) or every evaluated one's
    (importance), the current prompt apart, at most ``k - 1``."""
    room = max(0, ctx.strategy.k - 1)
    kind = ctx.strategy.trajectory
    if not room or kind in ("none", "summarization"):
        return ()
    pool = seen[:-1] if kind == "importance" else trajectory[:-1]
    return tuple(pool[-room:])


def _prompt(ctx: JobContext, words: float) -> str:
    """A stand-in prompt of ``words`` words: the initial prompt, grown with typical instructions."""
    grown = [*ctx.initial_prompt.split(), *(_FILLER.split() * math.ceil(words / _FILLER_WORDS))]
    return " ".join(grown[: max(len(ctx.initial_prompt.split()), round(words), 1)])


def _tokens(messages: Sequence[Message]) -> int:
    return count_prompt_tokens((m.role, m.content) for m in messages)


def _bound(ctx: JobContext) -> int:
    """The most tokens a prompt can have: the reply it came from, or the initial prompt."""
    return max(ctx.optimizer_max_tokens, len(ctx.initial_prompt.encode("utf-8")))


# --- task model ---------------------------------------------------------------------------------


def _task_calls(
    ctx: JobContext,
    plan: list[_Step],
    reasoning: int,
    usage: EndpointEstimate,
    scored: set[tuple[object, ...]],
) -> None:
    """The task model's calls; the initial prompt's scoring only once for jobs that send it
    alike (the presets of one job and seed in ``gpo compare``): the run pays it once."""
    dev, test = ctx.splits.dev, ctx.splits.test
    key: tuple[object, ...] = (ctx.task_endpoint, ctx.initial_prompt, ctx.placement, ctx.seed)
    key += (ctx.strategy.scorer_temperature, ctx.scorer_max_tokens, dev, test)
    first = key not in scored
    scored.add(key)
    initial = count_tokens(ctx.initial_prompt)
    answers = {
        split: _mean([min(ctx.scorer_max_tokens, reasoning + count_tokens(e.target)) for e in xs])
        for split, xs in (("dev", dev), ("test", test))
    }
    inputs = {"dev": _inputs(ctx, dev), "test": _inputs(ctx, test)}
    top = ctx.scorer_max_tokens

    def add(split: str, count: int, words: float | None, share: float = 1.0) -> None:
        extra = 0 if words is None else count_tokens(_prompt(ctx, words)) - initial
        prompt_bound = _bound(ctx) if words is not None else 0
        mean, bound = inputs[split]
        usage.add(
            Calls(round(count * share), round(mean + extra), round(answers[split])),
            Calls(count, bound + prompt_bound, top),
            deferrable=True,
        )

    if first:
        add("dev", len(dev), None)
    share = RACING_SHARE if ctx.strategy.evaluation == "racing" else 1.0
    for step in plan:  # racing: expected a share of the calls, at worst all (none stopped)
        add("dev", len(dev) * ctx.strategy.candidates, step.words, share)
    if first:
        add("test", len(test), None)
    if plan:
        add("test", len(test), plan[-1].words)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _inputs(ctx: JobContext, examples: Sequence[Example]) -> tuple[float, int]:
    """The mean tokens of the examples asked with the initial prompt, and the byte bound of the
    longest (a candidate prompt adds its own bound)."""
    asked = [task_messages(ctx.initial_prompt, e.input, ctx.placement) for e in examples]
    return _mean([_tokens(m) for m in asked]), max(map(max_input_tokens, asked), default=0)


# --- optimizer model ----------------------------------------------------------------------------


def _optimizer_calls(
    ctx: JobContext, plan: list[_Step], reasoning: int, split_n: bool, usage: EndpointEstimate
) -> None:
    strategy = ctx.strategy
    candidates = strategy.candidates
    asks = (1 + strategy.max_reasks) * candidates  # worst: one choice per request, all re-asked
    for step in plan:
        meta = _tokens(_user(_meta(ctx, step, lambda w: _prompt(ctx, w))))
        meta += (NOTE_TOKENS - 1) * _notes(ctx, step)
        reply = count_tokens(_prompt(ctx, step.words)) + REPLY_OVERHEAD_TOKENS
        count, per = (candidates, 1) if split_n else (1, candidates)
        usage.add(
            Calls(count, meta, per * reply),
            Calls(asks, _meta_worst(ctx, step), ctx.optimizer_max_tokens),
        )
        if strategy.reflection:
            usage.add(*_reflection(ctx, step, reasoning))
        if step.summary:
            usage.add(*_summary(ctx, step))


def _user(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)


def _notes(ctx: JobContext, step: _Step) -> int:
    """How many optimizer-written notes (reflection, summary) this step's meta-prompt shows."""
    return int(ctx.strategy.reflection) + int(step.summary)


def _meta(ctx: JobContext, step: _Step, fill: Callable[[float], str]) -> str:
    """The step's meta-prompt with ``fill(words)`` for each prompt (notes are slots)."""
    strategy = ctx.strategy
    return build_meta_prompt(
        strategy,
        exemplars=[(e.input, e.target) for e in ctx.splits.exemplars],
        placement=ctx.placement,
        shown=[ShownPrompt(text=fill(w), score=50.0) for w in step.shown],
        current=ShownPrompt(text=fill(step.current), score=50.0),
        word_budget=step.budget,
        reflection=_SLOT if strategy.reflection else None,
        summary=_SLOT if step.summary else None,
    )


def _meta_worst(ctx: JobContext, step: _Step) -> int:
    """Every shown prompt, the current one and every note at their bound, in bytes."""
    text = _meta(ctx, step, lambda _: _SLOT)
    slots = len(step.shown) + 1 + _notes(ctx, step)
    return max_input_tokens(_user(text)) + slots * (_bound(ctx) - len(_SLOT))


def _reflection(ctx: JobContext, step: _Step, reasoning: int) -> tuple[Calls, Calls]:
    """One request a step: why the current prompt failed on a few dev examples."""
    count = ctx.strategy.reflection_errors
    answer = " ".join(["answer"] * reasoning)  # one token a word
    errors = [(e.input, e.target, answer) for e in ctx.splits.dev[:count]]
    text = build_reflection_prompt(_prompt(ctx, step.current), errors)
    longest = sorted(ctx.splits.dev, key=lambda e: len(e.input.encode("utf-8")))[-count:]
    slots = build_reflection_prompt(_SLOT, [(e.input, e.target, _SLOT) for e in longest])
    bounds = _bound(ctx) + len(longest) * ctx.scorer_max_tokens - (1 + len(longest)) * len(_SLOT)
    return (
        Calls(1, _tokens(_user(text)), NOTE_TOKENS),
        Calls(1, max_input_tokens(_user(slots)) + bounds, ctx.optimizer_max_tokens),
    )


def _summary(ctx: JobContext, step: _Step) -> tuple[Calls, Calls]:
    """One request a step from the second: a summary of the trajectory so far."""
    shown = [ShownPrompt(text=_prompt(ctx, w), score=50.0) for w in step.trajectory]
    slots = [ShownPrompt(text=_SLOT, score=50.0) for _ in step.trajectory]
    bounds = len(slots) * (_bound(ctx) - len(_SLOT))
    return (
        Calls(1, _tokens(_user(build_summary_prompt(shown))), NOTE_TOKENS),
        Calls(
            1,
            max_input_tokens(_user(build_summary_prompt(slots))) + bounds,
            ctx.optimizer_max_tokens,
        ),
    )


# --- embeddings ---------------------------------------------------------------------------------


def _embedding_calls(ctx: JobContext, plan: list[_Step], usage: EndpointEstimate) -> None:
    """The initial prompt, then each step's new candidates, embedded while they are scored
    (retrieval then finds every vector in the cache)."""
    initial = (ctx.initial_prompt,)
    usage.add(Calls(1, count_tokens(ctx.initial_prompt), 0), Calls(1, max_text_tokens(initial), 0))
    texts = ctx.strategy.candidates
    requests = math.ceil(texts / EMBED_BATCH)
    for step in plan:
        per_text = count_tokens(_prompt(ctx, step.words))
        worst = max_text_tokens((_SLOT,) * texts) + texts * (_bound(ctx) - len(_SLOT))
        usage.add(Calls(requests, texts * per_text // requests, 0), Calls(requests, worst, 0))


# --- prices -------------------------------------------------------------------------------------


def _price(result: Estimate, endpoints: dict[str, EndpointConfig]) -> None:
    bounds: list[float] = []
    for name, usage in result.endpoints.items():
        config = endpoints.get(name)
        price = config.effective_price if config is not None else None
        result.prices[name] = price
        result.models[name] = config.model if config is not None else "?"
        usage.price(price)
        if config is not None and price is not None:
            usage.price_batched(price, batch_price(price, config.base_url), config.batch.mode)
        if config is not None and config.rpm:
            bounds.append(usage.requests / config.rpm * 60)
        if config is not None and config.tpm:
            bounds.append((usage.input_tokens + usage.output_tokens) / config.tpm * 60)
    result.usd = _total(u.usd for u in result.endpoints.values())
    result.usd_worst = _total(u.usd_worst for u in result.endpoints.values())
    if any(u.usd_batch is not None for u in result.endpoints.values()):
        batched = (u.usd if u.usd_batch is None else u.usd_batch for u in result.endpoints.values())
        result.usd_batch = _total(batched)
    result.min_wall_s = max(bounds) if bounds else None


def _total(values: Iterable[float | None]) -> float | None:
    listed = list(values)
    return None if any(v is None for v in listed) else sum(v for v in listed if v is not None)
