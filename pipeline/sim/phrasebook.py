"""What the simulated optimizer "knows" about writing prompts: generic prompt-engineering advice
and templates that turn a task's exemplars into task-specific instructions.

This is general knowledge, the kind any LLM brings to prompt writing. It does not see the hidden
landscape (:mod:`pipeline.sim.landscape`): some of its sentences help on a given task, some do
nothing and a few hurt, and only the scores shown in a meta-prompt tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.sim.metaprompt import Exemplar
from pipeline.sim.tasks import Example, detect_kind
from pipeline.sim.textnorm import tokens, top_content_words

GENERIC: tuple[str, ...] = (
    "Let's think step by step.",
    "Break the problem into smaller steps and solve them one at a time.",
    "Read the question carefully before answering.",
    "Double-check your work before giving the final answer.",
    "Verify each intermediate result.",
    "State the final answer clearly at the end.",
    "Explain your reasoning briefly.",
    "Be concise.",
    "You are an expert problem solver.",
    "Take a deep breath and work on this problem step by step.",
    "First identify the key information in the question.",
    "Consider each possibility before deciding.",
    "Make sure your answer follows the requested format.",
    "Write down the relevant facts, then reason about them.",
    "Let's work this out in a step by step way to be sure we have the right answer.",
    "Show your work.",
    "Take your time.",
    "Pay attention to every detail.",
    "Think like a careful teacher grading an exam.",
    "Keep track of each piece of information as you go.",
    "Answer directly without overthinking.",
    "Trust your first instinct.",
    "Maybe the simplest answer is right.",
    "Summarize the question in your own words first.",
    "Avoid unnecessary words.",
)

SHORT: tuple[str, ...] = (
    "Be careful.",
    "Think carefully.",
    "Be precise.",
    "Stay focused.",
    "Check everything.",
    "Reason logically.",
    "Go slowly.",
    "Be thorough.",
)

SYNONYMS: dict[str, str] = {
    "think": "reason",
    "reason": "think",
    "carefully": "thoroughly",
    "thoroughly": "carefully",
    "solve": "work out",
    "question": "problem",
    "problem": "question",
    "check": "verify",
    "verify": "check",
    "final": "last",
    "identify": "find",
    "consider": "examine",
    "explain": "describe",
    "clearly": "explicitly",
    "read": "review",
    "compute": "calculate",
    "calculate": "compute",
    "correct": "right",
    "careful": "attentive",
    "precise": "exact",
    "key": "important",
    "each": "every",
}

KIND_SENTENCES: dict[str, tuple[str, ...]] = {
    "number": (
        "Give the final answer as a single number.",
        "Compute each intermediate result and report the final number.",
        "Keep a running total as you count.",
    ),
    "option_letter": (
        "Consider each option and choose the correct letter, like (A).",
        "Eliminate the wrong options first, then pick the best one.",
        "Answer with the letter of the correct option.",
    ),
    "yes_no": (
        "Answer with Yes or No.",
        "Decide whether the statement holds, then answer Yes or No.",
        "Evaluate each statement in order.",
    ),
    "true_false": (
        "Evaluate the expression and answer True or False.",
        "Simplify the innermost parts first.",
        "Remember operator precedence: not, then and, then or.",
    ),
    "valid_invalid": (
        "Decide whether the argument is valid or invalid.",
        "Check whether the conclusion follows from the premises.",
    ),
    "word_list": (
        "List the words in alphabetical order, separated by spaces.",
        "Compare the words letter by letter.",
        "Sort the words by their first letter, then by the following letters.",
    ),
    "free": (
        "Give the answer in exactly the same format as the examples.",
        "Follow the pattern of the examples precisely.",
    ),
}

SYMBOL_SENTENCES: dict[str, tuple[str, ...]] = {
    "(": (
        "Evaluate the innermost parentheses first.",
        "Work from the inside of nested brackets out.",
    ),
    "*": ("Follow the order of operations: multiplication before addition and subtraction.",),
    "-": ("Watch the signs of negative numbers.",),
    "not": ("Apply each negation carefully.",),
}

_VERB_TEXT = """sort find take choose select determine evaluate follow tell tells say says return
    list give make use compute calculate count"""
_VERBS = frozenset(_VERB_TEXT.split())

KEYWORD_TEMPLATES: tuple[str, ...] = (
    "Pay close attention to the {w}.",
    "Keep track of all the {w} mentioned.",
    "Identify each {w} in the question.",
    "Think carefully about the {w}.",
)


def task_sentences(exemplars: Sequence[Exemplar]) -> tuple[str, ...]:
    """Task-specific instructions a model would write after reading the exemplars."""
    if not exemplars:
        return ()
    kind = detect_kind([Example(input=e.input, target=e.output) for e in exemplars])
    found = list(KIND_SENTENCES[kind])
    seen = {t for e in exemplars for t in tokens(e.input)}
    found += [s for symbol, group in SYMBOL_SENTENCES.items() if symbol in seen for s in group]
    words = [
        w
        for w in top_content_words((e.input for e in exemplars), limit=8)
        if not w.endswith("ly") and w not in _VERBS
    ][:3]
    found += [template.format(w=w) for w in words for template in KEYWORD_TEMPLATES[:2]]
    return tuple(dict.fromkeys(found))
