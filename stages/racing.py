"""Racing of a step's new candidates (opt-in, beyond the paper: ``evaluation = "racing"``).

GPO scores every new candidate on the whole dev split and keeps the best. Racing scores them in
``racing_rounds`` rounds, each on the next slice of the dev examples in a fixed order (a
permutation seeded by the job's seed, the job and the step, so a resumed step asks the same
calls, which come from the response cache); after each round but the last, a candidate that
cannot plausibly beat the current leader stops. The survivors go on to the whole dev split, so
the candidate selected always has a full-dev score and selection stays "the best new
candidate"; a stopped one keeps its partial score, marked as such
(:attr:`~stages.messages.CandidateRecord.raced_out`).

The bound. Selection compares full-dev scores, so the question after a round is whether ``c``
can still end the dev split above the leader (most examples right so far). Outcomes are right
or wrong and every candidate alive has been asked the same ``m`` examples: on ``b`` of them the
leader was right and ``c`` wrong, on ``w`` the reverse, so ``c`` is ``d = b - w`` behind. On the
``r`` examples left, were ``c`` from now on as good as the leader, the gap would move by a sum of
``r`` steps of -1, 0 or +1 with mean 0 and variance ``q * r``, ``q`` the rate at which the two
disagree, estimated as ``(b + w + 1) / (m + 2)`` (one pseudo-disagreement in two examples, so a
rate seen once or never is not taken at face value). ``c`` stops when

    d > racing_z * sqrt(q * r)      (the default 1.5: about 7 % one-sided, per look)

that is, when catching up would take a move of more than ``racing_z`` standard deviations even
granting ``c`` the leader's quality from here on (its past says it is worse, so the true chance
is smaller). It asks for evidence in proportion to what is left: with 4 rounds on 48 examples
and the default, a candidate never ahead of the leader on an example stops at the first look
when it is 7 behind, at the second 3, at the third 2.

Why this bound: a test of "is ``c`` worse than the leader" (McNemar's, on the same pairs) asks
for more than selection needs, and Hoeffding or Bernstein bounds on each candidate alone ignore
the pairing and, over a range of 2 for a difference in -1..1, ask for a lead of about 70 points
on a quarter of a 48-example dev split: they would never save a call at the paper's dev sizes.
Tuned on dev outcomes only (216 GPO steps of the simulator's built-in tasks, seeds apart from
B9's): with 4 rounds, ``racing_z = 1.5`` kept the candidate that full evaluation would have
selected in about 99 % of steps (McNemar's test at z = 2: 100 %, but it saved only 8 % of the
steps' calls), at a mean cost of 0.03 points of the selected prompt's dev score. That small risk
of stopping the eventual winner is the price of racing; ``evaluation = "full"`` (the default)
has none. A stopped candidate proposed again in a later step is raced again (its calls already
asked come from the response cache).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from stages.messages import Outcome

Score = Callable[[tuple[str, ...], tuple[int, ...]], Awaitable[tuple[tuple[Outcome, ...], ...]]]
"""Score prompts on the dev examples at these indices: per prompt, its outcomes in that order."""


@dataclass(frozen=True, slots=True)
class Raced:
    """A candidate after the race: its outcomes (in dev order) and whether it was stopped."""

    prompt: str
    outcomes: tuple[Outcome, ...]
    raced_out: bool


def race_order(size: int, seed: int) -> tuple[int, ...]:
    """A permutation of ``range(size)`` drawn from ``seed``."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    return tuple(order)


def rounds_of(order: Sequence[int], rounds: int) -> tuple[tuple[int, ...], ...]:
    """``order`` cut into ``rounds`` consecutive slices as even as can be (none empty)."""
    count = min(rounds, len(order))
    cuts = [len(order) * i // count for i in range(count + 1)] if count else [0]
    return tuple(tuple(order[a:b]) for a, b in itertools.pairwise(cuts))


def overtake_z(leader: Sequence[bool], other: Sequence[bool], remaining: int) -> float:
    """How many standard deviations of the gap's move over ``remaining`` examples ``other`` is
    behind ``leader`` on paired outcomes (the module's bound; 0 when it is not behind)."""
    ahead = sum(a and not b for a, b in zip(leader, other, strict=True))
    behind = sum(b and not a for a, b in zip(leader, other, strict=True))
    if ahead <= behind:
        return 0.0
    if remaining <= 0:
        return math.inf
    rate = (ahead + behind + 1) / (len(leader) + 2)
    return (ahead - behind) / math.sqrt(rate * remaining)


def stopped(correct: Sequence[Sequence[bool]], z: float, remaining: int) -> frozenset[int]:
    """The candidates (by position) that cannot plausibly catch up with the leader, which is
    the one with most examples right (the first of equals) and is never stopped."""
    if not correct:
        return frozenset()
    leader = max(range(len(correct)), key=lambda i: (sum(correct[i]), -i))
    return frozenset(
        i
        for i, c in enumerate(correct)
        if i != leader and overtake_z(correct[leader], c, remaining) > z
    )


async def race(
    prompts: tuple[str, ...], rounds: Sequence[tuple[int, ...]], score: Score, z: float
) -> tuple[Raced, ...]:
    """Score ``prompts`` round by round, stopping hopeless ones between rounds; once a single
    candidate is left, the rest of its examples are scored in one go."""
    seen: list[list[Outcome]] = [[] for _ in prompts]
    alive = list(range(len(prompts)))
    pending = list(rounds)
    while pending and alive:
        chunk = pending.pop(0) if len(alive) > 1 else _rest(pending)
        scored = await score(tuple(prompts[i] for i in alive), chunk)
        for i, outcomes in zip(alive, scored, strict=True):
            seen[i].extend(outcomes)
        if pending:
            left = sum(len(c) for c in pending)
            out = stopped([[o.correct for o in seen[i]] for i in alive], z, left)
            alive = [i for k, i in enumerate(alive) if k not in out]
    kept = set(alive)
    return tuple(
        Raced(prompt=p, outcomes=_in_dev_order(seen[i]), raced_out=i not in kept)
        for i, p in enumerate(prompts)
    )


def _rest(pending: list[tuple[int, ...]]) -> tuple[int, ...]:
    rest = tuple(i for chunk in pending for i in chunk)
    pending.clear()
    return rest


def _in_dev_order(outcomes: list[Outcome]) -> tuple[Outcome, ...]:
    return tuple(sorted(outcomes, key=lambda o: o.index))
