"""Reflection in the simulator: what a wrong answer shows, what a critique says, what fixes it.

Three steps, each reading only text, as with a real model:

1. the task model's wrong answers often show their cause in their reasoning line, a *symptom*
   ("I did not check this result."); which one is the landscape's business
   (:meth:`pipeline.sim.landscape.Landscape.symptom`): a helpful instruction the prompt lacks, or
   a harmful one it has;
2. the optimizer model, asked why the current prompt led to some wrong answers, reads the model
   outputs it is shown, counts the symptoms and names the most frequent as *reasons*; with no
   symptom to go on it falls back to generic advice on what the prompt does not say (which may
   or may not matter for the task);
3. the optimizer model, reading reasons in the feedback section of a meta-prompt, turns each
   into a *fix*: an instruction to add (the format and strategy fixes follow the answer kind of
   the exemplars) or a kind of sentence to remove.

The catalog below is general knowledge about prompts, not the hidden landscape: the names match
the landscape's facets so that the task model can pick a symptom, but whether a fix helps, and
how much, only the scores tell.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.sim.tasks import AnswerKind
from pipeline.sim.textnorm import top_content_words


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A cause of wrong answers: how it shows, how a critique names it, how to fix it."""

    name: str
    symptom: str
    reason: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()  # cue phrases of the sentences to drop


CATALOG: tuple[Diagnosis, ...] = (
    Diagnosis(
        "step_by_step",
        "I jumped straight to a result without working through it.",
        "The answers jump to a result without working through the problem step by step.",
        ("Let's think step by step.", "Work through the problem one step at a time."),
    ),
    Diagnosis(
        "verify",
        "I did not check this result.",
        "The answers never check their intermediate results.",
        ("Double-check your work before giving the final answer.", "Verify each result."),
    ),
    Diagnosis(
        "final_format",
        "I lost sight of what the final answer should be.",
        "The answers do not end with a clearly stated final answer.",
        ("State the final answer clearly at the end.",),
    ),
    Diagnosis(
        "careful_reading",
        "I may have misread a detail of the question.",
        "The answers misread details of the question.",
        ("Read the question carefully before answering.", "Pay close attention to every detail."),
    ),
    Diagnosis(
        "plan",
        "I did not sort out the relevant information first.",
        "The answers do not identify the key information before reasoning.",
        ("First identify the key information in the question.",),
    ),
    Diagnosis(
        "explain",
        "I gave no justification for this.",
        "The answers give no reasoning to justify them.",
        ("Explain your reasoning briefly.", "Show your work."),
    ),
    Diagnosis(
        "decompose",
        "I tried to do everything at once.",
        "The answers try to solve everything at once instead of part by part.",
        ("Break the problem into smaller steps and solve them one at a time.",),
    ),
    Diagnosis(
        "expert",
        "I approached this like a novice.",
        "The answers lack the care of an expert.",
        ("You are an expert problem solver.",),
    ),
    Diagnosis(
        "calm",
        "I rushed this.",
        "The answers are rushed.",
        ("Take a deep breath and take your time.",),
    ),
    Diagnosis(
        "concise",
        "My reasoning rambled and lost the thread.",
        "The answers ramble and lose the thread.",
        ("Be concise.",),
    ),
    Diagnosis(
        "alternatives",
        "I did not consider the other possibilities.",
        "The answers never consider alternatives.",
        ("Consider each possibility before deciding.",),
    ),
    Diagnosis(
        "format",
        "I was unsure how the answer should be written.",
        "The answers are not written in the form the task expects.",
    ),
    Diagnosis(
        "strategy",
        "I did not use a systematic method.",
        "The answers lack a systematic method for this kind of question.",
    ),
    Diagnosis(
        "no_thinking",
        "I answered without really thinking.",
        "The prompt tells the model to answer without thinking.",
        remove=("without thinking", "directly", "immediately", "just answer", "overthinking"),
    ),
    Diagnosis(
        "guess",
        "I just guessed.",
        "The prompt encourages guessing.",
        remove=("guess", "instinct", "gut", "intuition", "random", "whatever comes"),
    ),
    Diagnosis(
        "hedge",
        "I was not sure of this.",
        "The prompt makes the model hedge instead of committing.",
        remove=("maybe", "not sure", "probably", "uncertain", "might"),
    ),
    Diagnosis(
        "off_topic",
        "I got distracted by a side request.",
        "The prompt includes a request unrelated to the task.",
        remove=("poem", "joke", "story", "rhyme", "emoji", "translate", "song"),
    ),
    Diagnosis(
        "wrong_format",
        "I answered in a different form than the question needs.",
        "The prompt asks for an answer format that does not fit the task.",
        remove=("yes or no", "true or false", "letter", "number", "numeric", "digits", "valid"),
    ),
    Diagnosis(
        "symbol:(",
        "I got the nesting of the parentheses wrong.",
        "The answers get nested parentheses wrong.",
        ("Evaluate the innermost parentheses first.",),
    ),
    Diagnosis(
        "symbol:*",
        "I applied the operations in the wrong order.",
        "The answers apply the operations in the wrong order.",
        ("Follow the order of operations: multiplication before addition and subtraction.",),
    ),
    Diagnosis(
        "symbol:-",
        "I mixed up a sign.",
        "The answers mix up the signs of numbers.",
        ("Watch the signs of negative numbers.",),
    ),
    Diagnosis(
        "symbol:not",
        "I mishandled a negation.",
        "The answers mishandle negations.",
        ("Apply each negation carefully.",),
    ),
)
BY_NAME = {d.name: d for d in CATALOG}

FORMAT_FIX: dict[AnswerKind, str] = {
    "number": "Give the final answer as a single number.",
    "option_letter": "Answer with the letter of the correct option.",
    "yes_no": "Answer with Yes or No.",
    "true_false": "Evaluate the expression and answer True or False.",
    "valid_invalid": "Decide whether the argument is valid or invalid.",
    "word_list": "List the words in alphabetical order, separated by spaces.",
    "free": "Give the answer in exactly the same format as the examples.",
}
STRATEGY_FIX: dict[AnswerKind, str] = {
    "number": "Compute each intermediate result and keep a running total.",
    "option_letter": "Eliminate the wrong options first, then pick the best one.",
    "yes_no": "Evaluate each statement in order and track what follows.",
    "true_false": "Simplify the innermost parts first.",
    "valid_invalid": "Check whether the conclusion follows from the premises.",
    "word_list": "Compare the words letter by letter.",
    "free": "Follow the pattern of the examples precisely.",
}

_WORD_SYMPTOM = re.compile(r"I lost track of the ([a-z]+)\.")
_WORD_REASON = re.compile(r"The answers lose track of the ([a-z]+)\.")
_REASONS = {d.reason: d.name for d in CATALOG}


def symptom_line(name: str) -> str | None:
    """The reasoning line of a wrong answer caused by facet ``name`` (None: no visible sign)."""
    if name.startswith("word:"):
        return f"I lost track of the {name[5:]}."
    found = BY_NAME.get(name)
    return found.symptom if found else None


def reason_of(name: str) -> str:
    if name.startswith("word:"):
        return f"The answers lose track of the {name[5:]}."
    return BY_NAME[name].reason


def diagnose(text: str) -> list[str]:
    """The diagnoses whose symptoms occur in ``text`` (model outputs), most frequent first."""
    counts: Counter[str] = Counter()
    for d in CATALOG:
        if d.symptom in text:
            counts[d.name] += text.count(d.symptom)
    for word in _WORD_SYMPTOM.findall(text):
        counts[f"word:{word}"] += 1
    order = {name: text.find(symptom_line(name) or "") for name in counts}
    return sorted(counts, key=lambda n: (-counts[n], order[n]))


def read_feedback(text: str) -> tuple[str, ...]:
    """The diagnoses named by the reasons in ``text`` (a meta-prompt's feedback), in order."""
    found = [(text.find(reason), name) for reason, name in _REASONS.items() if reason in text]
    found += [(m.start(), f"word:{m.group(1)}") for m in _WORD_REASON.finditer(text)]
    return tuple(dict.fromkeys(name for _, name in sorted(found)))


def fix_sentences(name: str, kind: AnswerKind | None) -> tuple[str, ...]:
    """Instructions that address diagnosis ``name`` (for the exemplars' answer ``kind``)."""
    if name.startswith("word:"):
        word = name[5:]
        return (f"Keep track of all the {word} mentioned.", f"Pay close attention to the {word}.")
    if name == "format":
        return (FORMAT_FIX[kind],) if kind else ()
    if name == "strategy":
        return (STRATEGY_FIX[kind],) if kind else ()
    found = BY_NAME.get(name)
    return found.add if found else ()


def removal_cues(name: str, kind: AnswerKind | None) -> tuple[str, ...]:
    """Lower-case cue phrases of the sentences diagnosis ``name`` says to drop."""
    found = BY_NAME.get(name)
    if found is None:
        return ()
    if name == "wrong_format" and kind:
        own = FORMAT_FIX[kind].lower()
        return tuple(c for c in found.remove if c not in own)
    return found.remove


_FALLBACK: tuple[tuple[str, str], ...] = (
    ("step", "step_by_step"),
    ("check|verif", "verify"),
    ("answer|format", "final_format"),
    ("careful|read", "careful_reading"),
    ("identify|key", "plan"),
)


def critique(
    *,
    current: str,
    symptoms: Sequence[str],
    inputs: Sequence[str],
    count: int,
    tags: tuple[str, str] | None,
    rng: random.Random,
) -> str:
    """``count`` short reasons why ``current`` produced the errors shown: the ``symptoms`` read
    in the model outputs, most frequent first, then generic advice; one per line, numbered or
    wrapped in ``tags``."""
    reasons = [reason_of(name) for name in symptoms[:count]]
    if len(reasons) < count:
        reasons += _generic_reasons(current, inputs, rng)[: count - len(reasons)]
    if tags is None:
        return "\n".join(f"{i}. {r}" for i, r in enumerate(reasons, 1))
    return "\n".join(f"{tags[0]}{r}{tags[1]}" for r in reasons)


def _generic_reasons(current: str, inputs: Sequence[str], rng: random.Random) -> list[str]:
    """Plausible reasons from what the prompt does not say and from the inputs' most frequent
    word: advice that may or may not matter for the task."""
    lower = current.lower()
    names = [name for cue, name in _FALLBACK if not re.search(cue, lower)]
    names = names or [name for _, name in _FALLBACK]
    rng.shuffle(names)
    words = top_content_words(inputs, limit=1)
    if words:
        names.insert(rng.randint(0, 1), f"word:{words[0]}")
    return [reason_of(name) for name in names]
