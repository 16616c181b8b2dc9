"""Stage 2, decay-controlled refinement: the step's word budget and the meta-prompt.

The budget (the "learning rate") follows the strategy's schedule over ``t`` = trajectory length
and ``T`` = total steps. With reflection on, the optimizer model is first asked why the current
prompt failed on a few examples sampled from its last evaluation.
"""

from __future__ import annotations

import random

from pipeline._seeds import derive_seed
from pipeline.llm._values import ChatRequest
from stages.messages import Direction, MetaPrompt, StepTicket
from stages.metaprompt import ShownPrompt, build_meta_prompt, build_reflection_prompt
from stages.models import Models
from stages.schedule import word_budget


class Refinement:
    def __init__(self, models: Models) -> None:
        self._models = models

    async def handle(self, direction: Direction) -> MetaPrompt:
        ticket = direction.ticket
        ctx, strategy = ticket.context, ticket.context.strategy
        budget = word_budget(
            strategy.schedule,
            len(ticket.trajectory),
            ctx.total_steps,
            start=strategy.budget_start,
            end=strategy.budget_end,
            warmup_steps=strategy.warmup_steps,
        )
        reflection = await self._reflect(ticket) if strategy.reflection else None
        text = build_meta_prompt(
            strategy,
            exemplars=[(e.input, e.target) for e in ctx.splits.exemplars],
            placement=ctx.placement,
            shown=direction.shown,
            current=ShownPrompt(text=ticket.current.prompt, score=ticket.current.score),
            word_budget=budget,
            reflection=reflection,
            summary=direction.summary,
        )
        return MetaPrompt(
            ticket=ticket,
            text=text,
            word_budget=budget,
            shown=direction.shown,
            reflection=reflection,
        )

    async def _reflect(self, ticket: StepTicket) -> str | None:
        ctx = ticket.context
        errors = [o for o in ticket.current.outcomes if not o.correct]
        if not errors:
            return None
        rng = random.Random(derive_seed(ctx.seed, ctx.id, ticket.step, "reflect"))
        picked = rng.sample(errors, min(len(errors), ctx.strategy.reflection_errors))
        dev = ctx.splits.dev
        triples = [(dev[o.index].input, dev[o.index].target, o.output) for o in picked]
        request = ChatRequest.of(
            build_reflection_prompt(ticket.current.prompt, triples),
            temperature=0.0,
            max_tokens=ctx.optimizer_max_tokens,
            seed=derive_seed(ctx.seed, ctx.id, ticket.step, "reflection"),
        )
        completion = await self._models.chat(ctx.optimizer_endpoint, request, job=ctx.id)
        return completion.text.strip() or None
