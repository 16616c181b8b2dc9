"""Text normalisation shared by the simulator's roles: tokens, stems, content words, stable hashes.

Everything here is a pure function. Tokens are lower-cased, apostrophes are dropped ("let's" ->
"lets") and every run of word characters or every single other non-space character is one token,
so whitespace and case never matter when a question or a phrase is looked up.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from statistics import NormalDist

_TOKEN = re.compile(r"\w+|[^\w\s]")
_APOSTROPHES = str.maketrans("", "", "'\u2019`")
_STANDARD_NORMAL = NormalDist()

_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most
    my no nor not now of off on once only or other our out over own same she should so some such
    than that the their them then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours also
    many much following options option lets yes let one two three four five six seven eight nine
    ten question answer does dont
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

NEGATORS = frozenset({"not", "dont", "never", "without", "no", "doesnt", "cannot", "cant", "avoid"})

_SUFFIXES: tuple[tuple[str, str], ...] = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""))


def tokens(text: str) -> list[str]:
    """Lower-cased tokens of ``text``: words and single punctuation characters."""
    return _TOKEN.findall(text.lower().translate(_APOSTROPHES))


def normalize(text: str) -> str:
    """A canonical form of ``text``: its tokens joined by single spaces (idempotent)."""
    return " ".join(tokens(text))


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A crude, consistent stem: drops plural "s" and "ing"/"ed"/"ies" endings."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def stems(text: str) -> tuple[str, ...]:
    """Stems of the word tokens of ``text`` (punctuation dropped)."""
    return tuple(stem(t) for t in tokens(text) if t[0].isalnum())


def stem_phrase(text: str) -> str:
    """``text`` as a space-joined stem string, the unit phrases are matched in."""
    return " ".join(stems(text))


def is_content_word(token: str) -> bool:
    """A word worth noticing: alphabetic, at least three letters, not a stopword."""
    return len(token) >= 3 and token.isalpha() and token not in STOPWORDS


def content_words(text: str) -> list[str]:
    return [t for t in tokens(text) if is_content_word(t)]


def top_content_words(texts: Iterable[str], *, limit: int) -> list[str]:
    """Content words by document frequency (ties: first seen), at most ``limit``."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in dict.fromkeys(content_words(text)):
            counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts, key=lambda w: -counts[w])
    return ranked[:limit]


def unit(*parts: object) -> float:
    """A stable pseudo-random number in (0, 1) determined by ``parts``."""
    data = "\x1f".join(map(str, parts)).encode()
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return (value + 0.5) / 2.0**64


def gauss(*parts: object) -> float:
    """A stable standard-normal draw determined by ``parts``."""
    return _STANDARD_NORMAL.inv_cdf(unit(*parts))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def word_count(text: str) -> int:
    return sum(1 for t in tokens(text) if t[0].isalnum())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? or at line breaks), stripped, non-empty."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two sequences (insert, delete, substitute cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
