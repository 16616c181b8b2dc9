"""The learning rate: steps per epoch and the word-budget schedules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from stages.schedule import ScheduleKind, steps_per_epoch, total_steps, word_budget

LIMITED: tuple[ScheduleKind, ...] = ("fixed", "linear", "cosine")
DECAYING: tuple[ScheduleKind, ...] = ("linear", "cosine")
BBH_COSINE = [49, 48, 47, 45, 42, 40, 36, 33, 30, 26, 23, 20, 17, 14, 12, 11, 10, 10]


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(t, total, start, end) with 1 <= t <= total and 1 <= end <= start."""
    total = draw(st.integers(1, 200))
    t = draw(st.integers(1, total))
    end = draw(st.integers(1, 100))
    start = draw(st.integers(end, 300))
    return t, total, start, end


@pytest.mark.parametrize(
    ("n_train", "expected"), [(48, 6), (100, 13), (20, 3), (19, 2), (3, 1), (0, 1), (8, 1)]
)
def test_steps_per_epoch_rounds_a_remainder_of_half_a_batch_up(n_train: int, expected: int) -> None:
    assert steps_per_epoch(n_train) == expected


def test_bbh_has_18_steps() -> None:
    assert total_steps(48) == 18


def test_bbh_cosine_sequence_matches_the_paper() -> None:
    assert [word_budget("cosine", t, 18) for t in range(1, 19)] == BBH_COSINE


def test_linear_decays_from_start_to_end() -> None:
    assert [word_budget("linear", t, 4) for t in range(1, 5)] == [40, 30, 20, 10]


def test_none_has_no_limit() -> None:
    assert word_budget("none", 1, 18) is None
    assert word_budget("none", 5, 18, warmup_steps=10) is None


def test_warmup_ramps_from_end_to_the_schedule_value() -> None:
    budgets = [word_budget("fixed", t, 18, warmup_steps=4) for t in range(1, 7)]
    assert budgets == [20, 30, 40, 50, 50, 50]


def test_warmup_reaches_the_cosine_value_at_its_last_step() -> None:
    assert word_budget("cosine", 3, 18, warmup_steps=3) == BBH_COSINE[2]
    assert word_budget("cosine", 1, 18, warmup_steps=3) == int(10 + (49 - 10) / 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "exponential"},
        {"total": 0},
        {"start": 5, "end": 10},
        {"end": 0},
        {"warmup_steps": -1},
        {"warmup_steps": 19},
    ],
)
def test_bad_schedule_arguments_are_config_errors(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"kind": "cosine", "t": 1, "total": 18, **kwargs}
    with pytest.raises(ConfigError):
        word_budget(**args)


@pytest.mark.parametrize("t", [0, 19, -3])
def test_step_outside_the_run_is_a_value_error(t: int) -> None:
    with pytest.raises(ValueError, match="t must be"):
        word_budget("cosine", t, 18)


@pytest.mark.parametrize(("n_train", "batch_size"), [(-1, 8), (10, 0)])
def test_bad_step_arguments_are_config_errors(n_train: int, batch_size: int) -> None:
    with pytest.raises(ConfigError):
        steps_per_epoch(n_train, batch_size)


@given(schedules(), st.sampled_from(LIMITED), st.integers(0, 200))
def test_budgets_stay_within_end_and_start(
    case: tuple[int, int, int, int], kind: ScheduleKind, warmup: int
) -> None:
    t, total, start, end = case
    budget = word_budget(kind, t, total, start=start, end=end, warmup_steps=min(warmup, total))
    assert budget is not None
    assert end <= budget <= start


@given(schedules(), st.sampled_from(DECAYING))
def test_decaying_budgets_never_increase(
    case: tuple[int, int, int, int], kind: ScheduleKind
) -> None:
    t, total, start, end = case
    now = word_budget(kind, t, total, start=start, end=end)
    later = word_budget(kind, min(t + 1, total), total, start=start, end=end)
    assert now is not None
    assert later is not None
    assert later <= now


@given(schedules())
def test_fixed_is_constant(case: tuple[int, int, int, int]) -> None:
    t, total, start, end = case
    assert word_budget("fixed", t, total, start=start, end=end) == start


@given(schedules())
def test_cosine_ends_at_end(case: tuple[int, int, int, int]) -> None:
    _, total, start, end = case
    assert word_budget("cosine", total, total, start=start, end=end) == end


@given(schedules())
def test_none_is_always_unlimited(case: tuple[int, int, int, int]) -> None:
    t, total, start, end = case
    assert word_budget("none", t, total, start=start, end=end) is None
