"""Paired statistics for ``gpo compare``: is one preset better than another, or is it noise?

Each pair is one (job, seed) run under two presets on the same dev and test splits; its
difference is the test accuracy of the one minus the other's. Over the pairs: the mean
difference with its standard error (the sample standard deviation over sqrt(n), none below two
pairs), and a two-sided exact sign test (binomial with p = 1/2 over the pairs that are not
ties). A difference is *within noise* when it is smaller than two standard errors or the sign
test's p-value is at least 0.05; with fewer than two pairs nothing can be said.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

ALPHA: Final = 0.05
TIE: Final = 1e-9  # two scores closer than this are equal (float noise of the same fraction)

Verdict = Literal["better", "worse", "within noise", "too few pairs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedStats:
    """``mean_diff`` and ``se`` in points of accuracy (``se`` None below two pairs);
    ``p_value`` None when no pair differs."""

    n: int
    mean_diff: float | None
    se: float | None
    wins: int
    ties: int
    losses: int
    p_value: float | None
    verdict: Verdict


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least as uneven | p = 1/2); 1.0 with no pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    extreme = max(wins, losses)
    tail = sum(math.comb(n, k) for k in range(extreme, n + 1))
    return min(1.0, 2 * tail / (1 << n))


def mean_and_se(diffs: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and its standard error (sample sd / sqrt(n)); None where undefined."""
    n = len(diffs)
    if n == 0:
        return None, None
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None
    variance = math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(variance / n)


def paired(diffs: Sequence[float]) -> PairedStats:
    """The statistics of paired differences (one preset minus the reference, per pair)."""
    wins = sum(d > TIE for d in diffs)
    losses = sum(d < -TIE for d in diffs)
    mean, se = mean_and_se(diffs)
    p = sign_test_p(wins, losses) if wins + losses else None
    return PairedStats(
        n=len(diffs),
        mean_diff=mean,
        se=se,
        wins=wins,
        ties=len(diffs) - wins - losses,
        losses=losses,
        p_value=p,
        verdict=verdict(mean, se, p, len(diffs)),
    )


def verdict(mean: float | None, se: float | None, p: float | None, n: int) -> Verdict:
    """``too few pairs`` below two; ``within noise`` when |mean| < 2 SE or p >= 0.05."""
    if n < 2 or mean is None or se is None:
        return "too few pairs"
    if abs(mean) < 2 * se or p is None or p >= ALPHA:
        return "within noise"
    return "better" if mean > 0 else "worse"
