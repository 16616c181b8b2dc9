"""Candidates are read only from between output tags."""

from __future__ import annotations

import pytest

from stages.parsing import extract_tagged


def test_a_tagged_prompt_is_extracted_and_stripped() -> None:
    reply = "Here is an improved prompt:\n<START>\n  Think step by step.\n<END>"
    assert extract_tagged(reply) == ["Think step by step."]


def test_a_reply_without_tags_yields_nothing() -> None:
    assert extract_tagged("Think step by step and check the answer.") == []


def test_several_segments_are_all_extracted_in_order() -> None:
    reply = "<START>One.<END>\nand\n<START>Two.<END> <START>Three.<END>"
    assert extract_tagged(reply) == ["One.", "Two.", "Three."]


def test_tags_match_case_insensitively() -> None:
    assert extract_tagged("<start>One.<End> <START>Two.<end>") == ["One.", "Two."]


def test_whitespace_inside_angle_brackets_is_tolerated() -> None:
    assert extract_tagged("< START >One.< END >") == ["One."]
    assert extract_tagged("<INS>Two.</ INS>", ("<INS>", "</INS>")) == ["Two."]


def test_an_unclosed_last_tag_is_not_a_candidate() -> None:
    assert extract_tagged("<START>One.<END> <START>Two, cut off") == ["One."]
    assert extract_tagged("<START>Cut off") == []


def test_empty_segments_are_skipped() -> None:
    assert extract_tagged("<START>  <END><START>\n<END><START>Real.<END>") == ["Real."]


def test_a_stray_opening_tag_does_not_swallow_text() -> None:
    assert extract_tagged("<START> oops <START>Real.<END>") == ["Real."]


def test_a_closing_tag_without_an_opening_one_is_ignored() -> None:
    assert extract_tagged("Real.<END> <START>Also real.<END>") == ["Also real."]


def test_other_tags_are_honoured_and_default_tags_then_ignored() -> None:
    reply = "<INS>Be brief.</INS> <START>Not this.<END>"
    assert extract_tagged(reply, ("<INS>", "</INS>")) == ["Be brief."]


def test_non_angle_tags_are_matched_literally() -> None:
    assert extract_tagged("[[Be brief.]] [[x", ("[[", "]]")) == ["Be brief."]


def test_multiline_prompts_are_kept_whole() -> None:
    assert extract_tagged("<START>Line one.\nLine two.<END>") == ["Line one.\nLine two."]


def test_empty_tags_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        extract_tagged("text", ("", "<END>"))


@pytest.mark.parametrize(
    "closer", ["</END>", "<END/>", "<END />", "<\\END>", "</ END>", "</START>"]
)
def test_closing_forms_small_models_write_close_the_segment(closer: str) -> None:
    assert extract_tagged(f"<START>Be brief.{closer} and more") == ["Be brief."]


@pytest.mark.parametrize("closer", ["</INS>", "<INS/>", "<\\INS>", "</ INS>"])
def test_closing_forms_of_other_tags_close_the_segment(closer: str) -> None:
    assert extract_tagged(f"<INS>Be brief.{closer}", ("<INS>", "</INS>")) == ["Be brief."]


def test_an_opening_tag_never_closes_a_segment() -> None:
    assert extract_tagged("<INS>Be brief.<INS>", ("<INS>", "</INS>")) == []
    assert extract_tagged("<START>Be brief.<START>") == []


def test_closing_forms_of_unrelated_tags_do_not_close_a_segment() -> None:
    assert extract_tagged("<START>Be brief.</INS> <b>x</b>") == []
