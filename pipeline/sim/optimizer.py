"""The optimizer-model role: propose a prompt from a meta-prompt, or critique a prompt.

A proposal is a sequence of sentence-level edits of a base prompt (the current one; for an
unconstrained "write a new prompt", possibly another shown prompt or nothing): insert, delete or
replace a sentence, or swap a word for a synonym. New sentences come from the shown prompts
(higher-scored ones more often), from instructions inspired by the task exemplars and from a
generic phrasebook. The edits' word cost is drawn within the stated change limit (about 10 % of
the time past it); "write a new prompt" spends more of it than "modify the current prompt".
All randomness comes from the caller's ``rng``. The role never sees the hidden landscape.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.sim.metaprompt import MetaPrompt, Mode
from pipeline.sim.phrasebook import GENERIC, SHORT, SYNONYMS, task_sentences
from pipeline.sim.textnorm import edit_distance, split_sentences, top_content_words

EXCEED_RATE = 0.1
FORGET_TAGS_RATE = 0.03
PREAMBLES = (
    "",
    "",
    "Here is an improved prompt:",
    "Based on the scores, a better prompt could be:",
    "New prompt:",
    "After analyzing the previous prompts, I propose:",
)
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True, slots=True)
class Pool:
    """Where new sentences come from."""

    shown: tuple[tuple[str, float], ...]
    task: tuple[str, ...]
    generic: tuple[str, ...]


@dataclass(slots=True)
class _Draft:
    sentences: list[str]
    remaining: int
    max_words: int

    def words(self) -> int:
        return sum(_wc(s) for s in self.sentences)


Op = Callable[[_Draft, Pool, random.Random], int]


def changed_words(before: str, after: str) -> int:
    """Word-level edit distance (case and surrounding punctuation ignored)."""
    return edit_distance(_norm_words(before), _norm_words(after))


def _norm_words(text: str) -> list[str]:
    return [w for w in (w.strip(".,;:!?\"'()").lower() for w in text.split()) if w]


def _wc(sentence: str) -> int:
    return len(sentence.split())


@lru_cache(maxsize=256)
def build_pool(meta: MetaPrompt) -> Pool:
    top = max((s.score for s in meta.scored), default=0.0)
    shown = {
        sentence: math.exp((s.score - top) / 10.0)
        for s in meta.scored
        for sentence in split_sentences(s.text)
    }
    return Pool(tuple(shown.items()), task_sentences(meta.exemplars), GENERIC)


def draw_sentence(pool: Pool, rng: random.Random, max_words: int) -> str | None:
    """A sentence of at most ``max_words`` words.

    Sources: the shown prompts 40 % (weighted by score), exemplar-inspired 30 %, generic 30 %.
    """
    shown = [(s, w) for s, w in pool.shown if _wc(s) <= max_words]
    sources: list[tuple[float, list[tuple[str, float]]]] = [
        (0.4, shown),
        (0.3, [(s, 1.0) for s in pool.task if _wc(s) <= max_words]),
        (0.3, [(s, 1.0) for s in (*pool.generic, *SHORT) if _wc(s) <= max_words]),
    ]
    sources = [(p, items) for p, items in sources if items]
    if not sources:
        return None
    items = rng.choices([i for _, i in sources], weights=[p for p, _ in sources])[0]
    return rng.choices([s for s, _ in items], weights=[w for _, w in items])[0]


def _insert(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    room = min(draft.remaining, draft.max_words - draft.words())
    sentence = draw_sentence(pool, rng, room)
    if sentence is None or sentence in draft.sentences:
        return 0
    draft.sentences.insert(rng.randint(0, len(draft.sentences)), sentence)
    return _wc(sentence)


def _delete(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    fits = [i for i, s in enumerate(draft.sentences) if _wc(s) <= draft.remaining]
    if len(draft.sentences) < 2 or not fits:
        return 0
    return _wc(draft.sentences.pop(rng.choice(fits)))


def _replace(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    fits = [i for i, s in enumerate(draft.sentences) if _wc(s) <= draft.remaining]
    if not fits:
        return 0
    i = rng.choice(fits)
    room = min(draft.remaining, draft.max_words - draft.words() + _wc(draft.sentences[i]))
    sentence = draw_sentence(pool, rng, room)
    if sentence is None or sentence in draft.sentences:
        return 0
    cost = max(_wc(sentence), _wc(draft.sentences[i]))
    draft.sentences[i] = sentence
    return cost


def _synonym(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    spots = [
        (i, m)
        for i, s in enumerate(draft.sentences)
        for m in _WORD.finditer(s)
        if m.group().lower() in SYNONYMS
    ]
    if not spots:
        return 0
    i, match = rng.choice(spots)
    replacement = SYNONYMS[match.group().lower()]
    if match.group()[0].isupper():
        replacement = replacement[0].upper() + replacement[1:]
    if _wc(replacement) > draft.remaining:
        return 0
    sentence = draft.sentences[i]
    draft.sentences[i] = sentence[: match.start()] + replacement + sentence[match.end() :]
    return _wc(replacement)


_OPS: tuple[Op, ...] = (_insert, _delete, _replace, _synonym)
_OP_WEIGHTS: dict[Mode, tuple[float, ...]] = {
    "modify": (0.35, 0.15, 0.15, 0.35),
    "new": (0.4, 0.15, 0.4, 0.05),
}


def _edit(draft: _Draft, pool: Pool, rng: random.Random, mode: Mode) -> None:
    for _ in range(16):
        if draft.remaining <= 0:
            return
        op = rng.choices(_OPS, weights=_OP_WEIGHTS[mode])[0]
        cost = op(draft, pool, rng)
        draft.remaining -= cost
        if cost and mode == "modify" and rng.random() < 0.5:
            return


def _budget(meta: MetaPrompt, rng: random.Random, exceed: bool) -> int:
    limit = meta.change_limit
    if limit is None:
        return rng.randint(2, 12) if meta.mode == "modify" else rng.randint(6, 30)
    if exceed:
        return limit + rng.randint(1, max(2, limit // 2))
    if meta.mode == "modify":
        return rng.randint(1, max(1, math.ceil(limit * 0.6)))
    return rng.randint(max(1, limit // 3), max(1, limit))


def _base(meta: MetaPrompt, rng: random.Random) -> str:
    if meta.change_limit is not None or meta.mode == "modify" or not meta.scored:
        return meta.current
    if rng.random() < 0.25:
        return ""
    top = max(s.score for s in meta.scored)
    weights = [math.exp((s.score - top) / 10.0) for s in meta.scored]
    return rng.choices([s.text for s in meta.scored], weights=weights)[0]


def propose(meta: MetaPrompt, rng: random.Random) -> str:
    """One new prompt for ``meta`` (not wrapped in tags)."""
    pool = build_pool(meta)
    exceed = meta.change_limit is not None and rng.random() < EXCEED_RATE
    budget = _budget(meta, rng, exceed)
    max_words = meta.length_limit or rng.randint(20, 55)
    seen = {meta.current, *(s.text for s in meta.scored)}
    text = meta.current
    for _ in range(4):
        draft = _Draft(split_sentences(_base(meta, rng)), budget, max_words)
        _edit(draft, pool, rng, meta.mode)
        text = " ".join(draft.sentences)
        if text and text not in seen:
            break
    if exceed:
        text = _push_over(text, meta, pool, rng, max_words + 10)
    if meta.length_limit:
        text = fit_length(text, meta.length_limit)
    return text or "Let's think step by step."


def fit_length(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` words, dropping whole trailing sentences first."""
    sentences = split_sentences(text)
    while len(sentences) > 1 and sum(_wc(s) for s in sentences) > limit:
        sentences.pop()
    return " ".join(" ".join(sentences).split()[: max(1, limit)])


def _push_over(text: str, meta: MetaPrompt, pool: Pool, rng: random.Random, max_words: int) -> str:
    """Change more words than the stated limit (a model ignoring it), within ``max_words``."""
    limit = meta.change_limit or 0
    for _ in range(6):
        room = max_words - _wc(text)
        if changed_words(meta.current, text) > limit or room <= 0:
            break
        sentence = draw_sentence(pool, rng, room)
        if sentence and sentence not in text:
            text = f"{text} {sentence}".strip()
    return text


def render_prompts(prompts: Sequence[str], meta: MetaPrompt, rng: random.Random) -> str:
    """The reply text: an optional preamble, then each prompt in the requested tags."""
    opener, closer = meta.tags
    forget = rng.random() < FORGET_TAGS_RATE
    body = "\n".join(p if forget else f"{opener}{p}{closer}" for p in prompts)
    preamble = rng.choice(PREAMBLES)
    return f"{preamble}\n{body}" if preamble else body


def optimizer_reply(meta: MetaPrompt, rng: random.Random) -> str:
    """What the optimizer model answers to a meta-prompt (a critique if one is asked for)."""
    if meta.reflection:
        return critique(meta, rng)
    return render_prompts([propose(meta, rng) for _ in range(meta.count)], meta, rng)


def summary(meta: MetaPrompt, rng: random.Random) -> str:
    """A summary of scored prompts: what the best ones say that the worst ones do not."""
    ranked = sorted(meta.scored, key=lambda p: p.score)
    best, worst = ranked[-1], ranked[0]
    worst_sentences = {s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", worst.text)}
    better = [
        s for s in re.split(r"(?<=[.!?])\s+", best.text) if s.strip().lower() not in worst_sentences
    ] or [best.text]
    rng.shuffle(better)
    return (
        f"The highest-scoring prompts (up to {best.score:.0f}) ask to: "
        f"{' '.join(better[:4])} The lowest-scoring ones ({worst.score:.0f}) lack this."
    )


_CRITIQUES: tuple[tuple[str, str], ...] = (
    ("step", "The prompt does not ask to reason step by step, so it jumps to conclusions."),
    ("check|verif", "The prompt never asks to double-check intermediate results."),
    ("answer|format", "The prompt does not say how the final answer should be formatted."),
    ("careful|read", "The prompt does not ask to read carefully, so details get missed."),
    ("identify|key", "The prompt does not ask to identify the key information first."),
)


def critique(meta: MetaPrompt, rng: random.Random) -> str:
    """Short plausible reasons why ``meta.current`` produced errors."""
    lower = meta.current.lower()
    missing = [text for cue, text in _CRITIQUES if not re.search(cue, lower)]
    missing = missing or [text for _, text in _CRITIQUES]
    rng.shuffle(missing)
    words = top_content_words((e.input for e in meta.exemplars), limit=2)
    if words:
        missing.insert(
            rng.randint(0, 1),
            f"The prompt is generic and never mentions the "
            f"{' and '.join(words)} that these examples depend on.",
        )
    count = meta.count if meta.count > 1 else rng.randint(2, 3)
    reasons = missing[:count]
    if not meta.tags_named:
        return "\n".join(f"{i}. {r}" for i, r in enumerate(reasons, 1))
    opener, closer = meta.tags
    return "\n".join(f"{opener}{r}{closer}" for r in reasons)
