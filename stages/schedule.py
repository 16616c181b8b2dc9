"""The learning rate of GPO: how many words of the current prompt the optimizer may change.

The paper's schedule is a cosine decay of the word budget from 50 to 10 over the whole run::

    N_t = int(end + (start - end) * 0.5 * (1 + cos(pi * t / T)))

where ``t`` is the trajectory length when the step starts (1 at the first step) and ``T`` the total
number of steps (``epochs * steps_per_epoch``). For BBH (48 training examples, T = 18) this gives
49, 48, 47, 45, 42, 40, 36, 33, 30, 26, 23, 20, 17, 14, 12, 11, 10, 10.

Other schedules of the ablation: ``"none"`` (no limit: ``None``), ``"fixed"`` (always ``start``)
and ``"linear"`` (``int(end + (start - end) * (1 - t / T))``).

Warmup (the ablation found that it always hurts, so it is off by default): for the first
``warmup_steps`` steps the budget ramps linearly from ``end`` up to the schedule's value::

    N_t = int(end + (S_t - end) * t / W)    for 1 <= t <= W

where ``S_t`` is the schedule's value without warmup at ``t`` and ``W = warmup_steps``; at ``t = W``
the ramp reaches ``S_W``, after that the schedule applies unchanged. Warmup does not apply to
``"none"``.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pipeline.errors import ConfigError

ScheduleKind = Literal["none", "fixed", "linear", "cosine"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)


def steps_per_epoch(n_train: int, batch_size: int = 8) -> int:
    """Steps in one epoch: ``n_train // batch_size``, plus one for a remainder of at least half a
    batch (4 of 8), and at least 1.

    >>> steps_per_epoch(48), steps_per_epoch(100), steps_per_epoch(20), steps_per_epoch(3)
    (6, 13, 3, 1)
    """
    _require_int("n_train", n_train, minimum=0)
    _require_int("batch_size", batch_size, minimum=1)
    full, rest = divmod(n_train, batch_size)
    extra = 1 if 2 * rest >= batch_size else 0
    return max(1, full + extra)


def total_steps(n_train: int, epochs: int = 3, batch_size: int = 8) -> int:
    """``T = epochs * steps_per_epoch(n_train, batch_size)``; BBH (48 train examples): 18."""
    _require_int("epochs", epochs, minimum=1)
    return epochs * steps_per_epoch(n_train, batch_size)


def word_budget(
    kind: ScheduleKind,
    t: int,
    total: int,
    *,
    start: int = 50,
    end: int = 10,
    warmup_steps: int = 0,
) -> int | None:
    """Words the optimizer may change at step ``t`` of ``total`` (``None``: no limit).

    ``t`` is the trajectory length (1 at the first step), ``1 <= t <= total``. Raises
    :class:`~pipeline.errors.ConfigError` for a bad kind, total, start, end or warmup and
    :class:`ValueError` for ``t`` out of range.
    """
    validate_schedule(kind, total, start=start, end=end, warmup_steps=warmup_steps)
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= total:
        raise ValueError(f"word_budget: t must be an integer in 1..{total}, found {t!r}")
    if kind == "none":
        return None
    value = _schedule_value(kind, t, total, start, end)
    if t <= warmup_steps:
        return int(end + (value - end) * t / warmup_steps)
    return int(value)


def validate_schedule(
    kind: str, total: int, *, start: int, end: int, warmup_steps: int = 0
) -> None:
    """Raise :class:`~pipeline.errors.ConfigError` unless the schedule's arguments make sense."""
    if kind not in SCHEDULE_KINDS:
        raise ConfigError(f"schedule: expected one of {', '.join(SCHEDULE_KINDS)}, found {kind!r}")
    _require_int("total steps", total, minimum=1)
    _require_int("budget_end", end, minimum=1)
    _require_int("budget_start", start, minimum=end)
    _require_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps > total:
        raise ConfigError(
            f"warmup_steps: expected at most the total steps ({total}), found {warmup_steps}"
        )


def _schedule_value(kind: str, t: int, total: int, start: int, end: int) -> float:
    if kind == "fixed":
        return float(start)
    if kind == "linear":
        return end + (start - end) * (1 - t / total)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t / total))


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, found {value!r}")
