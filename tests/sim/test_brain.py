"""Routing of the simulated model and an end-to-end check that the landscape rewards optimizing."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from pipeline.sim.brain import Brain
from pipeline.sim.tasks import Task

STEP = "Let's think step by step."
FINAL = re.compile(r"So the answer is (.+)\.$")


@pytest.fixture(scope="module")
def brain() -> Brain:
    return Brain(seed=0)


def task(brain: Brain, name: str) -> Task:
    return next(t for t in brain.tasks if t.name == name)


def answer_of(reply: str) -> str:
    match = FINAL.search(reply.strip().splitlines()[-1])
    assert match, reply
    return match.group(1)


def ask(brain: Brain, question: str, prompt: str = STEP, *, seed: int = 0) -> str:
    messages = [("user", f"Q: {question}\nA: {prompt}")]
    return brain.reply(messages, temperature=0.0, rng=random.Random(seed))


def test_a_known_question_gets_a_reasoning_line_and_a_final_answer(brain: Brain) -> None:
    example = task(brain, "object_counting").examples[0]
    reply = ask(brain, example.input)
    assert len(reply.splitlines()) == 2
    assert answer_of(reply).isdigit()


def test_the_question_is_found_wherever_the_prompt_is(brain: Brain) -> None:
    example = task(brain, "boolean_expressions").examples[3]
    layouts = [
        [("user", f"{example.input}\n{STEP}")],
        [("user", f"{STEP}\n\n{example.input}")],
        [("system", STEP), ("user", f"  {example.input.upper()}  ")],
    ]
    replies = {brain.reply(m, temperature=0.0, rng=random.Random(i)) for i, m in enumerate(layouts)}
    assert len(replies) == 1
    assert answer_of(replies.pop()) in ("True", "False")


def test_temperature_zero_answers_do_not_depend_on_the_rng(brain: Brain) -> None:
    for example in task(brain, "arithmetic").examples[:20]:
        assert ask(brain, example.input, seed=1) == ask(brain, example.input, seed=2)


def test_temperature_one_answers_vary_with_the_rng(brain: Brain) -> None:
    example = task(brain, "arithmetic").examples[5]
    messages = [("user", f"{example.input}\n{STEP}")]
    replies = {brain.reply(messages, temperature=1.0, rng=random.Random(s)) for s in range(20)}
    assert len(replies) > 1


def test_answers_are_right_about_as_often_as_the_landscape_says(brain: Brain) -> None:
    name = "word_sorting"
    examples = task(brain, name).examples
    right = sum(answer_of(ask(brain, e.input)) == e.target for e in examples)
    expected = brain.model(name).landscape.accuracy(f"q : a : {STEP}")
    assert abs(right / len(examples) - expected) < 0.1


def test_wrong_answers_are_plausible(brain: Brain) -> None:
    for name in ("arithmetic", "boolean_expressions", "word_sorting"):
        examples = task(brain, name).examples
        for e in examples[:60]:
            got = answer_of(ask(brain, e.input, "Just guess."))
            if name == "boolean_expressions":
                assert got in ("True", "False")
            elif name == "arithmetic":
                assert re.fullmatch(r"-?\d+", got)
            else:
                assert set(got.split()) <= set(e.target.split())


def test_a_meta_prompt_gets_a_tagged_prompt(brain: Brain) -> None:
    meta = (
        "text:\nLet's think step by step.\nscore:\n45\n\nThe current prompt is:\n"
        "Let's think step by step.\nWrite a new improved prompt. You may change up to 10 words.\n"
        "Wrap the new prompt with <START> and <END>."
    )
    rngs = [random.Random(s) for s in range(9)]
    replies = [brain.reply([("user", meta)], temperature=1.0, rng=rng) for rng in rngs]
    assert sum(bool(re.search(r"<START>.+<END>", r, re.S)) for r in replies) >= 8


def test_a_meta_prompt_with_exemplars_is_not_mistaken_for_a_question(brain: Brain) -> None:
    example = task(brain, "object_counting").examples[0]
    meta = (
        f"input:\n{example.input}\n<Prompt>\noutput:\n{example.target}\n"
        "Write a new prompt in <START> and <END>."
    )
    assert "<START>" in brain.reply([("user", meta)], temperature=1.0, rng=random.Random(3))


def test_an_unknown_request_gets_a_generic_reply(brain: Brain) -> None:
    messages = [("user", "What is the capital of Peru?")]
    reply = brain.reply(messages, temperature=0.7, rng=random.Random(0))
    assert reply
    assert "<START>" not in reply
    assert "So the answer is" not in reply


def test_assistant_turns_are_ignored(brain: Brain) -> None:
    example = task(brain, "arithmetic").examples[0]
    user = ("user", f"{example.input}\n{STEP}")
    with_history = [("assistant", "<START>noise<END>"), user]
    assert brain.reply(with_history, temperature=0, rng=random.Random(0)) == brain.reply(
        [user], temperature=0, rng=random.Random(0)
    )


def test_tasks_loaded_from_files_are_answered(tmp_path: Path) -> None:
    rows = [
        {"input": f"Is claim {i} true?\nOptions:\n- Yes\n- No", "target": ("Yes", "No")[i % 3 == 0]}
        for i in range(40)
    ]
    path = tmp_path / "claims.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    brain = Brain.from_paths(seed=1, paths=[str(path)])
    assert {t.name for t in brain.tasks} >= {"claims", "arithmetic"}
    for row in rows[:20]:
        messages = [("user", f"{row['input']}\n{STEP}")]
        reply = brain.reply(messages, temperature=0, rng=random.Random(0))
        assert answer_of(reply) in ("Yes", "No")


def test_a_task_reply_is_fast(brain: Brain) -> None:
    import time

    examples = task(brain, "object_counting").examples
    start = time.process_time()  # CPU time: a busy machine stretches the wall time many-fold
    for i in range(2000):
        ask(brain, examples[i % 200].input, f"{STEP} Variant {i % 40}.")
    assert time.process_time() - start < 2.0  # 0.15 s here


def gpo_meta(trajectory: list[tuple[str, float]], current: str, limit: int, exemplars: str) -> str:
    shown = "\n\n".join(f"text:\n{p}\nscore:\n{s:.0f}" for p, s in trajectory[-3:])
    return (
        f"Below are previous prompts with their scores (0-100).\n\n{shown}\n\n"
        f"The current prompt is:\n{current}\n\nTask examples:\n{exemplars}\n"
        "Carefully analyze the previous prompts and their scores, and write a new improved "
        f"prompt. You are allowed to change up to {limit} words in the current prompt.\n"
        "Wrap the new prompt with <START> and <END>."
    )


def test_a_crude_hill_climb_improves_on_step_by_step(brain: Brain) -> None:
    name = "object_counting"
    examples = task(brain, name).examples
    dev = examples[:30]
    exemplars = "\n".join(
        f"input:\n{e.input}\n<Prompt>\noutput:\n{e.target}\n" for e in examples[200:203]
    )

    def dev_score(prompt: str) -> float:
        return 100 * sum(answer_of(ask(brain, e.input, prompt)) == e.target for e in dev) / len(dev)

    trajectory = [(STEP, dev_score(STEP))]
    current, steps = STEP, 6
    for t in range(1, steps + 1):
        limit = int(10 + 40 * 0.5 * (1 + math.cos(math.pi * t / steps)))
        meta = gpo_meta(trajectory, current, limit, exemplars)
        replies = [
            brain.reply([("user", meta)], temperature=1.0, rng=random.Random(f"{t}/{k}"))
            for k in range(8)
        ]
        found = [re.search(r"<START>(.+?)<END>", r, re.S) for r in replies]
        candidates = {m.group(1) for m in found if m}
        candidates -= {p for p, _ in trajectory}
        score, current = max((dev_score(c), c) for c in candidates)
        trajectory.append((current, score))
    best = max(trajectory, key=lambda item: item[1])
    landscape = brain.model(name).landscape
    assert best[1] > trajectory[0][1] + 10
    assert landscape.accuracy(best[0]) > landscape.accuracy(STEP) + 0.03


def test_a_summary_request_gets_what_the_best_prompt_adds() -> None:
    from stages.metaprompt import ShownPrompt, build_summary_prompt

    request = build_summary_prompt(
        [
            ShownPrompt(text="Let's think step by step.", score=40),
            ShownPrompt(text="Read carefully. Give the final answer as a number.", score=80),
        ]
    )
    reply = Brain(seed=0).reply([("user", request)], temperature=0.0, rng=random.Random(1))
    assert "Give the final answer as a number." in reply
    assert "<START>" not in reply
    assert "think step by step" not in reply.lower()
