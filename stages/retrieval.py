"""Stage 1, trajectory retrieval: which past prompts the optimizer is shown (update direction).

``none`` shows nothing; ``recency`` the latest trajectory prompts; ``relevance`` (GPO) those most
similar to the current prompt, by cosine over embeddings fetched through the gateway (cached and
budgeted) or over word n-grams offline; ``importance`` (OPRO) the best-scoring prompts evaluated
so far; ``summarization`` an optimizer-written summary of the trajectory. ``k`` counts the current
prompt, so ``k - 1`` past prompts are shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline._seeds import derive_seed
from pipeline.llm._values import ChatRequest
from stages.edits import normalize_prompt
from stages.messages import Direction, StepTicket
from stages.metaprompt import ShownPrompt, build_summary_prompt
from stages.models import Models
from stages.similarity import cosine, lexical_similarity


class Retrieval:
    def __init__(self, models: Models) -> None:
        self._models = models

    async def handle(self, ticket: StepTicket) -> Direction:
        kind = ticket.context.strategy.trajectory
        if kind == "summarization":
            return Direction(ticket=ticket, shown=(), summary=await self._summary(ticket))
        if kind == "none":
            shown: list[ShownPrompt] = []
        elif kind == "importance":
            shown = _best(ticket)
        elif kind == "recency":
            shown = _past(ticket)[-_room(ticket) :] if _room(ticket) else []
        else:
            shown = await self._relevant(ticket)
        return Direction(ticket=ticket, shown=tuple(_ordered(ticket, shown)))

    async def _relevant(self, ticket: StepTicket) -> list[ShownPrompt]:
        past = _past(ticket)
        if not past or not _room(ticket):
            return []
        scores = await self._similarities(ticket, [p.text for p in past])
        ranked = sorted(range(len(past)), key=lambda i: (-scores[i], i))[: _room(ticket)]
        return [past[i] for i in reversed(ranked)]  # most similar last, next to the current

    async def _similarities(self, ticket: StepTicket, texts: list[str]) -> list[float]:
        ctx = ticket.context
        current = ticket.current.prompt
        if ctx.strategy.relevance_backend == "lexical" or ctx.embedding_endpoint is None:
            return [lexical_similarity(current, t) for t in texts]
        result = await self._models.embed(ctx.embedding_endpoint, [current, *texts], job=ctx.id)
        return [cosine(result.vectors[0], v) for v in result.vectors[1:]]

    async def _summary(self, ticket: StepTicket) -> str | None:
        past = [ShownPrompt(text=e.prompt, score=e.score) for e in ticket.trajectory]
        if len(past) < 2:
            return None
        ctx = ticket.context
        request = ChatRequest.of(
            build_summary_prompt(past),
            temperature=0.0,
            max_tokens=ctx.optimizer_max_tokens,
            seed=derive_seed(ctx.seed, ctx.id, ticket.step, "summary"),
        )
        completion = await self._models.chat(ctx.optimizer_endpoint, request, job=ctx.id)
        return completion.text.strip() or None


def _room(ticket: StepTicket) -> int:
    return max(0, ticket.context.strategy.k - 1)


def _past(ticket: StepTicket) -> list[ShownPrompt]:
    """Distinct trajectory prompts other than the current one, oldest first."""
    current = normalize_prompt(ticket.current.prompt)
    found: dict[str, ShownPrompt] = {}
    for entry in ticket.trajectory:
        key = normalize_prompt(entry.prompt)
        if key != current:
            found.pop(key, None)
            found[key] = ShownPrompt(text=entry.prompt, score=entry.score)
    return list(found.values())


def _best(ticket: StepTicket) -> list[ShownPrompt]:
    current = normalize_prompt(ticket.current.prompt)
    pool = [p for key, p in ticket.seen.items() if key != current]
    return sorted(pool, key=lambda p: -p.score)[: _room(ticket)]


def _ordered(ticket: StepTicket, shown: Sequence[ShownPrompt]) -> list[ShownPrompt]:
    """``ascending`` by score (OPRO), ``chronological``, or ``similarity`` as retrieved."""
    order = ticket.context.strategy.history_order
    if order == "ascending":
        return sorted(shown, key=lambda p: p.score)
    if order == "chronological":
        steps = {normalize_prompt(e.prompt): e.step for e in ticket.trajectory}
        return sorted(shown, key=lambda p: steps.get(normalize_prompt(p.text), -1))
    return list(shown)
