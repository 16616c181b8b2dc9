"""One strategy space for GPO and its baselines; the methods are named points in it (presets).

The paper frames prompt optimizers as gradient descent: the *update direction* is what the
optimizer model is shown (a trajectory of past prompts with scores, optionally a reflection on
errors), the *update method* is how the new prompt is made (generating a new one or editing the
current one) and the *learning rate* is how many words may change, following a schedule. Every
knob is a field of :class:`Strategy`; :data:`PRESETS` names GPO and the baselines:

========  ============  ===  ============  ==========  ==========  ========  =======
preset    trajectory    k    order         reflection  update      schedule  budget
========  ============  ===  ============  ==========  ==========  ========  =======
gpo       relevance     3    similarity    no          generation  cosine    50 -> 10
opro      importance    20   ascending     no          generation  none      -
ape       none          1    chronological no          generation  none      -
apo       none          1    chronological yes         editing     none      -
pe2       recency       3    chronological yes         editing     fixed     30
baseline  none          1    chronological no          generation  none      - (no steps)
========  ============  ===  ============  ==========  ==========  ========  =======

``pe2`` is "PE2-like": k = 3 shows as many prompts as GPO, so the two differ only in how prompts
are chosen (the last ones vs the most similar ones), reflection and the schedule; its fixed limit
of 30 words is the mean of GPO's cosine budget over a run (about 30 for T = 18), so both spend a
similar total word budget. PE2 asks to change up to a number of words *of the original prompt*,
which is an edit, hence ``update="editing"``.

Beyond the paper, ``evaluation = "racing"`` (off by default, in every preset) scores a step's
new candidates on the dev split in ``racing_rounds`` rounds and stops those that cannot
plausibly beat the leader (:mod:`stages.racing`); presets leave it as the job or run sets it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NoReturn, get_args

from pipeline.errors import ConfigError
from stages.schedule import SCHEDULE_KINDS, ScheduleKind

Trajectory = Literal["none", "recency", "relevance", "importance", "summarization"]
HistoryOrder = Literal["similarity", "ascending", "chronological"]
Update = Literal["generation", "editing"]
RelevanceBackend = Literal["embeddings", "lexical"]
EvaluationMode = Literal["full", "racing"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "trajectory": get_args(Trajectory),
    "history_order": get_args(HistoryOrder),
    "update": get_args(Update),
    "schedule": SCHEDULE_KINDS,
    "relevance_backend": get_args(RelevanceBackend),
    "evaluation": get_args(EvaluationMode),
}
_MINIMUM: dict[str, int] = {
    "k": 1,
    "reflection_errors": 1,
    "budget_start": 1,
    "budget_end": 1,
    "warmup_steps": 0,
    "candidates": 1,
    "epochs": 1,
    "batch_size": 1,
    "exemplars": 0,
    "max_reasks": 0,
    "racing_rounds": 2,
}
_BOOLS = ("reflection", "reject_over_budget", "optimize")
_TEMPERATURES = ("optimizer_temperature", "scorer_temperature")
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Every knob of the optimizer; the defaults are GPO's. Validated on construction."""

    trajectory: Trajectory = "relevance"
    k: int = 3  # prompts shown, including the current one
    history_order: HistoryOrder = "similarity"
    reflection: bool = False
    reflection_errors: int = 3  # errors of the last evaluation shown to the reflection call
    update: Update = "generation"
    schedule: ScheduleKind = "cosine"
    budget_start: int = 50
    budget_end: int = 10
    warmup_steps: int = 0
    candidates: int = 8
    epochs: int = 3
    batch_size: int = 8
    optimizer_temperature: float = 1.0
    scorer_temperature: float = 0.0
    exemplars: int = 3
    reject_over_budget: bool = False
    max_reasks: int = 2
    relevance_backend: RelevanceBackend = "embeddings"
    optimize: bool = True  # False: the baseline, evaluate the initial prompt only
    output_tags: tuple[str, str] = field(default=("<START>", "<END>"))
    evaluation: EvaluationMode = "full"  # "racing": stop hopeless candidates early (stages.racing)
    racing_rounds: int = 4  # racing: the dev split is scored in this many rounds
    racing_z: float = 1.5  # racing: stop a candidate this many standard deviations behind

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            _check_choice(name, getattr(self, name), choices)
        for name, minimum in _MINIMUM.items():
            _check_int(name, getattr(self, name), minimum)
        for name in _BOOLS:
            _check_bool(name, getattr(self, name))
        for name in _TEMPERATURES:
            object.__setattr__(self, name, _check_temperature(name, getattr(self, name)))
        object.__setattr__(self, "output_tags", _check_tags(self.output_tags))
        object.__setattr__(self, "racing_z", _check_positive("racing_z", self.racing_z))
        self._check_consistency()

    def _check_consistency(self) -> None:
        if self.budget_end > self.budget_start:
            _fail("budget_end", f"at most budget_start ({self.budget_start})", self.budget_end)
        if self.trajectory == "none" and self.k != 1:
            _fail("k", "1 when trajectory is 'none' (only the current prompt is shown)", self.k)

    def describe(self) -> dict[str, Any]:
        """Every knob as a JSON-able dict (tuples become lists), in field order."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in dataclasses.fields(self)
            for value in (getattr(self, f.name),)
        }


def knobs() -> tuple[str, ...]:
    """The names of all knobs, in field order."""
    return tuple(f.name for f in dataclasses.fields(Strategy))


def _fail(name: str, expected: str, found: object) -> NoReturn:
    raise ConfigError(f"strategy knob {name!r}: expected {expected}, found {found!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(name, "one of " + ", ".join(repr(c) for c in choices), value)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        _fail(name, "true or false", value)


def _check_temperature(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(name, f"a number in 0..{MAX_TEMPERATURE}", value)
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= MAX_TEMPERATURE):
        _fail(name, f"a number in 0..{MAX_TEMPERATURE}", value)
    return number


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(name, "a positive number", value)
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        _fail(name, "a positive number", value)
    return number


def _check_tags(value: object) -> tuple[str, str]:
    expected = "two different non-empty tags without surrounding whitespace, e.g. <START>, <END>"
    if isinstance(value, str) or not isinstance(value, tuple | list) or len(value) != 2:
        _fail("output_tags", expected, value)
    tags = tuple(value)
    if not all(isinstance(t, str) and t and t == t.strip() for t in tags) or tags[0] == tags[1]:
        _fail("output_tags", expected, value)
    return (tags[0], tags[1])


PRESETS: Mapping[str, Strategy] = MappingProxyType(
    {
        "gpo": Strategy(),
        "opro": Strategy(trajectory="importance", k=20, history_order="ascending", schedule="none"),
        "ape": Strategy(trajectory="none", k=1, history_order="chronological", schedule="none"),
        "apo": Strategy(
            trajectory="none",
            k=1,
            history_order="chronological",
            reflection=True,
            update="editing",
            schedule="none",
        ),
        "pe2": Strategy(
            trajectory="recency",
            k=3,
            history_order="chronological",
            reflection=True,
            update="editing",
            schedule="fixed",
            budget_start=30,
        ),
        "baseline": Strategy(
            trajectory="none", k=1, history_order="chronological", schedule="none", optimize=False
        ),
    }
)


def strategy(preset: str = "gpo", **overrides: Any) -> Strategy:
    """The preset ``preset`` with ``overrides`` applied (validated like any Strategy).

    >>> strategy("gpo", candidates=4).candidates
    4
    """
    if preset not in PRESETS:
        raise ConfigError(
            f"strategy preset: expected one of {', '.join(sorted(PRESETS))}, found {preset!r}"
        )
    unknown = sorted(set(overrides) - set(knobs()))
    if unknown:
        raise ConfigError(
            f"strategy knob {unknown[0]!r}: expected one of {', '.join(knobs())}, "
            f"found unknown knob(s) {', '.join(unknown)}"
        )
    return dataclasses.replace(PRESETS[preset], **overrides)
