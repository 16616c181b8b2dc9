"""Stage 3, candidate generation: one optimizer request for ``n`` candidates, strict parsing.

A candidate is the text between the requested output tags; a reply without them is a counted
parse failure and is dropped, never used whole. A tagged reply that returns the current prompt
unchanged or copies the meta-prompt's exemplars or scored prompts is a counted rejection
(``stages.rejections``), dropped the same way. Too few candidates left trigger at most
``max_reasks`` further requests for the missing number. Candidates are de-duplicated (normalized
text), measured against the step's word budget (word-level edit distance to the current
prompt), and optionally rejected when over it.
"""

from __future__ import annotations

from collections import Counter

from pipeline._seeds import derive_seed
from pipeline.llm._values import ChatRequest
from stages.edits import normalize_prompt, word_edit_distance
from stages.messages import Candidate, Candidates, MetaPrompt
from stages.models import Models
from stages.parsing import extract_tagged
from stages.rejections import rejection

_FAILED = "parse_failures"


class Generation:
    def __init__(self, models: Models) -> None:
        self._models = models

    async def handle(self, meta: MetaPrompt) -> Candidates:
        parsed, dropped, asks = await self._ask(meta)
        current = meta.ticket.current.prompt
        unique: dict[str, str] = {}
        for prompt in parsed:
            unique.setdefault(normalize_prompt(prompt), prompt)
        measured = [_measure(p, current, meta.word_budget) for p in unique.values()]
        keep = [c for c in measured if not (c.over_budget and _rejects(meta))]
        return Candidates(
            meta=meta,
            candidates=tuple(keep),
            parse_failures=dropped[_FAILED],
            reasks=asks - 1,
            rejected_over_budget=len(measured) - len(keep),
            rejected_unchanged=dropped["rejected_unchanged"],
            rejected_exemplar_copy=dropped["rejected_exemplar_copy"],
        )

    async def _ask(self, meta: MetaPrompt) -> tuple[list[str], Counter[str], int]:
        """The candidates read, the replies dropped by reason, and the requests made."""
        ctx = meta.ticket.context
        strategy = ctx.strategy
        parsed: list[str] = []
        dropped: Counter[str] = Counter()
        asks = 0
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
                prompt, reason = _read(text, meta)
                if reason is None:
                    parsed.append(prompt)
                else:
                    dropped[reason] += 1
        return parsed, dropped, asks


def _read(reply: str, meta: MetaPrompt) -> tuple[str, str | None]:
    """The reply's candidate, or why it has none (a parse failure or a rejection)."""
    segments = extract_tagged(reply, meta.ticket.context.strategy.output_tags)
    if not segments:
        return "", _FAILED
    prompt = segments[-1]  # a preamble may name the tags first
    return prompt, rejection(prompt, meta)


def _measure(prompt: str, current: str, budget: int | None) -> Candidate:
    distance = word_edit_distance(prompt, current)
    return Candidate(
        prompt=prompt, edit_distance=distance, over_budget=budget is not None and distance > budget
    )


def _rejects(meta: MetaPrompt) -> bool:
    return meta.ticket.context.strategy.reject_over_budget
