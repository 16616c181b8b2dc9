"""Each of GPO's mechanisms changes what the simulator does, for the reason it would with a model.

The meta-prompts here are the ones the stages send (``stages.metaprompt``), so the optimizer role
is tested on what it really reads.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pipeline.sim.brain import Brain
from pipeline.sim.feedback import diagnose
from pipeline.sim.landscape import Landscape
from pipeline.sim.metaprompt import parse_meta
from pipeline.sim.optimizer import optimizer_reply, propose
from pipeline.sim.tasks import builtin_tasks
from stages.metaprompt import ShownPrompt, build_meta_prompt, build_reflection_prompt
from stages.strategy import strategy

EXEMPLARS = (
    ("I have a chair, two tables, and a goat. How many pieces of furniture do I have?", "3"),
    ("I have an apple and three plums. How many fruits do I have?", "4"),
)
CURRENT = "Let's think step by step. Read the question carefully."
AT_50 = ShownPrompt(CURRENT, 50)
TASKS = {t.name: t for t in builtin_tasks()}


def meta_text(
    *,
    preset: str = "gpo",
    shown: Sequence[ShownPrompt] = (),
    current: ShownPrompt = AT_50,
    reflection: str | None = None,
    budget: int | None = 20,
) -> str:
    return build_meta_prompt(
        strategy(preset),
        exemplars=EXEMPLARS,
        placement="after",
        shown=shown,
        current=current,
        word_budget=budget,
        reflection=reflection,
    )


def share(text: str, test: str, runs: int = 300) -> float:
    """The share of proposals for meta-prompt ``text`` that contain ``test``."""
    meta = parse_meta(text)
    return sum(test in propose(meta, random.Random(s)) for s in range(runs)) / runs


def test_feedback_on_a_missing_check_makes_adding_a_check_much_more_likely() -> None:
    feedback = "1. The answers never check their intermediate results."
    without = share(meta_text(), "Double-check your work") + share(meta_text(), "Verify each")
    with_it = share(meta_text(reflection=feedback), "Double-check your work") + share(
        meta_text(reflection=feedback), "Verify each"
    )
    assert with_it > without + 0.3


def test_feedback_on_a_harmful_instruction_gets_it_removed() -> None:
    current = ShownPrompt("Let's think step by step. Trust your first instinct.", 40)
    feedback = "1. The prompt encourages guessing."
    kept = share(meta_text(current=current), "instinct")
    fixed = share(meta_text(current=current, reflection=feedback), "instinct")
    assert fixed < kept - 0.3


def test_wrong_answers_show_what_the_prompt_lacks_and_the_critique_names_it() -> None:
    model = Brain(seed=0).model("object_counting")
    prompt = "Answer the question."
    faults = set(model.landscape.faults(prompt))
    examples = model.task.examples[:150]
    replies = [model.answer(prompt, i, temperature=0.0, rng=random.Random(0)) for i in range(150)]
    wrong = [
        (e.input, e.target, r)
        for e, r in zip(examples, replies, strict=True)
        if not r.endswith(f"is {e.target}.")
    ]
    marks = [d for _, _, r in wrong for d in diagnose(r)]
    assert len(marks) > 0.3 * len(wrong)  # about half show a cause
    assert sum(m in faults for m in marks) > 0.7 * len(marks)  # mostly the right one
    reply = optimizer_reply(
        parse_meta(build_reflection_prompt(prompt, wrong[:6])), random.Random(0)
    )
    named = parse_meta(f"Feedback:\n{reply}").feedback
    assert named[0] in faults  # the most frequent symptom first, then generic advice


def test_a_critique_lists_the_most_frequent_symptom_first() -> None:
    outputs = [
        ("Q1", "3", "I did not check this result.\nSo the answer is 4."),
        ("Q2", "5", "I did not check this result.\nSo the answer is 6."),
        ("Q3", "7", "I rushed this.\nSo the answer is 8."),
    ]
    reply = optimizer_reply(parse_meta(build_reflection_prompt(CURRENT, outputs)), random.Random(0))
    assert reply.splitlines()[0] == "1. The answers never check their intermediate results."
    assert "The answers are rushed." in reply


def test_the_score_of_the_current_prompt_is_read() -> None:
    assert parse_meta(meta_text(current=ShownPrompt(CURRENT, 73))).current_score == 73


def test_scores_tell_which_of_two_similar_prompts_to_keep() -> None:
    other = "Let's think step by step. Read the question carefully. Be concise."
    mine = "Let's think step by step. Read the question carefully. Show your work."

    def kept(mine_score: float, other_score: float) -> float:
        text = meta_text(
            shown=[ShownPrompt(other, other_score)], current=ShownPrompt(mine, mine_score)
        )
        return share(text, "Show your work.")

    assert kept(60, 40) > kept(40, 60) + 0.25


def test_a_better_similar_prompt_is_refined_and_a_dissimilar_one_is_not() -> None:
    better = "Let's think step by step. Read the question carefully. Count each item."
    far = "You are an expert. Answer with a single number. Keep a running total."
    near_text = meta_text(shown=[ShownPrompt(better, 70)], current=ShownPrompt(CURRENT, 50))
    far_text = meta_text(shown=[ShownPrompt(far, 70)], current=ShownPrompt(CURRENT, 50))
    assert share(near_text, "Count each item.") > share(far_text, "Keep a running total.") + 0.2


def test_relevance_and_recency_retrieval_lead_to_different_proposals() -> None:
    # Both show a prompt with "Count each item." that scored 70 (the current one scored 55).
    # Relevance shows the one most similar to the current prompt: a variant of it, so the score
    # difference points at that sentence. Recency shows the latest: an unrelated prompt with the
    # same sentence, which tells nothing about it.
    current = ShownPrompt(CURRENT + " Be brief.", 55)
    similar = ShownPrompt(CURRENT + " Count each item.", 70)
    unrelated = ShownPrompt("You are an expert. Count each item. Keep a running total.", 70)
    other = ShownPrompt("Answer with a single number. Be concise.", 48)
    relevance = meta_text(shown=[other, similar], current=current)
    recency = meta_text(shown=[other, unrelated], current=current)
    assert share(relevance, "Count each item.") > share(recency, "Count each item.") + 0.2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_synonym_swap_keeps_most_answers(name: str) -> None:
    landscape = Landscape(TASKS[name], seed=0)
    a = "Let's think step by step and solve the problem."
    b = "Let's think step by step and solve the question."
    assert landscape.meaning(a) == landscape.meaning(b)
    n = len(TASKS[name].examples)
    same = sum(landscape.is_correct(a, i) == landscape.is_correct(b, i) for i in range(n)) / n
    assert same > 0.8


def test_an_added_instruction_changes_some_answers_but_not_all() -> None:
    landscape = Landscape(TASKS["arithmetic"], seed=0)
    a = "Let's think step by step."
    b = "Let's think step by step. You are an expert."
    n = len(TASKS["arithmetic"].examples)
    same = sum(landscape.is_correct(a, i) == landscape.is_correct(b, i) for i in range(n)) / n
    assert 0.6 < same < 0.97
