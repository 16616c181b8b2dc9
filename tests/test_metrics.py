"""Answer extraction and the built-in, custom and automatically chosen metrics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.tasks._data import Example
from pipeline.tasks._extract import final_answer, normalize_answer
from pipeline.tasks._metrics import (
    Judgement,
    Metric,
    auto_metric,
    choice,
    contains,
    custom_metric,
    exact,
    judge,
    metric_by_name,
    numeric,
    true_false,
    word_list,
    yes_no,
)

Case = tuple[str, str, bool]


def check(metric: Metric, output: str, target: str) -> bool:
    result = metric(output, target)
    assert isinstance(result, Judgement)
    return result.correct


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("Comparing.\nSo the answer is (B).", "(B)."),
        ("Work...\nAnswer:\n\n42", "42"),
        ("**Answer:** Yes", "Yes"),
        ("The final answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("Some reasoning.\nParis", "Paris"),
        ("", ""),
    ],
)
def test_final_answer_is_boxed_then_after_marker_then_last_line(output: str, answer: str) -> None:
    assert final_answer(output) == answer


def test_normalization_drops_case_quotes_markdown_and_punctuation() -> None:
    assert normalize_answer('  **"Monsters,   Inc."**  ') == "monsters inc"
    assert normalize_answer("Don't") == "dont"


# --- exact ------------------------------------------------------------------------------------

EXACT_CASES: list[Case] = [
    ("Let me think.\nSo the answer is Monsters, Inc.", "Monsters, Inc", True),
    ('Answer: "paris"', "Paris", True),
    ("The capital.\n**Paris**", "Paris", True),
    ("So the answer is Paris, France.", "Paris", False),
    ("", "Paris", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), EXACT_CASES)
def test_exact(output: str, target: str, correct: bool) -> None:
    assert check(exact, output, target) is correct


# --- choice -----------------------------------------------------------------------------------

CHOICE_CASES: list[Case] = [
    ("Checking the options one by one.\nSo the answer is (B).", "(B)", True),
    ("Checking the options one by one.\nSo the answer is (C).", "(B)", False),
    ("(A) is wrong and (C) is wrong.\nThe answer is (B) because it fits.", "(B)", True),
    ("Answer: B", "(B)", True),
    ("Answer: **D**", "D", True),
    ("The answer is B) 09/01/2021", "(B)", True),
    ("After ruling out (A) and (B), I choose option E.", "(E)", True),
    ("(A) fails, (B) fails, so it is (D).", "(D)", True),
    ("Thinking...\n**C**", "(C)", True),
    ("I cannot decide.", "(A)", False),
    ("So the answer is Monsters, Inc.", "Monsters, Inc", True),
    ("So the answer is (E) Monsters, Inc.", "Monsters, Inc", True),
    ("So the answer is (E).", "Monsters, Inc", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), CHOICE_CASES)
def test_choice(output: str, target: str, correct: bool) -> None:
    assert check(choice, output, target) is correct


def test_choice_reports_the_letter_it_read() -> None:
    assert choice("Comparing.\nSo the answer is (B).", "B") == Judgement(True, "(B)")
    assert choice("No idea.", "(B)") == Judgement(False, None)


# --- numeric ----------------------------------------------------------------------------------

NUMERIC_CASES: list[Case] = [
    ("Adding up the amounts.\nSo the answer is 18.", "18", True),
    ("So the answer is 17.", "18", False),
    ("She earns $1,234.50 a week.\nAnswer: $1,234.50", "1234.5", True),
    ("The answer is 1,200 apples.", "1,200", True),
    ("It drops by 8 degrees, so 5 - 8 = -3.\nThe answer is -3.", "-3", True),
    ("The answer is -3.", "3", False),
    ("So the total is 2 + 3 = $\\boxed{7}$ dollars after 10 days.", "7", True),
    ("The final answer is \\boxed{1,000}", "1000", True),
    ("A 3 + 4 = 7\n#### 7", "7", True),
    ("That is 12 apples.", "12", True),
    ("The discount is 25%.", "25", True),
    ("The answer is 0.5", "0.50", True),
    ("I bought 3 items for 10 dollars each, so 30 dollars.", "30", True),
    ("The answer is: unknown", "3", False),
    ("The answer is 3.0000001", "3", True),
    ("The answer is 3.001", "3", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), NUMERIC_CASES)
def test_numeric(output: str, target: str, correct: bool) -> None:
    assert check(numeric, output, target) is correct


def test_numeric_reports_the_number_it_read() -> None:
    assert numeric("Answer: $1,234.50", "1234.5") == Judgement(True, "1234.5")
    assert numeric("no idea", "4") == Judgement(False, None)


@given(st.integers())
def test_numeric_reads_any_integer_after_the_answer_marker(n: int) -> None:
    assert check(numeric, f"The answer is {n}.", str(n))
    assert check(numeric, str(n), f"The answer is {n}.")


# --- yes/no and true/false ----------------------------------------------------------------------

YES_NO_CASES: list[Case] = [
    ("Following the reasoning through.\nSo the answer is Yes.", "Yes", True),
    ("Following the reasoning through.\nSo the answer is no.", "no", True),
    ("Answer: **Yes**", "Yes", True),
    ("Yes, he takes a step forward. Then he turns back.\nSo the answer is No.", "No", True),
    ("Yes, he takes a step forward. Then he turns back.\nSo the answer is No.", "Yes", False),
    ("The answer is yes, there is no contradiction.", "Yes", True),
    ("Is it plausible? Not really. No.", "No", True),
    ("I am not sure.", "No", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), YES_NO_CASES)
def test_yes_no(output: str, target: str, correct: bool) -> None:
    assert check(yes_no, output, target) is correct


TRUE_FALSE_CASES: list[Case] = [
    ("Simplifying step by step.\nSo the answer is True.", "True", True),
    ("not False is True, and True and False is False.\nthe answer is: False", "False", True),
    ("Answer: **true**", "False", False),
    ("The premises do not support it, so the argument is invalid.", "invalid", True),
    ("So the answer is valid.", "invalid", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), TRUE_FALSE_CASES)
def test_true_false(output: str, target: str, correct: bool) -> None:
    assert check(true_false, output, target) is correct


# --- word list and contains -------------------------------------------------------------------

WORD_LIST_CASES: list[Case] = [
    ("Ordering the words.\nSo the answer is apple banana cherry.", "apple banana cherry", True),
    ("Answer: Apple, Banana, Cherry", "apple banana cherry", True),
    ("Sorted:\n**apple banana cherry**", "apple banana cherry", True),
    ("So the answer is banana apple cherry.", "apple banana cherry", False),
    ("So the answer is apple cherry.", "apple banana cherry", False),
    ("So the answer is at&t it's zoo.", "at&t it's zoo", True),
]


@pytest.mark.parametrize(("output", "target", "correct"), WORD_LIST_CASES)
def test_word_list(output: str, target: str, correct: bool) -> None:
    assert check(word_list, output, target) is correct


CONTAINS_CASES: list[Case] = [
    ("I believe it is **New York City**, the largest.", "new york city", True),
    ("It is not in the text.", "no", False),
    ("York is a city.", "New York", False),
]


@pytest.mark.parametrize(("output", "target", "correct"), CONTAINS_CASES)
def test_contains(output: str, target: str, correct: bool) -> None:
    assert check(contains, output, target) is correct


# --- lookup and automatic choice ----------------------------------------------------------------


def test_metric_by_name_finds_every_builtin() -> None:
    metrics = (exact, choice, numeric, yes_no, true_false, word_list, contains)
    assert all(metric_by_name(m.name) is m for m in metrics)


def test_metric_by_name_lists_the_known_metrics_for_an_unknown_one() -> None:
    message = (
        "metric: expected one of exact, choice, numeric, yes_no, true_false, word_list, contains"
    )
    with pytest.raises(ConfigError, match=f"{message}, found 'fuzzy'"):
        metric_by_name("fuzzy")


def examples(*targets: str) -> Sequence[Example]:
    return [Example(f"Sort or answer: {t} ?", t) for t in targets]


@pytest.mark.parametrize(
    ("targets", "name"),
    [
        (("(A)", "(C)", "(B)"), "choice"),
        (("A", "C", "B"), "choice"),
        (("Yes", "No", "no"), "yes_no"),
        (("True", "False"), "true_false"),
        (("valid", "invalid"), "true_false"),
        (("42", "-3", "1,200", "2.5"), "numeric"),
        (("apple fig pear", "a b", "cat dog"), "word_list"),
        (("Paris", "the red one", "Monsters, Inc"), "exact"),
    ],
)
def test_auto_metric_chooses_from_the_targets(targets: tuple[str, ...], name: str) -> None:
    assert auto_metric(examples(*targets)).name == name


# --- custom metrics and judge -------------------------------------------------------------------


async def test_judge_returns_a_builtin_metrics_judgement() -> None:
    assert await judge(numeric, "The answer is 7.", "7") == Judgement(True, "7")


async def test_judge_wraps_a_sync_bool_function() -> None:
    def same_length(output: str, target: str) -> bool:
        return len(output) == len(target)

    metric = custom_metric(same_length)
    assert metric.name == "same_length"
    assert await judge(metric, "abc", "xyz") == Judgement(True, None)


async def test_judge_awaits_an_async_custom_metric() -> None:
    async def grader(output: str, target: str) -> Judgement:
        return Judgement(target in output, output[-3:])

    metric = custom_metric(grader, name="llm_grader")
    assert metric.name == "llm_grader"
    assert await judge(metric, "it is 42", "42") == Judgement(True, " 42")


async def test_judge_accepts_a_plain_callable() -> None:
    async def lenient(output: str, target: str) -> bool:
        return target.lower() in output.lower()

    assert await judge(lenient, "YES!", "yes") == Judgement(True, None)


async def test_a_custom_metric_returning_something_else_is_a_config_error() -> None:
    metric = custom_metric(lambda output, target: "yes", name="broken")  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="metric 'broken': expected a bool or a Judgement"):
        await judge(metric, "a", "b")
