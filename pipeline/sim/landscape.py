"""The hidden, seeded prompt-quality landscape of one task (the simulated task model's "skill").

Model, in plain words. For a task and a simulator seed, a hidden set of 12-19 *facets* is drawn:
kinds of instruction, each a family of paraphrased phrases with a weight. Always present: reason
step by step, verify the work, state the final answer, and two harmful ones ("answer without
thinking", "guess"); four to seven optional generic ones (read carefully, plan, explain,
decompose, expert role, take a deep breath, be concise, consider alternatives, and the harmful
hedging and off-topic requests); and task-specific ones derived from the task's data (its answer
format, e.g. "a single number", with a wrong-format facet that hurts; a strategy family, e.g.
"eliminate options"; two to four of its frequent key words or operator symbols). A prompt's
*meaning* is the set of facets it matches; its logit contribution is

    S = SCALE * (C * tanh(P / C) - conflicts - length_penalty) + N + quirk

where a facet with ``m`` distinct matching phrases contributes ``w * (1 - r**m) / (1 - r)``
(``r = 0.45``, diminishing returns; a phrase right after "not"/"never"/"without" does not count
for a positive facet), ``P``/``N`` sum the positive/negative contributions, ``C = 3`` saturates
the gain from piling up instructions, each drawn conflict (two instructions that clash unless a
third is present) costs 0.3-0.6, every word past a seeded 35-50 words costs 0.04, and ``SCALE``
sets the size of what good instructions gain to the order the paper reports (a good prompt
gains roughly 7-13 points over "Let's think step by step.", not 30); harmful instructions keep
their full weight. For example ``i`` with difficulty ``d_i ~ N(0, 0.9)`` (plus a little for
longer inputs) and noise ``e_i``:

    P(correct | prompt, i) = sigmoid(base + S - d_i + e_i)

``base`` is solved per task so that "Let's think step by step." averages a seeded 36-52 %.

Noise follows meaning, not spelling. The per-example noise ``e_i``, the temperature-0 draw that
decides whether an answer is right and the per-prompt ``quirk`` are each a mix of a part seeded
by the prompt's meaning (a sum of seeded per-facet, per-example effects: each instruction
changes some answers for the better and some for the worse) and a smaller part seeded by the
exact wording (``TEXT_SHARE``). A synonym swap that keeps the meaning keeps most answers; adding
an instruction changes some of them. So a dev score is a fixed, noisy estimate, overfitting the
dev split is possible, and two similar prompts compared on the same examples share most of their
noise: their score difference tells more than either score alone.

Wrong answers show why they are wrong (:meth:`Landscape.symptom`): about half of them carry the
mark of a helpful instruction the prompt lacks (drawn in proportion to its weight) or of a
harmful one it has, as a real model's mistakes show a skipped check or a wrong format; 30 % of
those marks point at any of the task's facets, whatever the prompt says (a mistake explained
wrongly). Reading these outputs is how reflection can find the missing instruction
(:mod:`pipeline.sim.feedback`), and how it can be misled.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from pipeline.sim.facets import Conflict, Facet, draw_conflicts, draw_facets
from pipeline.sim.tasks import Task
from pipeline.sim.textnorm import NEGATORS, gauss, normalize, sigmoid, stem_phrase, tokens

REFERENCE_PROMPT = "Let's think step by step."
SATURATION = 3.0
SCALE = 0.3
DECAY = 0.45
LENGTH_COST = 0.04
QUIRK_SD = 0.1
NOISE_SD = 0.35
DIFFICULTY_SD = 0.9
TEXT_SHARE = 0.3
SYMPTOM_RATE = 0.5
MISLEAD = 0.3
_MEANING_SHARE = math.sqrt(1.0 - TEXT_SHARE**2)
_NORMAL = NormalDist()


def phrase_hits(text: str, phrase: str) -> int:
    """Occurrences of ``phrase`` in stem string ``text`` not preceded by a negator (0 or 1)."""
    padded, needle = f" {text} ", f" {phrase} "
    start = padded.find(needle)
    while start >= 0:
        before = padded[:start].split()[-2:]
        if not NEGATORS.intersection(before):
            return 1
        start = padded.find(needle, start + 1)
    return 0


def facet_matches(stemmed: str, facet: Facet) -> int:
    """How many distinct phrases of ``facet`` occur in ``stemmed``."""
    if facet.weight < 0:
        return sum(1 for p in facet.phrases if f" {p} " in f" {stemmed} ")
    return sum(phrase_hits(stemmed, p) for p in facet.phrases)


def facet_value(facet: Facet, matches: int) -> float:
    return facet.weight * (1.0 - DECAY**matches) / (1.0 - DECAY)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The terms of a prompt's logit contribution ``total``."""

    matches: dict[str, int]
    gain: float
    loss: float
    clash: float
    length: float
    quirk: float

    @property
    def total(self) -> float:
        return SCALE * (self.gain - self.clash - self.length) + self.loss + self.quirk

    @property
    def meaning(self) -> tuple[str, ...]:
        """The facets the prompt matches, sorted: what its noise is seeded by."""
        return tuple(sorted(name for name, m in self.matches.items() if m))


@dataclass(frozen=True, slots=True)
class _Reading:
    """What the landscape makes of one normalised prompt (cached)."""

    logit: float
    meaning: tuple[str, ...]
    faults: tuple[tuple[str, float], ...]  # facets whose absence (or presence) costs, by weight


class Landscape:
    """P(correct | prompt, example) for one task; see the module docstring for the model."""

    def __init__(self, task: Task, *, seed: int = 0) -> None:
        self.task = task
        self.seed = seed
        rng = random.Random(f"landscape|{seed}|{task.name}")
        self.facets: tuple[Facet, ...] = draw_facets(task, rng)
        self.conflicts: tuple[Conflict, ...] = draw_conflicts(self.facets, rng)
        self.free_words = 35 + int(16 * rng.random())
        self.difficulty: tuple[float, ...] = self._difficulties()
        self.reference_accuracy = 0.36 + 0.16 * rng.random()
        self.base = 0.0
        self._read = lru_cache(maxsize=8192)(self._read_uncached)
        self._effect = lru_cache(maxsize=1 << 16)(self._effect_uncached)
        self.base = self._calibrate()

    def _difficulties(self) -> tuple[float, ...]:
        lengths = [len(tokens(e.input)) for e in self.task.examples]
        mean = statistics.fmean(lengths)
        spread = statistics.pstdev(lengths) or 1.0
        return tuple(
            DIFFICULTY_SD * gauss(self.seed, self.task.name, "difficulty", i)
            + 0.25 * (n - mean) / spread
            for i, n in enumerate(lengths)
        )

    def _calibrate(self) -> float:
        """The base for which the reference prompt's mean P(correct) is the drawn target."""
        shift = self.prompt_logit(REFERENCE_PROMPT)
        low, high = -8.0, 8.0
        for _ in range(40):
            mid = (low + high) / 2
            mean = statistics.fmean(sigmoid(mid + shift - d) for d in self.difficulty)
            low, high = (mid, high) if mean < self.reference_accuracy else (low, mid)
        return (low + high) / 2

    def prompt_logit(self, prompt: str) -> float:
        """S(prompt): the prompt's contribution to every example's logit (cached)."""
        return self._read(normalize(prompt)).logit

    def meaning(self, prompt: str) -> tuple[str, ...]:
        """The facets ``prompt`` matches (its meaning, as far as the landscape cares)."""
        return self._read(normalize(prompt)).meaning

    def faults(self, prompt: str) -> tuple[str, ...]:
        """The helpful facets ``prompt`` lacks and the harmful ones it has."""
        return tuple(name for name, _ in self._read(normalize(prompt)).faults)

    def _read_uncached(self, key: str) -> _Reading:
        parts = self.breakdown(key)
        faults = tuple(
            (f.name, abs(f.weight))
            for f in self.facets
            if (f.weight > 0) != (parts.matches[f.name] > 0)
        )
        return _Reading(parts.total, parts.meaning, faults)

    def breakdown(self, prompt: str) -> Breakdown:
        """The terms of S(prompt), for tests and for explaining a score."""
        key = normalize(prompt)
        stemmed = stem_phrase(key)
        matches = {f.name: facet_matches(stemmed, f) for f in self.facets}
        values = [facet_value(f, matches[f.name]) for f in self.facets]
        meaning = tuple(sorted(name for name, m in matches.items() if m))
        return Breakdown(
            matches=matches,
            gain=SATURATION * math.tanh(sum(v for v in values if v > 0) / SATURATION),
            loss=sum(v for v in values if v < 0),
            clash=sum(c.penalty for c in self.conflicts if _clashes(c, matches)),
            length=LENGTH_COST * max(0, len(stemmed.split()) - self.free_words),
            quirk=QUIRK_SD * self._mixed("quirk", meaning, key, -1),
        )

    def _effect_uncached(self, kind: str, facet: str, index: int) -> float:
        return gauss(self.seed, self.task.name, kind, facet, index)

    def _mixed(self, kind: str, meaning: tuple[str, ...], key: str, index: int) -> float:
        """A standard-normal draw for (prompt, example): mostly seeded by the prompt's meaning
        (a sum of per-facet effects), partly by its exact wording ``key``."""
        shared = self._effect(kind, "", index) + sum(self._effect(kind, f, index) for f in meaning)
        by_meaning = shared / math.sqrt(1 + len(meaning))
        by_text = gauss(self.seed, self.task.name, kind, key, index)
        return _MEANING_SHARE * by_meaning + TEXT_SHARE * by_text

    def p_correct(self, prompt: str, index: int) -> float:
        """P(correct) of example ``index`` under ``prompt`` (request text minus the question)."""
        key = normalize(prompt)
        reading = self._read(key)
        noise = NOISE_SD * self._mixed("noise", reading.meaning, key, index)
        return sigmoid(self.base + reading.logit - self.difficulty[index] + noise)

    def draw(self, prompt: str, index: int) -> float:
        """The temperature-0 draw in (0, 1) for (prompt, example): it follows meaning too."""
        key = normalize(prompt)
        return _NORMAL.cdf(self._mixed("draw", self._read(key).meaning, key, index))

    def is_correct(self, prompt: str, index: int, *, draw: float | None = None) -> bool:
        """Whether the answer is right: ``draw`` (uniform in [0, 1)) < P(correct).

        Without ``draw``, :meth:`draw` is used (temperature 0).
        """
        if draw is None:
            draw = self.draw(prompt, index)
        return draw < self.p_correct(prompt, index)

    def symptom(self, prompt: str, u: float) -> str | None:
        """What a wrong answer under ``prompt`` shows of its cause, for ``u`` uniform in [0, 1).

        With probability ``SYMPTOM_RATE`` it shows a facet: most often one the prompt lacks
        (helpful) or has (harmful), drawn in proportion to its weight; a ``MISLEAD`` share of
        the time any facet of the task, whatever the prompt says (a mistake explained wrongly).
        Otherwise None: a mistake with no visible cause.
        """
        if u >= SYMPTOM_RATE:
            return None
        u /= SYMPTOM_RATE
        if u < MISLEAD:
            return self.facets[int(u / MISLEAD * len(self.facets))].name
        faults = self._read(normalize(prompt)).faults
        if not faults:
            return None
        target = (u - MISLEAD) / (1 - MISLEAD) * sum(w for _, w in faults)
        for name, weight in faults:
            target -= weight
            if target < 0:
                return name
        return faults[-1][0]

    def accuracy(self, prompt: str, indices: Sequence[int] | None = None) -> float:
        """Mean P(correct) of ``prompt`` over ``indices`` (default: every example)."""
        chosen = range(len(self.task.examples)) if indices is None else indices
        return statistics.fmean(self.p_correct(prompt, i) for i in chosen)

    def score(self, prompt: str, indices: Sequence[int]) -> float:
        """The temperature-0 accuracy of ``prompt`` on ``indices`` (what a dev evaluation sees)."""
        return statistics.fmean(float(self.is_correct(prompt, i)) for i in indices)


def _clashes(conflict: Conflict, matches: dict[str, int]) -> bool:
    def on(name: str) -> bool:
        return matches.get(name, 0) > 0

    return on(conflict.first) and on(conflict.second) and not on(conflict.resolver)
