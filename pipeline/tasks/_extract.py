"""Where a model's free-text output states its answer, and reading one kind of answer there.

Small models answer in prose: reasoning, then ``So the answer is (B).``, ``The answer is: **No**``,
``Therefore, the statement is false.``, often followed by an explanation. :func:`read_answer`
looks, in order, at:

1. the last ``\\boxed{...}`` (its content, and nothing else);
2. the *answer region*: the text after the last answer marker (``answer is``, ``answer:``,
   ``answer =``, a ``### Final Answer`` heading, ``####``), else the whole output; with a
   marker, the first line after it is read first (``No, the answer is yes.`` reads ``yes``);
3. the region's last *conclusion*: the sentence after the last ``therefore``, ``thus``,
   ``hence``, ``in conclusion``, ... (``Therefore, the statement is false. This is because
   True and False is not True.`` reads ``false``); "so" is no cue, reasoning is full of it;
4. the region's last answer of the kind anywhere (``last``).

A marker is never looked behind: ``(A) is tempting. The answer is not clear.`` has no letter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

_MARKER = re.compile(
    r"(?m:^[\s#*_]*final\s+answer[\s#*_:]*$)"
    r"|\banswer\b[\s*_]*(?:is\b|would\s+be\b|should\s+be\b|will\s+be\b|:|=)[\s*_:]*|####",
    re.IGNORECASE,
)
_CUE = re.compile(
    r"(?:^|(?<=[.!?;:,]))[\s*_#>]*(?:therefore|thus|hence|consequently|in\s+conclusion|"
    r"in\s+summary|to\s+conclude|conclusion)\b[\s,:*_]*",
    re.IGNORECASE | re.MULTILINE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")
_CLAUSE_END = re.compile(
    r"\s(?:because|since|as|given|due\s+to|which|where|from)\b|\(|;|[.!?](?=\s|$)", re.IGNORECASE
)
_BOXED = "\\boxed{"
_MARKDOWN = " \t`*_#-=~"
_DROPPED = str.maketrans("", "", "'\u2018\u2019`")
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212]?)[$€£¥]?\s?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_LETTER_PATTERNS = (
    re.compile(r"\(([A-Z])\)"),
    re.compile(r"(?<![A-Za-z(])([A-Z])\)"),
    re.compile(r"\b(?i:option|choice)\s+([A-Z])\b"),
)
_LEADING_LETTER = re.compile(r"^[\W_]*([A-Z])(?!\w)")
_LONE_LETTER = re.compile(r"^[\W_]*([A-Z])[\W_]*$")

Find = Callable[[str], str | None]


@dataclass(frozen=True)
class Reader:
    """How to read one kind of answer: ``first`` in a short span (the line after a marker),
    ``concluded`` in a conclusion sentence (defaults to ``first``), ``last`` in a whole region."""

    first: Find
    last: Find
    concluded: Find | None = None


def read_answer(output: str, reader: Reader) -> str | None:
    """The answer ``reader`` finds where ``output`` states it (see the module), or None."""
    boxed = _last_boxed(output)
    if boxed is not None:
        return reader.first(boxed)
    region, line = _region(output)
    found = reader.first(line) if line else None
    conclusion = _conclusion(region)
    if found is None and conclusion:
        found = (reader.concluded or reader.first)(conclusion)
    return found if found is not None else reader.last(region)


def answer_part(output: str) -> str | None:
    """The last ``\\boxed{}``'s content, else the first non-empty line after the last answer
    marker, else ``None``."""
    boxed = _last_boxed(output)
    if boxed is not None:
        return boxed
    return _region(output)[1]


def final_answer(output: str) -> str:
    """The answer part of ``output``, else its last non-empty line ("" if it has none)."""
    part = answer_part(output)
    return part if part is not None else _last_line(output)


def normalize_answer(text: str) -> str:
    """Case-folded, quotes and apostrophes dropped, other punctuation (markdown included) turned
    into spaces, whitespace collapsed: ``'**Monsters, Inc.**'`` -> ``'monsters inc'``."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_DROPPED)
    return " ".join("".join(" " if is_punctuation(c) else c for c in folded).split())


def is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P") or char in "^*_"


def parse_number(text: str, *, last: bool = True) -> Decimal | None:
    """The last (or first) number in ``text``: ``"$1,234.50"`` -> 1234.50, ``"-3 apples"`` -> -3."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    match = matches[-1] if last else matches[0]
    value = Decimal(match["digits"].replace(",", ""))
    return -value if match["sign"] else value


# --- where the answer is ------------------------------------------------------------------------


def _region(output: str) -> tuple[str, str | None]:
    """The text after the last marker and its first non-empty line; without a marker, the whole
    output and None."""
    ends = [m.end() for m in _MARKER.finditer(output)]
    if not ends:
        return output, None
    region = output[ends[-1] :]
    return region, _first_line(region)


def _conclusion(region: str) -> str | None:
    cues = list(_CUE.finditer(region))
    if not cues:
        return None
    rest = region[cues[-1].end() :].lstrip()
    return _SENTENCE_END.split(rest, maxsplit=1)[0] or None


def _last_boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i]
    return text[begin:]


def _first_line(text: str) -> str:
    """The first line with more than markdown on it (a code fence, ``**``, ``---``)."""
    return next((line.strip() for line in text.splitlines() if _has_content(line)), "")


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if _has_content(line)), "")


def _has_content(line: str) -> bool:
    return bool(line.strip(_MARKDOWN))


# --- readers of one kind ------------------------------------------------------------------------


@cache
def label_reader(pattern: re.Pattern[str]) -> Reader:
    """Closed-set words (yes/no, true/false, valid/invalid), case-folded."""

    def first(span: str) -> str | None:
        match = pattern.search(span)
        return match.group(1).casefold() if match else None

    def last(region: str) -> str | None:
        found = pattern.findall(region)
        return str(found[-1]).casefold() if found else None

    return Reader(first=first, last=last)


def _first_letter(span: str) -> str | None:
    for pattern in (*_LETTER_PATTERNS, _LEADING_LETTER):
        match = pattern.search(span)
        if match:
            return match.group(1)
    return None


def _marked_letter(span: str) -> str | None:
    """A letter as ``(X)``, ``X)`` or ``option X``, never a sentence's capital (``I think``)."""
    matches = [m for p in _LETTER_PATTERNS for m in p.finditer(span)]
    return min(matches, key=lambda m: m.start()).group(1) if matches else None


def _last_letter(region: str) -> str | None:
    lone = _LONE_LETTER.match(_last_line(region))
    if lone:
        return lone.group(1)
    matches = [m for p in _LETTER_PATTERNS for m in p.finditer(region)]
    return max(matches, key=lambda m: m.start()).group(1) if matches else None


LETTERS = Reader(first=_first_letter, last=_last_letter, concluded=_marked_letter)


def _clause_number(span: str) -> str | None:
    """The last number (exact, as ``str(Decimal)``) of the span's first clause (cut at
    "because", "(", a sentence's end), else of the whole span: ``5 apples, since 2 + 3 = 5``
    -> 5, ``2 + 3 = 5.`` -> 5."""
    value = parse_number(_CLAUSE_END.split(span, maxsplit=1)[0])
    value = parse_number(span) if value is None else value
    return None if value is None else str(value)


def _last_number(region: str) -> str | None:
    value = parse_number(region)
    return None if value is None else str(value)


NUMBERS = Reader(first=_clause_number, last=_last_number)
