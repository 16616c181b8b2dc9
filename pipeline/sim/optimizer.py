"""The optimizer-model role: propose a prompt from a meta-prompt, or critique a prompt.

Model, in plain words. A proposal is a sequence of sentence-level edits of a base prompt (the
current one; for an unconstrained "write a new prompt", possibly another shown prompt or
nothing): insert, delete or replace a sentence, or swap a word for a synonym. New sentences come
from the shown prompts (higher-scored ones more often), from instructions inspired by the task
exemplars and from a generic phrasebook. The edits' word cost is drawn within the stated change
limit (about 10 % of the time past it); "write a new prompt" spends more of it than "modify the
current prompt". Three things in the meta-prompt steer the edits, as they would a real model:

- *Scores of similar prompts.* Two shown prompts (the current one counts, with the score the
  meta-prompt gives it) whose words overlap by at least ``SIMILAR`` are variants of each other,
  and their scores say which of their differences helped: the sentences only the better one has
  are kept (rarely deleted or replaced, drawn more often), those only the worse one has are
  blamed (deleted and replaced first, rarely drawn). When a variant of the current prompt scored
  higher than it, the proposal starts from that variant about half the time (if its distance
  fits the word limit): local refinement of the better of two. Without scores, or with only
  dissimilar prompts shown, none of this happens; relevance retrieval shows the most similar
  prompts, so it gives the most to compare.
- *Feedback on errors.* Each reason in a feedback section that the role recognises
  (:mod:`pipeline.sim.feedback`) becomes, in about ``FIX_RATE`` of the proposals, its fix: the
  missing instruction is added (and kept) or the harmful kind of sentence is removed.
- *The word limit*, as above.

All randomness comes from the caller's ``rng``. The role never sees the hidden landscape.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.sim.feedback import critique, fix_sentences, removal_cues
from pipeline.sim.metaprompt import MetaPrompt, Mode, ScoredPrompt
from pipeline.sim.phrasebook import GENERIC, SHORT, SYNONYMS, task_sentences
from pipeline.sim.tasks import AnswerKind, Example, detect_kind
from pipeline.sim.textnorm import edit_distance, split_sentences

EXCEED_RATE = 0.1
FORGET_TAGS_RATE = 0.03
FIX_RATE = 0.6
REVERT_RATE = 0.5
SIMILAR = 0.6
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
    credit: tuple[tuple[str, int], ...] = ()  # +1: kept by a score comparison, -1: blamed
    better: str | None = None  # a variant of the current prompt that scored higher
    kind: AnswerKind | None = None  # the exemplars' answer kind


@dataclass(slots=True)
class _Draft:
    sentences: list[str]
    remaining: int
    max_words: int
    credit: dict[str, int]

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


def _entries(meta: MetaPrompt) -> tuple[ScoredPrompt, ...]:
    """The scored prompts shown, plus the current one when the meta-prompt gives its score."""
    texts = {s.text for s in meta.scored}
    if meta.current_score is None or meta.current in texts or not meta.current:
        return meta.scored
    return (*meta.scored, ScoredPrompt(meta.current, meta.current_score))


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two prompts' word sets."""
    x, y = set(_norm_words(a)), set(_norm_words(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def compare(entries: Sequence[ScoredPrompt]) -> dict[str, int]:
    """Credit per sentence from every pair of similar prompts with different scores: +1 for
    the sentences only the better one has, -1 for those only the worse one has (summed, then
    reduced to its sign)."""
    credit: dict[str, int] = {}
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if a.score == b.score or similarity(a.text, b.text) < SIMILAR:
                continue
            hi, lo = (a, b) if a.score > b.score else (b, a)
            hi_s, lo_s = set(split_sentences(hi.text)), set(split_sentences(lo.text))
            for sentence in hi_s - lo_s:
                credit[sentence] = credit.get(sentence, 0) + 1
            for sentence in lo_s - hi_s:
                credit[sentence] = credit.get(sentence, 0) - 1
    return {k: (v > 0) - (v < 0) for k, v in credit.items() if v}


def _better_variant(meta: MetaPrompt) -> str | None:
    if meta.current_score is None:
        return None
    variants = [
        s
        for s in meta.scored
        if s.score > meta.current_score
        and s.text != meta.current
        and similarity(s.text, meta.current) >= SIMILAR
    ]
    return max(variants, key=lambda s: s.score).text if variants else None


_FAVOUR = {1: 3.0, 0: 1.0, -1: 0.2}


@lru_cache(maxsize=256)
def build_pool(meta: MetaPrompt) -> Pool:
    entries = _entries(meta)
    credit = compare(entries)
    top = max((s.score for s in entries), default=0.0)
    shown = {
        sentence: math.exp((s.score - top) / 10.0) * _FAVOUR[credit.get(sentence, 0)]
        for s in entries
        for sentence in split_sentences(s.text)
    }
    kind = (
        detect_kind([Example(input=e.input, target=e.output) for e in meta.exemplars])
        if meta.exemplars
        else None
    )
    return Pool(
        tuple(shown.items()),
        task_sentences(meta.exemplars),
        GENERIC,
        tuple(credit.items()),
        _better_variant(meta),
        kind,
    )


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
    if sentence is None or sentence in draft.sentences or draft.credit.get(sentence) == REMOVED:
        return 0
    draft.sentences.insert(rng.randint(0, len(draft.sentences)), sentence)
    return _wc(sentence)


_TARGET = {1: 0.25, 0: 1.0, -1: 4.0, -2: 4.0}
REMOVED = -2  # a sentence the feedback said to drop: not drawn again


def _target(draft: _Draft, fits: list[int], rng: random.Random) -> int:
    """A sentence to delete or replace: blamed ones first, credited ones rarely."""
    weights = [_TARGET[draft.credit.get(draft.sentences[i], 0)] for i in fits]
    return rng.choices(fits, weights=weights)[0]


def _delete(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    fits = [i for i, s in enumerate(draft.sentences) if _wc(s) <= draft.remaining]
    if len(draft.sentences) < 2 or not fits:
        return 0
    return _wc(draft.sentences.pop(_target(draft, fits, rng)))


def _replace(draft: _Draft, pool: Pool, rng: random.Random) -> int:
    fits = [i for i, s in enumerate(draft.sentences) if _wc(s) <= draft.remaining]
    if not fits:
        return 0
    i = _target(draft, fits, rng)
    room = min(draft.remaining, draft.max_words - draft.words() + _wc(draft.sentences[i]))
    sentence = draw_sentence(pool, rng, room)
    if sentence is None or sentence in draft.sentences or draft.credit.get(sentence) == REMOVED:
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


def _base(meta: MetaPrompt, pool: Pool, rng: random.Random, budget: int) -> str:
    better = pool.better
    if better is not None and rng.random() < REVERT_RATE and _affordable(meta, better, budget):
        return better
    if meta.change_limit is not None or meta.mode == "modify" or not meta.scored:
        return meta.current
    if rng.random() < 0.25:
        return ""
    entries = _entries(meta)
    top = max(s.score for s in entries)
    weights = [math.exp((s.score - top) / 10.0) for s in entries]
    return rng.choices([s.text for s in entries], weights=weights)[0]


def _affordable(meta: MetaPrompt, base: str, budget: int) -> bool:
    return meta.change_limit is None or _distance(meta.current, base) <= budget


@lru_cache(maxsize=1024)
def _distance(before: str, after: str) -> int:
    return changed_words(before, after) if before != after else 0


def _apply_feedback(draft: _Draft, meta: MetaPrompt, pool: Pool, rng: random.Random) -> None:
    """With probability ``FIX_RATE``, fix one reason of the feedback (the first ones more
    often): drop the sentences it blames, or add (and keep) an instruction it asks for."""
    if not meta.feedback or rng.random() >= FIX_RATE:
        return
    weights = [1.0 / (i + 1) for i in range(len(meta.feedback))]
    name = rng.choices(meta.feedback, weights=weights)[0]
    cues = removal_cues(name, pool.kind)
    if cues:
        for i in reversed(range(len(draft.sentences))):
            if len(draft.sentences) > 1 and any(c in draft.sentences[i].lower() for c in cues):
                removed = draft.sentences.pop(i)
                draft.credit[removed] = REMOVED
                draft.remaining -= _wc(removed)
        return
    room = min(draft.remaining, draft.max_words - draft.words())
    fixes = [f for f in fix_sentences(name, pool.kind) if f not in draft.sentences]
    fixes = [f for f in fixes if _wc(f) <= room]
    if fixes:
        fix = rng.choice(fixes)
        draft.sentences.insert(rng.randint(0, len(draft.sentences)), fix)
        draft.credit[fix] = 1
        draft.remaining -= _wc(fix)


def propose(meta: MetaPrompt, rng: random.Random) -> str:
    """One new prompt for ``meta`` (not wrapped in tags)."""
    pool = build_pool(meta)
    exceed = meta.change_limit is not None and rng.random() < EXCEED_RATE
    budget = _budget(meta, rng, exceed)
    max_words = meta.length_limit or rng.randint(20, 55)
    seen = {meta.current, *(s.text for s in meta.scored)}
    text = meta.current
    for _ in range(4):
        base = _base(meta, pool, rng, budget)
        spent = _distance(meta.current, base) if meta.change_limit is not None else 0
        draft = _Draft(split_sentences(base), budget - spent, max_words, dict(pool.credit))
        _apply_feedback(draft, meta, pool, rng)
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
        count = meta.count if meta.count > 1 else rng.randint(2, 3)
        return critique(
            current=meta.current,
            symptoms=meta.symptoms,
            inputs=[e.input for e in meta.exemplars],
            count=count,
            tags=meta.tags if meta.tags_named else None,
            rng=rng,
        )
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
