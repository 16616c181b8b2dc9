"""The task-model role: answer a known question right or plausibly wrong, in a model's words.

Every reply is one short reasoning line and a final line ``So the answer is <answer>.``, so an
extractor that takes the last number, option letter or Yes/No/True/False finds the answer. The
reasoning line of a wrong answer often shows its cause (a *symptom*, see
:mod:`pipeline.sim.feedback`), which reflection can read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from pipeline.sim.feedback import symptom_line
from pipeline.sim.landscape import Landscape
from pipeline.sim.tasks import AnswerKind, Example, Task
from pipeline.sim.textnorm import normalize, unit

_OPTION_LETTER = re.compile(r"\(([A-Z])\)")
_FLIPS = {
    "yes": "no",
    "no": "yes",
    "true": "false",
    "false": "true",
    "valid": "invalid",
    "invalid": "valid",
}
_NUMBER_SHIFTS = (1, -1, 2, -2, 3, 10, -10, 5)

_REASONING: dict[AnswerKind, tuple[str, ...]] = {
    "number": (
        "Let me work through the quantities one at a time.",
        "Computing this carefully step by step.",
        "Adding up the relevant amounts gives the total.",
    ),
    "option_letter": (
        "Comparing each option against the question.",
        "Ruling out the options that do not fit.",
        "Checking the options one by one.",
    ),
    "yes_no": (
        "Checking the statements in order.",
        "Following the reasoning through.",
        "Let me trace this carefully.",
    ),
    "true_false": (
        "Evaluating the innermost parts first.",
        "Simplifying the expression step by step.",
        "Applying the operators in order of precedence.",
    ),
    "valid_invalid": (
        "Checking whether the conclusion follows from the premises.",
        "Following the argument step by step.",
    ),
    "word_list": (
        "Comparing the words letter by letter.",
        "Ordering the words alphabetically.",
        "Sorting by the first letter, then the next ones.",
    ),
    "free": (
        "Let me think about this carefully.",
        "Working through the question.",
        "Here is my reasoning in brief.",
    ),
}


def flip_choice(target: str) -> str:
    """The opposite of Yes/No, True/False or valid/invalid, in the target's letter case."""
    flipped = _FLIPS.get(target.lower(), "no")
    if target.isupper():
        return flipped.upper()
    return flipped.capitalize() if target[:1].isupper() else flipped


def wrong_number(target: str, u: float) -> str:
    try:
        value = Decimal(target.replace(",", ""))
    except InvalidOperation:
        return target + "0"
    shift = _NUMBER_SHIFTS[int(u * len(_NUMBER_SHIFTS))]
    if value == value.to_integral_value():
        return str(int(value) + shift)
    return str(value + Decimal(shift) / 2)


def wrong_option(example: Example, u: float) -> str:
    letters = sorted(set(_OPTION_LETTER.findall(example.input))) or list("ABCDE")
    current = _OPTION_LETTER.fullmatch(example.target.strip())
    others = [x for x in letters if not current or x != current.group(1)] or ["A"]
    return f"({others[int(u * len(others))]})"


def wrong_word_list(target: str, u: float) -> str:
    words = target.split()
    if len(words) < 2:
        return target + "s"
    i = int(u * (len(words) - 1))
    if u < 0.2:
        return " ".join(words[:i] + words[i + 1 :])
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def wrong_free(target: str, others: Sequence[str], u: float) -> str:
    candidates = [o for o in others if o != target]
    if candidates:
        return candidates[int(u * len(candidates))]
    return " ".join(reversed(target.split())) + ("" if " " in target else "?")


class TaskModel:
    """Answers the questions of one task through its landscape."""

    def __init__(self, task: Task, *, seed: int) -> None:
        self.task = task
        self.landscape = Landscape(task, seed=seed)
        self._targets = tuple(dict.fromkeys(e.target for e in task.examples[:200]))

    def wrong_answer(self, index: int, u: float) -> str:
        example = self.task.examples[index]
        kind = self.task.kind
        if kind == "option_letter":
            return wrong_option(example, u)
        if kind in ("yes_no", "true_false", "valid_invalid"):
            return flip_choice(example.target)
        if kind == "number":
            return wrong_number(example.target, u)
        if kind == "word_list":
            return wrong_word_list(example.target, u)
        return wrong_free(example.target, self._targets, u)

    def answer(self, prompt: str, index: int, *, temperature: float, rng: random.Random) -> str:
        """The reply to example ``index`` asked with ``prompt`` (request text minus question)."""
        name, seed, prompt = self.task.name, self.landscape.seed, normalize(prompt)
        if temperature > 0:
            draw, u, v, w = rng.random(), rng.random(), rng.random(), rng.random()
        else:
            draw = self.landscape.draw(prompt, index)
            u = unit(seed, name, "wrong", prompt, index)
            v = unit(seed, name, "style", prompt, index)
            w = unit(seed, name, "symptom", prompt, index)
        correct = self.landscape.is_correct(prompt, index, draw=draw)
        final = self.task.examples[index].target if correct else self.wrong_answer(index, u)
        lines = _REASONING[self.task.kind]
        line = lines[int(v * len(lines))]
        if not correct:
            line = symptom_line(self.landscape.symptom(prompt, w) or "") or line
        return f"{line}\nSo the answer is {final}."
