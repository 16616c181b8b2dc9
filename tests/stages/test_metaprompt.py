"""Meta-prompts: content, wording per strategy, and what the simulator's optimizer reads."""

from __future__ import annotations

import random
import re

import pytest

from pipeline.sim.brain import Brain
from pipeline.sim.metaprompt import ScoredPrompt, parse_meta
from stages.metaprompt import (
    Placement,
    ShownPrompt,
    build_meta_prompt,
    build_reflection_prompt,
    build_summary_prompt,
)
from stages.parsing import extract_tagged
from stages.strategy import Strategy, strategy

EXEMPLARS = (
    ("I have a chair, two tables, and a goat. How many pieces of furniture do I have?", "3"),
    ("I have an apple and three plums. How many fruits do I have?", "4"),
)
SHOWN = (
    ShownPrompt("Count each item carefully.", 62.4),
    ShownPrompt("Let's think step by step.", 40.0),
    ShownPrompt("Let's think step by step. Double-check the final answer.", 55.6),
)
CURRENT = SHOWN[2]


def meta(
    chosen: Strategy | None = None,
    *,
    budget: int | None = 20,
    placement: Placement = "after",
    reflection: str | None = None,
    summary: str | None = None,
    shown: tuple[ShownPrompt, ...] = SHOWN,
) -> str:
    return build_meta_prompt(
        chosen or strategy("gpo"),
        exemplars=EXEMPLARS,
        placement=placement,
        shown=shown,
        current=CURRENT,
        word_budget=budget,
        reflection=reflection,
        summary=summary,
    )


def test_each_shown_prompt_appears_with_an_integer_score() -> None:
    text = meta()
    for prompt in SHOWN:
        assert f"text:\n{prompt.text}\nscore:\n{round(prompt.score)}\n" in text + "\n"
    assert not re.search(r"\b\d+\.\d+\b", text)


def test_current_prompt_and_its_score_are_shown() -> None:
    assert f"The current prompt is:\n{CURRENT.text}\nIt scores 56 out of 100." in meta()


def test_budget_sentence_only_with_a_budget() -> None:
    assert "You may change up to 20 words of the current prompt." in meta(budget=20)
    assert "You may change up to" not in meta(budget=None)


def test_exemplars_show_input_prompt_position_and_gold_output() -> None:
    question, gold = EXEMPLARS[0]
    assert f"Input:\n{question}\n<Prompt>\nOutput:\n{gold}" in meta(placement="after")
    assert f"<Prompt>\nInput:\n{question}\nOutput:\n{gold}" in meta(placement="before")
    assert f"System: <Prompt>\nInput:\n{question}\nOutput:\n{gold}" in meta(placement="system")


def test_output_tags_of_the_strategy_are_requested() -> None:
    assert "between <START> and <END>" in meta()
    custom = meta(strategy("gpo", output_tags=("<INS>", "</INS>")))
    assert "between <INS> and </INS>" in custom
    assert "<START>" not in custom


def test_editing_and_generation_are_worded_differently() -> None:
    generation = meta(strategy("gpo"))
    editing = meta(strategy("gpo", update="editing"))
    assert "write a new, improved prompt" in generation
    assert "Edit the current prompt" not in generation
    assert "Edit the current prompt" in editing
    assert "write a new" not in editing


def test_ascending_order_sorts_by_score_and_other_orders_keep_the_given_order() -> None:
    def order(text: str) -> list[int]:
        return [int(s) for s in re.findall(r"score:\n(\d+)", text)]

    assert order(meta(strategy("opro"))) == [40, 56, 62]
    assert order(meta(strategy("gpo"))) == [62, 40, 56]
    assert order(meta(strategy("pe2"))) == [62, 40, 56]


def test_without_trajectory_no_history_is_shown() -> None:
    text = meta(strategy("ape"))
    assert "score:" not in text
    assert SHOWN[0].text not in text


def test_a_summary_replaces_the_list() -> None:
    text = meta(strategy("gpo", trajectory="summarization"), summary="Specific prompts win.")
    assert "Specific prompts win." in text
    assert "score:" not in text


def test_reflection_is_included_when_given() -> None:
    text = meta(strategy("apo"), reflection="The prompt never asks for a number.")
    assert "The prompt never asks for a number." in text
    assert "feedback" in text.lower()
    assert "Feedback" not in meta(strategy("apo"))


def test_meta_prompts_are_deterministic() -> None:
    assert meta() == meta()


def test_score_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        ShownPrompt("Be careful.", 0.5 * 300)


def test_bad_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="word_budget"):
        meta(budget=0)


def test_reflection_prompt_lists_errors_and_asks_for_reasons() -> None:
    text = build_reflection_prompt(CURRENT.text, [(EXEMPLARS[0][0], "3", "5")])
    assert CURRENT.text in text
    assert EXEMPLARS[0][0] in text
    assert "Correct answer: 3" in text
    assert "Model output: 5" in text
    assert "why" in text.lower()


def test_summary_prompt_lists_prompts_by_score() -> None:
    text = build_summary_prompt(SHOWN)
    assert [int(s) for s in re.findall(r"score:\n(\d+)", text)] == [40, 56, 62]
    assert "high-scoring" in text
    assert "low-scoring" in text


@pytest.mark.parametrize(
    ("preset", "tags", "placement"),
    [
        ("gpo", ("<START>", "<END>"), "after"),
        ("opro", ("<INS>", "</INS>"), "before"),
        ("apo", ("<START>", "<END>"), "system"),
        ("pe2", ("<START>", "<END>"), "after"),
    ],
)
def test_the_simulated_optimizer_reads_and_answers_the_meta_prompt(
    preset: str, tags: tuple[str, str], placement: Placement
) -> None:
    chosen = strategy(preset, output_tags=tags)
    budget = 20 if chosen.schedule != "none" else None
    text = meta(chosen, budget=budget, placement=placement, reflection="Too vague.")
    read = parse_meta(text)
    if chosen.trajectory != "none":
        assert set(read.scored) == {ScoredPrompt(p.text, round(p.score)) for p in SHOWN}
    assert read.current == CURRENT.text
    assert read.change_limit == budget
    assert read.length_limit is None
    assert read.mode == ("modify" if chosen.update == "editing" else "new")
    assert read.tags == tags
    assert not read.reflection
    assert [(e.input, e.output) for e in read.exemplars] == list(EXEMPLARS)
    brain = Brain(seed=0)
    replies = [
        brain.reply([("user", text)], temperature=1.0, rng=random.Random(i)) for i in range(40)
    ]
    assert sum(bool(extract_tagged(r, tags)) for r in replies) >= 32


def test_the_simulated_optimizer_answers_the_reflection_prompt_with_reasons() -> None:
    text = build_reflection_prompt(CURRENT.text, [(q, g, "7") for q, g in EXEMPLARS])
    assert parse_meta(text).reflection
    reply = Brain(seed=0).reply([("user", text)], temperature=1.0, rng=random.Random(0))
    assert reply.startswith("1. ")
