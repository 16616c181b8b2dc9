"""The hidden facets of a task's prompt landscape and how a task's set is drawn from a seed.

A facet is a family of phrases that mean roughly the same instruction ("verify", "double-check",
"check your work"). Phrases are stored as stem strings (see :func:`textnorm.stem_phrase`) and are
matched as whole-word runs in the stemmed prompt. Nothing here is shown to the optimizer role.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from pipeline.sim.tasks import AnswerKind, Task
from pipeline.sim.textnorm import stem, stem_phrase, tokens, top_content_words

Spec = tuple[str, tuple[float, float], tuple[str, ...]]

_OPTION_MARKS = re.compile(r"\([A-Z]\)|^\s*-\s", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Facet:
    """One kind of instruction: its phrases (stem strings) and its weight on the logit."""

    name: str
    phrases: tuple[str, ...]
    weight: float


@dataclass(frozen=True, slots=True)
class Conflict:
    """``first`` and ``second`` together cost ``penalty`` unless ``resolver`` is also present."""

    first: str
    second: str
    resolver: str
    penalty: float


ALWAYS: tuple[Spec, ...] = (
    (
        "step_by_step",
        (0.45, 0.8),
        (
            "step by step",
            "one step at a time",
            "think it through",
            "reason through",
            "break it down",
            "break the problem down",
            "break down",
            "walk through",
            "work through",
            "reason carefully",
            "think carefully",
        ),
    ),
    (
        "verify",
        (0.3, 0.6),
        (
            "double check",
            "check your work",
            "check the answer",
            "check each",
            "verify",
            "recheck",
            "make sure",
            "confirm",
        ),
    ),
    (
        "final_format",
        (0.25, 0.55),
        (
            "final answer",
            "the answer is",
            "end with",
            "at the end",
            "clearly state",
            "state the answer",
            "conclude with",
        ),
    ),
    (
        "no_thinking",
        (-1.0, -0.5),
        (
            "without thinking",
            "without reasoning",
            "do not think",
            "dont think",
            "do not explain",
            "no explanation",
            "answer immediately",
            "just answer",
            "answer directly",
            "without overthinking",
            "skip the reasoning",
            "as fast as",
        ),
    ),
    (
        "guess",
        (-0.9, -0.4),
        ("guess", "random", "first instinct", "gut feeling", "intuition", "whatever comes to mind"),
    ),
)

OPTIONAL: tuple[Spec, ...] = (
    (
        "careful_reading",
        (0.15, 0.45),
        (
            "read carefully",
            "carefully read",
            "read the question",
            "pay attention",
            "pay close attention",
            "attention to detail",
            "carefully",
        ),
    ),
    (
        "plan",
        (0.15, 0.45),
        (
            "first identify",
            "identify the",
            "key information",
            "relevant information",
            "write down",
            "make a plan",
            "list the",
            "keep track",
        ),
    ),
    (
        "explain",
        (0.05, 0.4),
        ("explain", "show your work", "show your reasoning", "justify", "reasoning"),
    ),
    (
        "decompose",
        (0.15, 0.4),
        (
            "smaller parts",
            "smaller steps",
            "sub problem",
            "subproblem",
            "decompose",
            "one at a time",
            "separately",
            "each part",
        ),
    ),
    ("expert", (0.05, 0.3), ("you are an expert", "as an expert", "expert", "experienced")),
    ("calm", (0.0, 0.25), ("take a deep breath", "take your time", "stay calm", "relax")),
    ("concise", (-0.25, 0.25), ("be concise", "concise", "briefly", "brief", "short", "succinct")),
    (
        "alternatives",
        (0.1, 0.35),
        ("consider all", "consider each", "alternative", "possibility", "every case"),
    ),
    ("hedge", (-0.4, -0.15), ("maybe", "not sure", "probably", "might be wrong", "uncertain")),
    ("off_topic", (-0.8, -0.3), ("poem", "joke", "story", "rhyme", "emoji", "translate", "song")),
)

FORMAT: dict[AnswerKind, tuple[str, ...]] = {
    "number": (
        "single number",
        "a number",
        "numeric",
        "numerical",
        "integer",
        "digits",
        "only the number",
    ),
    "option_letter": (
        "option letter",
        "letter of the",
        "the letter",
        "correct option",
        "choose the option",
        "select the option",
        "one of the options",
    ),
    "yes_no": ("yes or no", "yes no", "answer yes"),
    "true_false": ("true or false", "true false", "boolean value"),
    "valid_invalid": ("valid or invalid", "deductively valid", "valid argument"),
    "word_list": (
        "alphabetical order",
        "alphabetically",
        "sorted",
        "separated by spaces",
        "space separated",
        "in order",
    ),
    "free": ("exact", "exactly", "precise", "same format"),
}

STRATEGY: dict[AnswerKind, tuple[str, ...]] = {
    "number": (
        "calculate",
        "compute",
        "arithmetic",
        "running total",
        "add up",
        "count",
        "tally",
        "intermediate result",
    ),
    "option_letter": (
        "each option",
        "eliminate",
        "rule out",
        "compare the options",
        "every option",
        "process of elimination",
    ),
    "yes_no": ("determine whether", "evaluate", "track", "logic", "consistent", "each statement"),
    "true_false": ("evaluate", "innermost", "simplify", "precedence", "operator", "step through"),
    "valid_invalid": ("premise", "logic", "conclusion follow", "deduce"),
    "word_list": ("first letter", "letter by letter", "compare letter", "compare each", "alphabet"),
    "free": ("carefully", "precisely", "rule", "pattern"),
}

SYMBOLS: dict[str, tuple[str, ...]] = {
    "(": ("parentheses", "bracket", "innermost", "nested"),
    "*": ("multiplication", "multiply", "order of operations", "precedence", "product"),
    "-": ("negative", "minus", "sign", "subtraction", "subtract"),
    "not": ("negation", "negate", "not operator", "flip"),
}

CONFLICTS: tuple[tuple[str, str, str], ...] = (
    ("concise", "explain", "final_format"),
    ("concise", "step_by_step", "final_format"),
    ("concise", "decompose", "plan"),
    ("explain", "format", "final_format"),
    ("decompose", "format", "plan"),
    ("alternatives", "concise", "verify"),
    ("expert", "explain", "careful_reading"),
)


def _facet(
    rng: random.Random, name: str, bounds: tuple[float, float], phrases: tuple[str, ...]
) -> Facet:
    stemmed = tuple(dict.fromkeys(p for p in map(stem_phrase, phrases) if p))
    return Facet(name=name, phrases=stemmed, weight=round(rng.uniform(*bounds), 3))


def _wrong_format(rng: random.Random, kind: AnswerKind) -> tuple[str, ...]:
    others = sorted(k for k in FORMAT if k not in (kind, "free"))
    right = set(FORMAT[kind])
    return tuple(p for k in rng.sample(others, 2) for p in FORMAT[k] if p not in right)


def _symbol_specs(inputs: list[str]) -> list[Spec]:
    sample = [tokens(_OPTION_MARKS.sub(" ", text)) for text in inputs[:200]]
    return [
        (f"symbol:{s}", (0.15, 0.45), phrases)
        for s, phrases in SYMBOLS.items()
        if sum(s in toks for toks in sample) >= 0.3 * len(sample)
    ]


def _word_specs(inputs: list[str]) -> list[Spec]:
    words = top_content_words(inputs, limit=12)
    counts = {w: sum(w in text.lower() for text in inputs[:200]) for w in words}
    frequent = [w for w in words if counts[w] >= 0.1 * min(len(inputs), 200)]
    unique = {stem(w): w for w in reversed(frequent)}
    return [(f"word:{w}", (0.15, 0.45), (w,)) for w in frequent[:8] if unique[stem(w)] == w]


def _keyword_specs(task: Task, rng: random.Random) -> list[Spec]:
    inputs = [e.input for e in task.examples]
    specs = _symbol_specs(inputs) + _word_specs(inputs)
    rng.shuffle(specs)
    return specs[: rng.randint(2, 4)]


def task_specs(task: Task, rng: random.Random) -> list[Spec]:
    """The task-specific facets: answer format, wrong format, strategy, key words/symbols."""
    return [
        ("format", (0.35, 0.7), FORMAT[task.kind]),
        ("wrong_format", (-0.7, -0.3), _wrong_format(rng, task.kind)),
        ("strategy", (0.3, 0.6), STRATEGY[task.kind]),
        *_keyword_specs(task, rng),
    ]


def draw_facets(task: Task, rng: random.Random) -> tuple[Facet, ...]:
    """12-20 facets: the always-present generic ones, a few optional ones, the task's own."""
    optional = rng.sample(OPTIONAL, rng.randint(4, 7))
    specs = [*ALWAYS, *optional, *task_specs(task, rng)]
    return tuple(_facet(rng, name, bounds, phrases) for name, bounds, phrases in specs)


def draw_conflicts(facets: tuple[Facet, ...], rng: random.Random) -> tuple[Conflict, ...]:
    """Two or three conflicts among the facets present (fewer if not enough apply)."""
    present = {f.name for f in facets}
    usable = [c for c in CONFLICTS if set(c) <= present]
    chosen = rng.sample(usable, min(len(usable), rng.randint(2, 3)))
    return tuple(Conflict(a, b, r, round(rng.uniform(0.3, 0.6), 3)) for a, b, r in chosen)
