"""Backoff: capped exponential with full jitter; the server's retry-after wins, capped."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import RateLimited, ServerError
from pipeline.llm._endpoint import RetryPolicy
from pipeline.llm._retry import backoff_s, delay_s

POLICY = RetryPolicy(max_attempts=8, base_s=0.5, cap_s=4.0, retry_after_cap_s=60.0)


@settings(max_examples=200, deadline=None, database=None)
@given(
    base=st.floats(0.0, 10.0, allow_nan=False),
    extra=st.floats(0.0, 100.0, allow_nan=False),
    attempt=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_is_within_full_jitter_bounds(
    base: float, extra: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(base_s=base, cap_s=base + extra)
    wait = backoff_s(policy, attempt, random.Random(seed))
    assert 0.0 <= wait <= min(policy.cap_s, base * 2 ** (attempt - 1))


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)])
def test_backoff_jitter_spans_zero_to_the_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(1)
    waits = [backoff_s(POLICY, attempt, rng) for _ in range(2000)]
    assert max(waits) <= ceiling
    assert max(waits) > 0.95 * ceiling
    assert min(waits) < 0.05 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_s(POLICY, a, random.Random(42)) for a in range(1, 6)]
    again = [backoff_s(POLICY, a, random.Random(42)) for a in range(1, 6)]
    assert first == again


@pytest.mark.parametrize("attempt", [1, 5])
def test_retry_after_is_honoured_whatever_the_attempt(attempt: int) -> None:
    error = RateLimited("slow down", retry_after=7.5)
    assert delay_s(POLICY, error, attempt, random.Random(0)) == 7.5


def test_retry_after_is_capped() -> None:
    error = ServerError("busy", retry_after=3600.0)
    assert delay_s(POLICY, error, 1, random.Random(0)) == 60.0


def test_zero_retry_after_means_no_wait() -> None:
    assert delay_s(POLICY, RateLimited("now", retry_after=0.0), 3, random.Random(0)) == 0.0


def test_without_retry_after_the_backoff_applies() -> None:
    error = ServerError("busy")
    assert delay_s(POLICY, error, 3, random.Random(9)) == backoff_s(POLICY, 3, random.Random(9))
