"""The optimizer-model role: reading meta-prompts and proposing prompts."""

from __future__ import annotations

import random
import statistics

import pytest

from pipeline.sim.metaprompt import (
    ScoredPrompt,
    meta_strength,
    parse_current,
    parse_exemplars,
    parse_limits,
    parse_meta,
    parse_mode,
    parse_scored,
    parse_tags,
)
from pipeline.sim.optimizer import changed_words, optimizer_reply, propose

CURRENT = (
    "Let's think step by step. Read the question carefully and double-check the final answer "
    "before you reply."
)
EXEMPLARS = (
    "input:\nI have a chair, two tables, and a goat. How many pieces of furniture do I have?\n"
    "<Prompt>\noutput:\n3\n\n"
    "input:\nI have an apple and three plums. How many fruits do I have?\n<Prompt>\noutput:\n4\n"
)


def gpo_meta(*, limit: int | None = 10, ask: str = "write a new improved prompt") -> str:
    words = f"You may change up to {limit} words in the current prompt.\n" if limit else ""
    return (
        "Below are previous prompts with their scores (0-100).\n\n"
        "text:\nLet's think step by step.\nscore:\n40\n\n"
        f"text:\n{CURRENT}\nscore:\n55\n\n"
        f"The current prompt is:\n{CURRENT}\n\n"
        f"Here are task examples:\n{EXEMPLARS}\n"
        f"Carefully analyze the previous prompts and their scores, and {ask}.\n{words}"
        "Wrap the new prompt with <START> and <END>."
    )


def unwrap(reply: str) -> str | None:
    if "<START>" not in reply or "<END>" not in reply:
        return None
    return reply.split("<START>", 1)[1].split("<END>", 1)[0]


@pytest.mark.parametrize(
    "text",
    [
        "text:\nBe careful.\nscore:\n61\n\ntext:\nThink hard.\nscore:\n73",
        "Prompt: Be careful. Score: 61\nPrompt: Think hard. Score: 73",
        "<prompt>Be careful.</prompt> score 0.61\n<prompt>Think hard.</prompt> score: 0.73",
        '1. "Be careful." (score: 61)\n2. "Think hard." (score: 73)',
        "Score: 61, Prompt: Be careful.\nScore: 73, Prompt: Think hard.",
        "Instruction 1: Be careful.\nAccuracy: 61%\n\nInstruction 2: Think hard.\nAccuracy: 73%",
    ],
)
def test_scored_prompts_are_read_in_several_layouts(text: str) -> None:
    expected = (ScoredPrompt("Be careful.", 61.0), ScoredPrompt("Think hard.", 73.0))
    assert parse_scored(text) == expected


@pytest.mark.parametrize(
    ("text", "change", "length"),
    [
        ("You may change up to 10 words in the current prompt.", 10, None),
        ("Use at most 7 words of edits.", 7, None),
        ("Modify no more than 12 words.", 12, None),
        ("Change at most ten words.", 10, None),
        ("The new prompt should be at most 50 words long.", None, 50),
        ("Edit up to 5 words. The prompt must be no longer than 40 words in total.", 5, 40),
        ("Write a better prompt.", None, None),
    ],
)
def test_word_limits_are_read(text: str, change: int | None, length: int | None) -> None:
    assert parse_limits(text) == (change, length)


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("Write a new improved prompt.", "new"),
        ("Please modify the current prompt to make it better.", "modify"),
        ("Edit the prompt below; change up to 5 words.", "modify"),
        ("Generate a different instruction that scores higher.", "new"),
        ("Improve it.", "new"),
    ],
)
def test_new_versus_modify_is_read(text: str, mode: str) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("Wrap the new prompt with <START> and <END>.", ("<START>", "<END>")),
        ("Output the instruction between <INS> and </INS>.", ("<INS>", "</INS>")),
        ("Put the prompt inside <prompt></prompt> tags.", ("<prompt>", "</prompt>")),
        ("Write the text in square brackets.", ("[", "]")),
        ("Write a new prompt.", None),
    ],
)
def test_output_tags_are_read(text: str, tags: tuple[str, str] | None) -> None:
    assert parse_tags(text) == tags


def test_current_prompt_and_exemplars_are_read() -> None:
    meta = parse_meta(gpo_meta())
    assert parse_current('My current prompt is: "Be careful."') == "Be careful."
    assert meta.current == CURRENT
    assert [e.output for e in parse_exemplars(EXEMPLARS)] == ["3", "4"]
    assert meta.exemplars[1].input.startswith("I have an apple")


def test_without_a_current_prompt_the_best_scored_one_is_used() -> None:
    meta = parse_meta("text: A.\nscore: 30\ntext: B.\nscore: 80\nWrite a new text in <INS></INS>.")
    assert meta.current == "B."


def test_meta_prompts_are_recognised_and_questions_are_not() -> None:
    assert meta_strength(gpo_meta()) == 2
    assert meta_strength("Suggest a prompt for summarising emails.") == 1
    assert meta_strength("If you follow these instructions, do you return home?") == 0
    assert meta_strength("How many fruits do I have?") == 0


def test_proposals_are_wrapped_in_the_requested_tags_most_of_the_time() -> None:
    meta = parse_meta(gpo_meta())
    replies = [optimizer_reply(meta, random.Random(s)) for s in range(200)]
    wrapped = sum(unwrap(r) is not None for r in replies)
    assert 180 <= wrapped < 200


def test_other_tags_are_honoured() -> None:
    meta = parse_meta(gpo_meta().replace("<START> and <END>", "<INS> and </INS>"))
    replies = [optimizer_reply(meta, random.Random(s)) for s in range(20)]
    assert sum("<INS>" in r and "</INS>" in r for r in replies) >= 18


def test_changed_words_stay_within_the_limit_most_of_the_time_but_not_always() -> None:
    meta = parse_meta(gpo_meta(limit=5))
    changes = [changed_words(CURRENT, propose(meta, random.Random(s))) for s in range(200)]
    over = sum(c > 5 for c in changes)
    assert 4 <= over <= 40
    assert all(c > 0 for c in changes)


def test_modify_stays_closer_than_write_new() -> None:
    new = parse_meta(gpo_meta(limit=20))
    modify = parse_meta(gpo_meta(limit=20, ask="modify the current prompt"))
    assert (new.mode, modify.mode) == ("new", "modify")

    def mean_change(meta_text: str) -> float:
        meta = parse_meta(meta_text)
        return statistics.fmean(
            changed_words(CURRENT, propose(meta, random.Random(s))) for s in range(200)
        )

    assert mean_change(gpo_meta(limit=20, ask="modify the current prompt")) < mean_change(
        gpo_meta(limit=20)
    )


def test_without_a_limit_changes_are_unconstrained() -> None:
    meta = parse_meta(gpo_meta(limit=None))
    assert meta.change_limit is None
    changes = [changed_words(CURRENT, propose(meta, random.Random(s))) for s in range(100)]
    assert max(changes) > 20


def test_a_length_limit_is_respected() -> None:
    meta = parse_meta(gpo_meta(limit=None) + "\nThe new prompt must be at most 12 words long.")
    assert meta.length_limit == 12
    assert all(len(propose(meta, random.Random(s)).split()) <= 12 for s in range(100))


def test_higher_scored_prompts_are_drawn_from_more_often() -> None:
    text = (
        "text:\nAlways be thorough.\nscore:\n90\n\ntext:\nNever look back.\nscore:\n20\n\n"
        "Write a new prompt that is different from the old ones. Put it in square brackets."
    )
    meta = parse_meta(text)
    proposals = [propose(meta, random.Random(s)) for s in range(300)]
    high = sum("Always be thorough." in p for p in proposals)
    low = sum("Never look back." in p for p in proposals)
    assert high > 3 * low


def test_exemplar_vocabulary_inspires_some_proposals() -> None:
    meta = parse_meta(gpo_meta(limit=30))
    proposals = [propose(meta, random.Random(s)) for s in range(100)]
    assert any("single number" in p or "fruits" in p or "furniture" in p for p in proposals)


def test_proposals_differ_across_rng_seeds_and_repeat_for_the_same_seed() -> None:
    meta = parse_meta(gpo_meta())
    assert len({propose(meta, random.Random(s)) for s in range(20)}) > 10
    assert propose(meta, random.Random(7)) == propose(meta, random.Random(7))


def test_several_prompts_can_be_asked_for_at_once() -> None:
    meta = parse_meta(gpo_meta(ask="write 3 different improved prompts"))
    replies = [optimizer_reply(meta, random.Random(s)) for s in range(10)]
    assert meta.count == 3
    assert sum(r.count("<START>") == 3 for r in replies) >= 9


def test_reflection_requests_get_a_short_critique() -> None:
    text = (
        "I'm trying to write a zero-shot classifier prompt.\nMy current prompt is:\n"
        '"Answer the question."\nBut this prompt gets the following examples wrong:\n'
        "Input: I have a chair. How many pieces of furniture do I have?\nOutput: 1\n"
        "give 2 reasons why the prompt could have gotten these examples wrong.\n"
        "Wrap each reason with <START> and <END>"
    )
    meta = parse_meta(text)
    reply = optimizer_reply(meta, random.Random(0))
    assert meta.reflection
    assert reply.count("<START>") == 2
    assert len(parse_meta(f"Feedback: {reply}").feedback) == 2  # reasons it can act on later


def test_plain_reflection_gets_numbered_reasons() -> None:
    text = 'The prompt "Answer." got these wrong. Explain why the prompt produced these errors.'
    reply = optimizer_reply(parse_meta(text), random.Random(0))
    assert reply.startswith("1. ")
    assert "<START>" not in reply


def test_changed_words_counts_word_edits() -> None:
    assert changed_words("Think step by step.", "think step by step") == 0
    assert changed_words("Think step by step.", "Reason step by step. Be careful.") == 3
