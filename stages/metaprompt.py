"""Meta-prompts for the optimizer model, in our own words with the paper's structure.

A GPO meta-prompt has, in this order: a task description (the prompt is an instruction inserted
where ``<Prompt>`` appears in the task, scores are accuracies from 0 to 100); the previously tried
prompts with their scores (or a summary of them); the current prompt and its score; the task
exemplars with ``<Prompt>`` in place; optional feedback on the current prompt's errors (reflection);
the request (write a new prompt, or edit the current one); the word limit when the schedule sets
one ("You may change up to N words of the current prompt."); and the output format (the new
prompt between the strategy's output tags).

Scores are always shown as integers from 0 to 100 (the reference code showed 0-1 fractions while
saying 0-100). Everything here is deterministic.

Wording note: the phrase "current prompt" first appears where the current prompt is given, and
no sentence before the exemplars pairs a word such as "place" or "between" with ``<Prompt>``, so
a reader looking for "the current prompt is:" or for the output tags finds the right ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from stages.strategy import Strategy

Placement = Literal["after", "before", "system"]

_PLACEMENT = {
    "after": "after the input",
    "before": "before the input",
    "system": "as the system message, ahead of the input",
}


@dataclass(frozen=True)
class ShownPrompt:
    """A prompt as the optimizer sees it: its text and its dev score on 0..100."""

    text: str
    score: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 100.0):
            raise ValueError(f"ShownPrompt.score: expected a number in 0..100, found {self.score}")

    @property
    def shown_score(self) -> int:
        """The score as shown: an integer from 0 to 100."""
        return round(self.score)


def build_meta_prompt(
    strategy: Strategy,
    *,
    exemplars: Sequence[tuple[str, str]],
    placement: Placement,
    shown: Sequence[ShownPrompt],
    current: ShownPrompt,
    word_budget: int | None,
    reflection: str | None = None,
    summary: str | None = None,
) -> str:
    """The meta-prompt for one optimization step.

    ``exemplars`` are (input, gold output) pairs; ``shown`` is what trajectory retrieval
    selected. With ``history_order="ascending"`` they are shown by increasing score (ties keep
    their order); otherwise in the order given (the retrieval stage orders them by similarity
    or by time). With a ``summary``, it replaces the list; with ``trajectory="none"`` neither is
    shown. ``reflection`` is feedback on why the current prompt failed on some examples.
    """
    if word_budget is not None and word_budget < 1:
        raise ValueError(
            f"build_meta_prompt: word_budget must be >= 1 or None, found {word_budget}"
        )
    history = _history(strategy, shown, summary)
    sections = [
        _task_description(placement),
        history,
        _current(current),
        _exemplars(exemplars, placement),
        _reflection(reflection),
        _request(
            strategy,
            history_kind=_history_kind(strategy, shown, summary),
            has_reflection=bool(reflection),
        ),
        _limit(word_budget),
        _output_format(strategy),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _task_description(placement: Placement) -> str:
    return (
        "Your job is to improve the prompt of a task. A prompt is an instruction that is given to "
        "a language model together with every input of the task; the examples below mark its "
        f"position with <Prompt> (it goes {_PLACEMENT[placement]}). A better prompt makes the "
        "model give the correct output more often. The score of a prompt is the percentage of "
        "task examples it gets right: an integer from 0 to 100, higher is better."
    )


def _history_kind(
    strategy: Strategy, shown: Sequence[ShownPrompt], summary: str | None
) -> Literal["none", "list", "summary"]:
    if strategy.trajectory == "none":
        return "none"
    if summary:
        return "summary"
    return "list" if shown else "none"


def _history(strategy: Strategy, shown: Sequence[ShownPrompt], summary: str | None) -> str:
    kind = _history_kind(strategy, shown, summary)
    if kind == "summary":
        return f"Here is a summary of the prompts tried so far and how they scored:\n{summary}"
    if kind == "none":
        return ""
    ordered = _ordered(strategy, shown)
    header = "Here are prompts that were tried before, with their scores"
    if strategy.history_order == "ascending":
        header += ", from the lowest score to the highest"
    return header + ":\n\n" + "\n\n".join(_scored(p) for p in ordered)


def _ordered(strategy: Strategy, shown: Sequence[ShownPrompt]) -> list[ShownPrompt]:
    if strategy.history_order == "ascending":
        return sorted(shown, key=lambda p: p.score)
    return list(shown)


def _scored(prompt: ShownPrompt) -> str:
    return f"text:\n{_text(prompt.text)}\nscore:\n{prompt.shown_score}"


def _text(text: str) -> str:
    return text.strip() or "(empty prompt)"


def _current(current: ShownPrompt) -> str:
    return (
        f"The current prompt is:\n{_text(current.text)}\n"
        f"It scores {current.shown_score} out of 100."
    )


def _exemplars(exemplars: Sequence[tuple[str, str]], placement: Placement) -> str:
    if not exemplars:
        return ""
    shown = "\n\n".join(_exemplar(question, gold, placement) for question, gold in exemplars)
    return f"Examples of the task, with <Prompt> where the prompt goes:\n\n{shown}"


def _exemplar(question: str, gold: str, placement: Placement) -> str:
    body = f"Input:\n{question.strip()}"
    if placement == "after":
        body = f"{body}\n<Prompt>"
    elif placement == "before":
        body = f"<Prompt>\n{body}"
    else:
        body = f"System: <Prompt>\n{body}"
    return f"{body}\nOutput:\n{gold.strip()}"


def _reflection(reflection: str | None) -> str:
    if not reflection or not reflection.strip():
        return ""
    return (
        "Feedback on some examples that the current prompt got wrong, and why:\n"
        f"{reflection.strip()}"
    )


def _request(strategy: Strategy, *, history_kind: str, has_reflection: bool) -> str:
    feedback = " Take the feedback above into account." if has_reflection else ""
    if strategy.update == "editing":
        return (
            "Edit the current prompt so that it scores higher: keep what helps and change what "
            f"may be causing wrong outputs.{feedback}"
        )
    study = {
        "list": "Study the earlier prompts and their scores carefully, work out what the "
        "higher-scoring ones do differently,",
        "summary": "Study the summary and the current prompt's score carefully,",
        "none": "Study the current prompt and its score carefully,",
    }[history_kind]
    return f"{study} and then write a new, improved prompt for the task.{feedback}"


def _limit(word_budget: int | None) -> str:
    if word_budget is None:
        return ""
    return f"You may change up to {word_budget} words of the current prompt."


def _output_format(strategy: Strategy) -> str:
    opener, closer = strategy.output_tags
    which = "revised" if strategy.update == "editing" else "new"
    return (
        f"Reply with the {which} prompt between {opener} and {closer}, for example:\n"
        f"{opener}...{closer}"
    )


def build_reflection_prompt(current: str, errors: Sequence[tuple[str, str, str]]) -> str:
    """Ask why ``current`` led to ``errors`` ((input, gold output, model output) triples).

    The answer is meant to be short: a few reasons, one per line.
    """
    cases = "\n\n".join(
        f"Example {i}:\nInput:\n{question.strip()}\nCorrect answer: {gold.strip()}\n"
        f"Model output: {output.strip()}"
        for i, (question, gold, output) in enumerate(errors, 1)
    )
    return (
        "A language model was given a prompt together with each of the inputs below, and it "
        f"answered them wrongly.\n\nThe current prompt is:\n{_text(current)}\n\n{cases}\n\n"
        "Explain briefly why the current prompt may have led to these wrong answers. List up to "
        "three short reasons, one per line, and nothing else."
    )


def build_summary_prompt(shown: Sequence[ShownPrompt]) -> str:
    """Ask what distinguishes the high-scoring prompts among ``shown`` from the low-scoring ones."""
    listed = "\n\n".join(_scored(p) for p in sorted(shown, key=lambda p: p.score))
    return (
        "Here are prompts that were tried for a task, with their scores (an integer from 0 to "
        f"100, higher is better), from the lowest score to the highest:\n\n{listed}\n\n"
        "Summarize in a few sentences what the high-scoring prompts have in common and what sets "
        "them apart from the low-scoring ones. Reply with the summary only."
    )
