"""The simulator's token counting: plausible counts, exact truncation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.sim.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    count_prompt_tokens,
    count_tokens,
    cut_at_stop,
    truncate_tokens,
    usage,
)

ENGLISH = (
    "Carefully read the question, reason about each option step by step, and then state the "
    "final answer as a single capital letter in parentheses, for example (B)."
)


def test_empty_text_has_no_tokens() -> None:
    assert count_tokens("") == 0


def test_short_words_are_one_token_each() -> None:
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10


def test_english_is_roughly_four_characters_per_token() -> None:
    chars_per_token = len(ENGLISH) / count_tokens(ENGLISH)
    assert 3.0 <= chars_per_token <= 6.0


def test_digits_group_in_threes() -> None:
    assert count_tokens("1234567") == 3


@given(st.text())
def test_never_more_tokens_than_utf8_bytes(text: str) -> None:
    assert count_tokens(text) <= len(text.encode("utf-8"))


@given(st.text(), st.integers(min_value=-2, max_value=60))
def test_truncation_keeps_a_prefix_of_exactly_the_limit(text: str, limit: int) -> None:
    cut = truncate_tokens(text, limit)
    assert text.startswith(cut)
    assert count_tokens(cut) == min(max(limit, 0), count_tokens(text))


def test_truncation_below_the_count_shortens_the_text() -> None:
    assert truncate_tokens("one two three four", 2) == "one two"


def test_prompt_tokens_add_per_message_overheads() -> None:
    messages = [("system", "Be brief."), ("user", "")]
    expected = REPLY_PRIMING + 2 * MESSAGE_OVERHEAD + count_tokens("Be brief.")
    assert count_prompt_tokens(messages) == expected


def test_cut_at_stop_uses_the_earliest_stop_sequence() -> None:
    assert cut_at_stop("alpha beta gamma delta", ["delta", "beta"]) == "alpha "


def test_cut_at_stop_without_a_match_keeps_the_text() -> None:
    assert cut_at_stop("alpha beta", ["zeta", ""]) == "alpha beta"


def test_usage_totals_prompt_and_completion() -> None:
    assert usage(7, 5) == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
