"""Prompt text comparisons: a normal form for de-duplication and the word-level edit distance.

The edit distance measures the learning rate the paper asks for but its reference code never
checks: how many words a candidate changed relative to the current prompt.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence

_QUOTES = "\"'`\u2018\u2019\u201c\u201d\u00ab\u00bb"
_END_STRIP = string.whitespace + _QUOTES + ".,;:!?\u2026"
_WORD_STRIP = string.punctuation + _QUOTES + "\u2026"


def normalize_prompt(text: str) -> str:
    """A canonical form of a prompt for de-duplication.

    Unicode-normalised (NFKC), case-folded, whitespace collapsed to single spaces, and quotes and
    sentence punctuation stripped at both ends, so ``'"Let's think  step by step."'`` and
    ``"let's think step by step"`` are the same prompt.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(_END_STRIP)


def prompt_words(text: str) -> list[str]:
    """The words of ``text`` as the edit distance compares them.

    Split on whitespace, case-folded, with surrounding punctuation stripped; words that are only
    punctuation are dropped.
    """
    words = (w.strip(_WORD_STRIP) for w in unicodedata.normalize("NFKC", text).casefold().split())
    return [w for w in words if w]


def word_edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance: whole-word insertions, deletions and substitutions.

    Words are compared as :func:`prompt_words` gives them. O(len(a) * len(b)) time, two rows.
    """
    return sequence_edit_distance(prompt_words(a), prompt_words(b))


def sequence_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two sequences of words."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            cost = 0 if word == other else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]
