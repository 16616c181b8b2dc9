"""The hidden, seeded prompt-quality landscape of one task (the simulated task model's "skill").

Model. For a task and a simulator seed, a hidden set of 12-19 *facets* is drawn. Each facet is a
family of paraphrased phrases with a weight: always-present generic ones (reason step by step,
verify the work, state the final answer; and two harmful ones, "answer without thinking" and
"guess"), four to seven optional generic ones (read carefully, plan, explain, decompose, expert
role, take a deep breath, be concise, consider alternatives, hedging, off-topic requests) and
task-specific ones derived from the task's data (its answer format, e.g. "a single number" or
"Yes or No", with a wrong-format facet that hurts; a strategy family, e.g. "eliminate options";
two to four of its frequent key words or operator symbols, e.g. "fruits", "parentheses").
A prompt's logit contribution is

    S = C * tanh(P / C) + N - conflicts - length_penalty + quirk

where a facet with ``m`` distinct matching phrases contributes ``w * (1 - r**m) / (1 - r)``
(``r = 0.45``, diminishing returns; a phrase right after "not"/"never"/"without" does not count
for a positive facet), ``P``/``N`` sum the positive/negative contributions, ``C = 3`` saturates
the gain from piling up instructions, each drawn conflict (two instructions that clash unless a
third is present, e.g. "be concise" with "explain" unless "final answer") costs 0.3-0.6,
every word past a seeded 35-50 words costs 0.04, and ``quirk ~ N(0, 0.15)`` is a fixed
per-prompt effect. Then, for example ``i`` with difficulty ``d_i ~ N(0, 0.9)`` (plus a little for
longer inputs) and per-(prompt, example) noise ``e ~ N(0, 0.35)``:

    P(correct | prompt, i) = sigmoid(base + S - d_i + e)

``base`` is solved per task so that "Let's think step by step." averages a seeded 36-52 % over
the task's examples. Whether a temperature-0 answer is right is a hash-seeded draw of (seed,
task, normalised prompt, example), so a prompt's dev score is a fixed, noisy estimate.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.sim.facets import Conflict, Facet, draw_conflicts, draw_facets
from pipeline.sim.tasks import Task
from pipeline.sim.textnorm import NEGATORS, gauss, normalize, sigmoid, stem_phrase, tokens, unit

REFERENCE_PROMPT = "Let's think step by step."
SATURATION = 3.0
DECAY = 0.45
LENGTH_COST = 0.04
QUIRK_SD = 0.15
NOISE_SD = 0.35
DIFFICULTY_SD = 0.9


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
        return self.gain + self.loss - self.clash - self.length + self.quirk


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
        self._logit = lru_cache(maxsize=8192)(self._logit_uncached)
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
        return self._logit(normalize(prompt))

    def _logit_uncached(self, key: str) -> float:
        return self.breakdown(key).total

    def breakdown(self, prompt: str) -> Breakdown:
        """The terms of S(prompt), for tests and for explaining a score."""
        key = normalize(prompt)
        stemmed = stem_phrase(key)
        matches = {f.name: facet_matches(stemmed, f) for f in self.facets}
        values = [facet_value(f, matches[f.name]) for f in self.facets]
        return Breakdown(
            matches=matches,
            gain=SATURATION * math.tanh(sum(v for v in values if v > 0) / SATURATION),
            loss=sum(v for v in values if v < 0),
            clash=sum(c.penalty for c in self.conflicts if _clashes(c, matches)),
            length=LENGTH_COST * max(0, len(stemmed.split()) - self.free_words),
            quirk=QUIRK_SD * gauss(self.seed, self.task.name, "quirk", key),
        )

    def p_correct(self, prompt: str, index: int) -> float:
        """P(correct) of example ``index`` under ``prompt`` (request text minus the question)."""
        key = normalize(prompt)
        noise = NOISE_SD * gauss(self.seed, self.task.name, "noise", key, index)
        return sigmoid(self.base + self._logit(key) - self.difficulty[index] + noise)

    def is_correct(self, prompt: str, index: int, *, draw: float | None = None) -> bool:
        """Whether the answer is right: ``draw`` (uniform in [0, 1)) < P(correct).

        Without ``draw``, a hash of (seed, task, prompt, index) is the draw (temperature 0).
        """
        if draw is None:
            draw = unit(self.seed, self.task.name, "draw", normalize(prompt), index)
        return draw < self.p_correct(prompt, index)

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
