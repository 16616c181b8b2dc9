"""The hidden prompt landscape of the simulated task model."""

from __future__ import annotations

import pytest

from pipeline.sim.facets import Facet
from pipeline.sim.landscape import (
    REFERENCE_PROMPT,
    Landscape,
    facet_value,
    phrase_hits,
)
from pipeline.sim.tasks import Example, Task, builtin_tasks
from pipeline.sim.textnorm import stem_phrase

STEP = "Let's think step by step."
DISTRACTING = "Just guess the answer without thinking."
GOOD = {
    "arithmetic": "Let's think step by step. Compute each intermediate result carefully, "
    "double-check your work, and give the final answer as a single number.",
    "word_sorting": "Let's think step by step. Compare the words letter by letter, double-check "
    "your work, and give the final answer as the words in alphabetical order.",
    "boolean_expressions": "Let's think step by step. Evaluate the innermost parentheses first, "
    "double-check your work, and give the final answer as True or False.",
    "object_counting": "Let's think step by step. Count each item carefully, double-check your "
    "work, and give the final answer as a single number.",
}
OTHER_GOOD = {
    "arithmetic": "Work through the problem one step at a time and verify every intermediate "
    "result. Calculate carefully and end with a numeric answer.",
    "word_sorting": "Break the problem down and make sure each word is placed correctly. Sort by "
    "first letter and end with the sorted list.",
    "boolean_expressions": "Work through it one step at a time, simplify from the inside out and "
    "confirm each part. Conclude with true or false.",
    "object_counting": "Work through the list one step at a time, keep a running total and "
    "confirm it. End with a numeric answer.",
}
TASKS = {t.name: t for t in builtin_tasks()}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def landscapes() -> dict[tuple[str, int], Landscape]:
    return {(name, s): Landscape(task, seed=s) for name, task in TASKS.items() for s in SEEDS}


def test_each_task_has_12_to_20_facets_some_negative(
    landscapes: dict[tuple[str, int], Landscape],
) -> None:
    for landscape in landscapes.values():
        assert 12 <= len(landscape.facets) <= 20
        assert any(f.weight < 0 for f in landscape.facets)


def test_same_seed_gives_the_same_landscape_and_another_seed_a_different_one() -> None:
    task = TASKS["arithmetic"]
    a, b, c = Landscape(task, seed=5), Landscape(task, seed=5), Landscape(task, seed=6)
    assert [a.p_correct(STEP, i) for i in range(20)] == [b.p_correct(STEP, i) for i in range(20)]
    assert a.facets == b.facets
    assert [a.p_correct(STEP, i) for i in range(20)] != [c.p_correct(STEP, i) for i in range(20)]


def test_step_by_step_scores_30_to_60_percent_on_every_task(
    landscapes: dict[tuple[str, int], Landscape],
) -> None:
    for landscape in landscapes.values():
        assert 0.30 <= landscape.accuracy(STEP) <= 0.60


def test_empty_prompt_scores_less_than_step_by_step(
    landscapes: dict[tuple[str, int], Landscape],
) -> None:
    for landscape in landscapes.values():
        assert landscape.accuracy("") < landscape.accuracy(STEP)


def test_relevant_prompt_beats_step_by_step_which_beats_a_distracting_one(
    landscapes: dict[tuple[str, int], Landscape],
) -> None:
    for (name, _), landscape in landscapes.items():
        good, step = landscape.accuracy(GOOD[name]), landscape.accuracy(STEP)
        assert step + 0.05 < good < step + 0.2  # the paper's order of gains, not +30 points
        assert step > landscape.accuracy(DISTRACTING) + 0.1


def test_good_prompts_with_different_wording_also_win(
    landscapes: dict[tuple[str, int], Landscape],
) -> None:
    for (name, _), landscape in landscapes.items():
        assert landscape.accuracy(OTHER_GOOD[name]) > landscape.accuracy(STEP) + 0.05


def test_long_prompts_pay_a_length_penalty(landscapes: dict[tuple[str, int], Landscape]) -> None:
    for (name, _), landscape in landscapes.items():
        padded = GOOD[name] + " Please note." * 30
        assert landscape.breakdown(padded).length > 1.0
        assert landscape.accuracy(padded) < landscape.accuracy(GOOD[name]) - 0.05  # scaled too


def test_reference_prompt_hits_the_calibration_target() -> None:
    landscape = Landscape(TASKS["object_counting"], seed=3)
    assert landscape.accuracy(REFERENCE_PROMPT) == pytest.approx(
        landscape.reference_accuracy, abs=0.03
    )


def test_probabilities_ignore_case_and_whitespace_but_not_wording() -> None:
    landscape = Landscape(TASKS["word_sorting"], seed=0)
    same = [landscape.p_correct("  LET'S think\n step by   step. ", i) for i in range(10)]
    assert same == [landscape.p_correct(STEP, i) for i in range(10)]
    assert [landscape.p_correct("Let us think step by step.", i) for i in range(10)] != same


def test_temperature_zero_correctness_is_a_fixed_draw() -> None:
    landscape = Landscape(TASKS["arithmetic"], seed=0)
    first = [landscape.is_correct(STEP, i) for i in range(60)]
    assert first == [landscape.is_correct(STEP, i) for i in range(60)]
    assert 0 < sum(first) < 60


def test_dev_scores_of_equivalent_prompts_are_noisy_estimates() -> None:
    landscape = Landscape(TASKS["object_counting"], seed=0)
    dev = list(range(30))
    variants = [
        STEP,
        "Let's think step by step!",
        "Let us think step by step.",
        "Think step by step.",
        "We think step by step.",
        "Step by step, let's think.",
    ]
    assert len({landscape.score(v, dev) for v in variants}) > 1


def test_diminishing_returns_within_a_facet() -> None:
    facet = Facet(name="verify", phrases=("verify", "double check"), weight=0.5)
    first, second = facet_value(facet, 1), facet_value(facet, 2) - facet_value(facet, 1)
    assert 0 < second < first


def test_negated_phrases_do_not_count_for_a_positive_facet() -> None:
    assert phrase_hits(stem_phrase("Verify the result."), "verify") == 1
    assert phrase_hits(stem_phrase("Do not verify the result."), "verify") == 0
    assert phrase_hits(stem_phrase("Never verify; but verify twice."), "verify") == 1


def test_a_conflict_costs_unless_its_resolver_is_present() -> None:
    landscape = next(
        Landscape(TASKS[name], seed=s)
        for name in TASKS
        for s in range(20)
        if Landscape(TASKS[name], seed=s).conflicts
    )
    conflict = landscape.conflicts[0]
    phrase = {f.name: f.phrases[0] for f in landscape.facets}
    both = f"{phrase[conflict.first]}. {phrase[conflict.second]}."
    assert landscape.breakdown(both).clash >= conflict.penalty
    resolved = landscape.breakdown(f"{both} {phrase[conflict.resolver]}.")
    assert resolved.clash < landscape.breakdown(both).clash


def test_loaded_tasks_get_a_calibrated_landscape_too() -> None:
    examples = tuple(
        Example(input=f"Is {i} even?\nOptions:\n- Yes\n- No", target=("No", "Yes")[i % 2 == 0])
        for i in range(60)
    )
    landscape = Landscape(Task(name="parity", examples=examples, kind="yes_no"), seed=0)
    assert 0.30 <= landscape.accuracy(STEP) <= 0.60
    better = STEP + " Answer Yes or No. Double-check your work."
    assert landscape.accuracy(better) > landscape.accuracy(STEP)
