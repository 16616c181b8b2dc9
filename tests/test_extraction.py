"""Reading answers out of real small models' prose, and exact match on punctuation answers.

The outputs are in the style of a 0.5B instruct model given "Let's think step by step.":
reasoning first, then the answer in bold, after a marker, in a concluding sentence, often
followed by an explanation.
"""

from __future__ import annotations

import pytest

from pipeline.tasks._data import Example
from pipeline.tasks._metrics import (
    Judgement,
    Metric,
    auto_metric,
    choice,
    exact,
    numeric,
    true_false,
    yes_no,
)

Case = tuple[str, str, bool]


def judged(metric: Metric, output: str, target: str) -> Judgement:
    result = metric(output, target)
    assert isinstance(result, Judgement)
    return result


# --- exact match on punctuation answers (BBH dyck_languages) -----------------------------------

DYCK_CASES: list[Case] = [
    ("We close the brackets in reverse order.\nSo the answer is > ).", "> )", True),
    ("We close the brackets in reverse order.\nSo the answer is > ].", "> )", False),
    ("So the answer is > ) ].", "> )", False),
    ("The answer is: `] ) }`", "] ) }", True),
    ("Closing them in order gives **] ) }**.", "] ) }", True),
    ("So the answer is ])} because each one closes the last open bracket.", "] ) }", True),
    ("The remaining sequence is ) ]", ") ]", True),
    ("The answer is:\n```\n> )\n```", "> )", True),
    ("I am not sure how to close these.", "> )", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), DYCK_CASES)
def test_exact_compares_punctuation_answers_symbol_by_symbol(
    output: str, target: str, correct: bool
) -> None:
    assert judged(exact, output, target).correct is correct


def test_a_punctuation_answer_the_output_does_not_state_is_unextractable() -> None:
    assert judged(exact, "I am not sure how to close these.", "> )") == Judgement(False, None)
    assert judged(exact, "So the answer is > ).", "> )") == Judgement(True, ">)")


# --- every BBH answer style, as the simulator states it -------------------------------------------

BBH_TARGETS = {
    "boolean_expressions": ["True", "False"],
    "causal_judgement": ["Yes", "No"],
    "date_understanding": ["(A)", "(F)"],
    "dyck_languages": ["> )", "] ) }", ") ] ] >", "}"],
    "formal_fallacies": ["valid", "invalid"],
    "geometric_shapes": ["(B)", "(K)"],
    "movie_recommendation": ["(C)", "Monsters, Inc"],
    "multistep_arithmetic_two": ["-38", "129", "0"],
    "navigate": ["Yes", "No"],
    "object_counting": ["8", "15"],
    "sports_understanding": ["yes", "no"],
    "web_of_lies": ["Yes", "No"],
    "word_sorting": ["syndrome therefrom", "barn damp it&t malton onus"],
}


def _examples(targets: list[str]) -> list[Example]:
    return [Example(input=f"Question {i}?", target=t) for i, t in enumerate(targets * 5)]


@pytest.mark.parametrize(
    ("task", "target"), [(task, t) for task, ts in BBH_TARGETS.items() for t in ts]
)
def test_every_bbh_style_is_right_when_stated_as_the_simulator_does(task: str, target: str) -> None:
    metric = auto_metric(_examples(BBH_TARGETS[task]))
    verdict = judged(metric, f"Let's see.\nSo the answer is {target}.", target)
    assert verdict.correct, (task, metric.name, verdict)
    assert verdict.extracted is not None


@pytest.mark.parametrize(
    ("task", "target", "wrong"),
    [
        ("boolean_expressions", "True", "False"),
        ("date_understanding", "(A)", "(B)"),
        ("dyck_languages", "> )", "> ]"),
        ("formal_fallacies", "valid", "invalid"),
        ("multistep_arithmetic_two", "-38", "38"),
        ("navigate", "Yes", "No"),
        ("word_sorting", "syndrome therefrom", "therefrom syndrome"),
    ],
)
def test_every_bbh_style_is_wrong_when_another_answer_is_stated(
    task: str, target: str, wrong: str
) -> None:
    metric = auto_metric(_examples(BBH_TARGETS[task]))
    assert not judged(metric, f"Let's see.\nSo the answer is {wrong}.", target).correct


# --- prose answers of a small model ------------------------------------------------------------

CHOICE_PROSE: list[Case] = [
    (
        "To find the date one week ago, we subtract 7 days from 12/18/2019.\n\n"
        "12/18/2019 - 7 days = 12/11/2019.\n\nThe answer is: (C)",
        "(C)",
        True,
    ),
    (
        "Option (A) is wrong since the date is too early. Option (B) is also wrong.\n"
        "**The correct answer is (D) 05/01/2021.** This is because the date moves forward.",
        "(D)",
        True,
    ),
    (
        "Let's compare the movies. All of them are action films from the 1990s.\n"
        "Therefore, the most similar movie is (B) Pulp Fiction. Options (A) and (C) are "
        "comedies, so they do not fit.",
        "(B)",
        True,
    ),
    (
        "Step 1: The shape has 7 sides.\nStep 2: A 7-sided polygon is a heptagon.\n\n"
        "### Final Answer\n**(B)**",
        "(B)",
        True,
    ),
    ("The red ball is in (A) and the blue ball moves to (E).\n\nE", "(E)", True),
    ("I think the answer is B", "(B)", True),
    ("Going through the options one by one.\n\n(C)\n\n---", "(C)", True),
    ("Therefore, I cannot tell which option is right.", "(A)", False),
    ("(A) looks tempting. The answer is not clear from the question.", "(A)", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), CHOICE_PROSE)
def test_choice_reads_small_model_prose(output: str, target: str, correct: bool) -> None:
    assert judged(choice, output, target).correct is correct


def test_a_choice_output_without_a_letter_where_the_answer_is_stated_is_unextractable() -> None:
    output = "(A) looks tempting. The answer is not clear from the question."
    assert judged(choice, output, "(A)") == Judgement(False, None)
    assert (
        judged(choice, "Therefore, I cannot tell which option is right.", "(A)").extracted is None
    )


YES_NO_PROSE: list[Case] = [
    ("No, the answer is yes.", "Yes", True),
    ("No, the answer is yes.", "No", False),
    (
        "1. Take 3 steps forward.\n2. Take 3 steps backward.\n"
        "Therefore, yes, you return to the starting point. No other moves are needed.",
        "Yes",
        True,
    ),
    (
        "Joao Moutinho is a soccer player. Catching a screen pass is from American football.\n"
        "So, the sentence is not plausible: no.",
        "no",
        True,
    ),
    (
        "Fidel lies. Jerry says Fidel lies, so Jerry tells the truth. Vina says Jerry tells the "
        "truth, so Vina tells the truth.\n\n**Answer: Yes**\n\nExplanation: no one else lies.",
        "Yes",
        True,
    ),
    ("The sentence mentions a basketball player scoring a touchdown. No.", "No", True),
    ("It depends on the context.", "No", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), YES_NO_PROSE)
def test_yes_no_reads_small_model_prose(output: str, target: str, correct: bool) -> None:
    assert judged(yes_no, output, target).correct is correct


def test_a_yes_no_output_without_either_word_is_unextractable() -> None:
    assert judged(yes_no, "It depends on the context.", "No") == Judgement(False, None)


TRUE_FALSE_PROSE: list[Case] = [
    (
        "not ( True ) and ( True ) = False and True = False.\n"
        "Therefore, the statement is false. This is because True and False is not True.",
        "False",
        True,
    ),
    ("The expression simplifies to True or False, which is True.", "True", True),
    (
        "We evaluate: True and not False = True and True.\nThe final answer is **True**.",
        "True",
        True,
    ),
    (
        "Premise 1 says every fan is a friend. The conclusion follows from the premises.\n"
        "Thus, the argument is valid, because no premise is false.",
        "valid",
        True,
    ),
    ("So the answer is valid.", "invalid", False),
    ("To find the final answer, we check whether it is true.\nIt is false.", "False", True),
]


@pytest.mark.parametrize(("output", "target", "correct"), TRUE_FALSE_PROSE)
def test_true_false_reads_small_model_prose(output: str, target: str, correct: bool) -> None:
    assert judged(true_false, output, target).correct is correct


NUMERIC_PROSE: list[Case] = [
    (
        "I have a piano, a flute and four trombones. That is 1 + 1 + 4 = 6 instruments.\n"
        "So the answer is 6 musical instruments, since the piano counts as 1.",
        "6",
        True,
    ),
    (
        "Let's count: apple (1), banana (2), grape (3).\n\n"
        "Therefore, there are 3 fruits in total. (I did not count the carrot, which is a "
        "vegetable with 1 root.)",
        "3",
        True,
    ),
    ("((-1 + 2) * 3) = 3, and 3 - 41 = -38.\n\n**The final answer is -38.**", "-38", True),
    ("The final answer is -38.", "38", False),
    ("First, 5 * 4 = 20. Then 20 - 2 = 18.\nThe total is 18.", "18", True),
    ("I need more information to count them.", "4", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), NUMERIC_PROSE)
def test_numeric_reads_small_model_prose(output: str, target: str, correct: bool) -> None:
    assert judged(numeric, output, target).correct is correct


def test_a_numeric_output_without_a_number_is_unextractable() -> None:
    output = "I need more information to count them."
    assert judged(numeric, output, "4") == Judgement(False, None)
