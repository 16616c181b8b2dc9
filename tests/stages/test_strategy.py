"""The strategy space, its validation and the presets of DESIGN.md section 2."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from pipeline.errors import ConfigError
from stages.strategy import PRESETS, Strategy, knobs, strategy


def test_gpo_preset_has_the_papers_defaults() -> None:
    gpo = PRESETS["gpo"]
    assert (gpo.trajectory, gpo.k, gpo.reflection, gpo.update) == (
        "relevance",
        3,
        False,
        "generation",
    )
    assert (gpo.schedule, gpo.budget_start, gpo.budget_end, gpo.warmup_steps) == (
        "cosine",
        50,
        10,
        0,
    )
    assert (gpo.candidates, gpo.epochs, gpo.batch_size) == (8, 3, 8)
    assert (gpo.optimizer_temperature, gpo.scorer_temperature, gpo.exemplars) == (1.0, 0.0, 3)
    assert gpo.output_tags == ("<START>", "<END>")
    assert gpo.optimize


def test_default_strategy_is_gpo() -> None:
    assert Strategy() == PRESETS["gpo"] == strategy()


def test_opro_shows_up_to_20_prompts_by_ascending_score_without_a_limit() -> None:
    opro = PRESETS["opro"]
    assert (opro.trajectory, opro.k, opro.history_order) == ("importance", 20, "ascending")
    assert (opro.update, opro.schedule, opro.reflection) == ("generation", "none", False)


def test_ape_resamples_without_trajectory() -> None:
    ape = PRESETS["ape"]
    assert (ape.trajectory, ape.update, ape.schedule, ape.reflection) == (
        "none",
        "generation",
        "none",
        False,
    )


def test_apo_reflects_on_errors_and_edits() -> None:
    apo = PRESETS["apo"]
    assert (apo.trajectory, apo.reflection, apo.update, apo.schedule) == (
        "none",
        True,
        "editing",
        "none",
    )


def test_pe2_uses_recent_history_reflection_and_a_fixed_limit() -> None:
    pe2 = PRESETS["pe2"]
    assert (pe2.trajectory, pe2.reflection, pe2.schedule) == ("recency", True, "fixed")
    assert pe2.budget_start == 30


def test_baseline_does_not_optimize() -> None:
    assert PRESETS["baseline"].optimize is False
    assert all(p.optimize for name, p in PRESETS.items() if name != "baseline")


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESETS["mine"] = Strategy()  # type: ignore[index]


def test_strategies_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["gpo"].k = 5  # type: ignore[misc]


def test_overrides_replace_knobs_of_a_preset() -> None:
    tuned = strategy("opro", candidates=4, schedule="cosine")
    assert (tuned.trajectory, tuned.candidates, tuned.schedule) == ("importance", 4, "cosine")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="gpo") as info:
        strategy("adam")
    assert "'adam'" in str(info.value)
    assert "opro" in str(info.value)


def test_unknown_knob_lists_the_known_knobs() -> None:
    with pytest.raises(ConfigError, match="learning_rate") as info:
        strategy("gpo", learning_rate=0.1)
    assert "budget_start" in str(info.value)


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("trajectory", "momentum"),
        ("k", 0),
        ("k", True),
        ("k", 2.5),
        ("history_order", "random"),
        ("reflection", 1),
        ("reflection_errors", 0),
        ("update", "rewrite"),
        ("schedule", "step"),
        ("budget_end", 0),
        ("budget_end", 60),
        ("warmup_steps", -1),
        ("candidates", 0),
        ("epochs", 0),
        ("batch_size", 0),
        ("optimizer_temperature", -0.1),
        ("scorer_temperature", float("nan")),
        ("optimizer_temperature", "hot"),
        ("exemplars", -1),
        ("max_reasks", -1),
        ("relevance_backend", "bm25"),
        ("optimize", "yes"),
        ("output_tags", ("<START>",)),
        ("output_tags", ("<A>", "<A>")),
        ("output_tags", ("", "<END>")),
        ("output_tags", "<START><END>"),
    ],
)
def test_bad_knobs_are_config_errors_naming_the_knob(knob: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"'{knob}'") as info:
        strategy("gpo", **{knob: value})
    assert "expected" in str(info.value)
    assert "found" in str(info.value)


def test_trajectory_none_shows_only_the_current_prompt() -> None:
    with pytest.raises(ConfigError, match="'k'"):
        strategy("ape", k=3)


def test_lists_and_integers_are_accepted_where_tuples_and_floats_are_expected() -> None:
    tuned = strategy("gpo", output_tags=["<INS>", "</INS>"], optimizer_temperature=1)
    assert tuned.output_tags == ("<INS>", "</INS>")
    assert isinstance(tuned.optimizer_temperature, float)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_describe_is_json_and_names_every_knob(name: str) -> None:
    described = PRESETS[name].describe()
    assert tuple(described) == knobs()
    assert json.loads(json.dumps(described)) == described
    assert (
        Strategy(**{**described, "output_tags": tuple(described["output_tags"])}) == PRESETS[name]
    )
