"""Prompt normal form and word-level edit distance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.edits import normalize_prompt, prompt_words, word_edit_distance

WORDS = st.sampled_from(["think", "step", "by", "Step.", "check", "the", "answer", "carefully,"])
PROMPTS = st.lists(WORDS, max_size=8).map(" ".join)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"Let\'s think  step by step."', "let's think step by step"),
        ("  Let's THINK\n step by step!  ", "let's think step by step"),
        ("\u201cBe concise.\u201d", "be concise"),
        ("Answer (A) or (B).", "answer (a) or (b)"),
        ("", ""),
    ],
)
def test_normalize_prompt(text: str, expected: str) -> None:
    assert normalize_prompt(text) == expected


def test_normalize_prompt_is_idempotent() -> None:
    once = normalize_prompt(' "Think, then answer!" ')
    assert normalize_prompt(once) == once


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("Let's think step by step.", "let's think STEP by step", 0),
        ("Let's think step by step.", "Let's think step by step. Check the answer.", 3),
        ("Let's think step by step.", "Let's reason step by step.", 1),
        ("Let's think step by step.", "step by step", 2),
        ("a b c", "c b a", 2),
        ("", "one two three", 3),
        ("", "", 0),
        ("Answer - now", "answer now", 0),
    ],
)
def test_word_edit_distance_examples(a: str, b: str, distance: int) -> None:
    assert word_edit_distance(a, b) == distance


def test_prompt_words_drop_case_and_surrounding_punctuation() -> None:
    assert prompt_words('"Let\'s  think, (carefully)!" -') == ["let's", "think", "carefully"]


@given(PROMPTS, PROMPTS)
def test_distance_is_symmetric(a: str, b: str) -> None:
    assert word_edit_distance(a, b) == word_edit_distance(b, a)


@given(PROMPTS, PROMPTS)
def test_distance_is_zero_iff_word_sequences_are_equal(a: str, b: str) -> None:
    assert (word_edit_distance(a, b) == 0) == (prompt_words(a) == prompt_words(b))


@given(PROMPTS, PROMPTS, PROMPTS)
def test_distance_obeys_the_triangle_inequality(a: str, b: str, c: str) -> None:
    assert word_edit_distance(a, c) <= word_edit_distance(a, b) + word_edit_distance(b, c)


@given(PROMPTS, PROMPTS)
def test_distance_is_at_most_the_longer_length(a: str, b: str) -> None:
    longer = max(len(prompt_words(a)), len(prompt_words(b)))
    assert abs(len(prompt_words(a)) - len(prompt_words(b))) <= word_edit_distance(a, b) <= longer
