"""Stage 3, candidate generation: one optimizer request for ``n`` candidates, strict parsing.

A candidate is the text between the requested output tags; a reply without them is a counted
parse failure and is dropped, never used whole. Too few parsed candidates trigger at most
``max_reasks`` further requests for the missing number. Candidates are de-duplicated (normalized
text), measured against the step's word budget (word-level edit distance to the current
prompt), and optionally rejected when over it.
"""

from __future__ import annotations

from pipeline._seeds import derive_seed
from pipeline.llm._values import ChatRequest
from stages.edits import normalize_prompt, word_edit_distance
from stages.messages import Candidate, Candidates, MetaPrompt
from stages.models import Models
from stages.parsing import extract_tagged


class Generation:
    def __init__(self, models: Models) -> None:
        self._models = models

    async def handle(self, meta: MetaPrompt) -> Candidates:
        parsed, failures, asks = await self._ask(meta)
        current = meta.ticket.current.prompt
        unique: dict[str, str] = {}
        for prompt in parsed:
            unique.setdefault(normalize_prompt(prompt), prompt)
        measured = [_measure(p, current, meta.word_budget) for p in unique.values()]
        keep = [c for c in measured if not (c.over_budget and _rejects(meta))]
        return Candidates(
            meta=meta,
            candidates=tuple(keep),
            parse_failures=failures,
            reasks=asks - 1,
            rejected_over_budget=len(measured) - len(keep),
        )

    async def _ask(self, meta: MetaPrompt) -> tuple[list[str], int, int]:
        ctx = meta.ticket.context
        strategy = ctx.strategy
        parsed: list[str] = []
        failures = asks = 0
        while len(parsed) < strategy.candidates and asks <= strategy.max_reasks:
            request = ChatRequest.of(
                meta.text,
                n=strategy.candidates - len(parsed),
                temperature=strategy.optimizer_temperature,
                max_tokens=ctx.optimizer_max_tokens,
                seed=derive_seed(ctx.seed, ctx.id, meta.ticket.step, "generate", asks),
            )
            completion = await self._models.chat(ctx.optimizer_endpoint, request, job=ctx.id)
            asks += 1
            for text in completion.texts:
                segments = extract_tagged(text, strategy.output_tags)
                if segments:
                    parsed.append(segments[-1])  # a preamble may name the tags first
                else:
                    failures += 1
        return parsed, failures, asks


def _measure(prompt: str, current: str, budget: int | None) -> Candidate:
    distance = word_edit_distance(prompt, current)
    return Candidate(
        prompt=prompt, edit_distance=distance, over_budget=budget is not None and distance > budget
    )


def _rejects(meta: MetaPrompt) -> bool:
    return meta.ticket.context.strategy.reject_over_budget
