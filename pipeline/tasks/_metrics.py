"""Answer extraction and metrics: did a task model's free-text output get the gold target?

A model's reply ends with its answer in one of many styles: ``So the answer is (B).`` (the
simulator), ``Answer: 42``, ``**Yes**``, ``\\boxed{7}``, ``the answer is: True``. The *answer part*
of an output is the content of its last ``\\boxed{...}`` if any, else the first non-empty line after
its last marker (``answer is``, ``answer:``, ``answer =``, ``####``), else there is none and each
metric falls back as documented on it.

Every metric is called as ``metric(output, target)`` and returns a :class:`Judgement`; custom ones
may be async or return a plain ``bool`` (see :func:`custom_metric` and :func:`judge`).
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from pipeline.errors import ConfigError
from pipeline.tasks._data import Example

AnswerKind = Literal[
    "number", "option_letter", "yes_no", "true_false", "valid_invalid", "word_list", "free"
]

_MARKER = re.compile(r"\banswer\b[\s*_]*(?:is\b|:|=)[\s*_:]*|####", re.IGNORECASE)
_BOXED = "\\boxed{"
_DROPPED = str.maketrans("", "", "'\u2018\u2019`")
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212]?)[$€£¥]?\s?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_TOLERANCE = Decimal("1e-6")
_LETTER_PATTERNS = (
    re.compile(r"\(([A-Z])\)"),
    re.compile(r"(?<![A-Za-z(])([A-Z])\)"),
    re.compile(r"\b(?i:option|choice)\s+([A-Z])\b"),
)
_LEADING_LETTER = re.compile(r"^[\W_]*([A-Z])(?!\w)")
_LONE_LETTER = re.compile(r"^[\W_]*([A-Z])[\W_]*$")
_TARGET_LETTER = re.compile(r"^\(?([A-Z])\)?$")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_TRUE_FALSE = re.compile(r"\b(true|false|valid|invalid)\b", re.IGNORECASE)
_WORD_SPLIT = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class Judgement:
    """Whether an output is correct, and what the metric read as its answer (None: nothing)."""

    correct: bool
    extracted: str | None


class Metric(Protocol):
    """Judges one output against one gold target; may return an awaitable."""

    @property
    def name(self) -> str: ...

    def __call__(self, output: str, target: str) -> Judgement | Awaitable[Judgement]: ...


# --- extraction -------------------------------------------------------------------------------


def answer_part(output: str) -> str | None:
    """The last ``\\boxed{}``'s content, else the first non-empty line after the last answer
    marker, else ``None``."""
    boxed = _last_boxed(output)
    if boxed is not None:
        return boxed
    ends = [m.end() for m in _MARKER.finditer(output)]
    return _first_line(output[ends[-1] :]) if ends else None


def final_answer(output: str) -> str:
    """The answer part of ``output``, else its last non-empty line ("" if it has none)."""
    part = answer_part(output)
    return part if part is not None else _last_line(output)


def normalize_answer(text: str) -> str:
    """Case-folded, quotes and apostrophes dropped, other punctuation (markdown included) turned
    into spaces, whitespace collapsed: ``'**Monsters, Inc.**'`` -> ``'monsters inc'``."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_DROPPED)
    return " ".join("".join(" " if _is_punctuation(c) else c for c in folded).split())


def parse_number(text: str, *, last: bool = True) -> Decimal | None:
    """The last (or first) number in ``text``: ``"$1,234.50"`` -> 1234.50, ``"-3 apples"`` -> -3."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    match = matches[-1] if last else matches[0]
    value = Decimal(match["digits"].replace(",", ""))
    return -value if match["sign"] else value


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P") or char in "^*_"


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
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _label(output: str, pattern: re.Pattern[str]) -> str | None:
    """The first match in the answer part if there is one, else the last match in the output."""
    part = answer_part(output)
    if part is not None:
        match = pattern.search(part)
        return match.group(1).casefold() if match else None
    found = pattern.findall(output)
    return str(found[-1]).casefold() if found else None


def _letter(output: str) -> str | None:
    part = answer_part(output)
    if part is not None:
        return _first_letter(part)
    lone = _LONE_LETTER.match(_last_line(output))
    if lone:
        return lone.group(1)
    matches = [m for p in _LETTER_PATTERNS for m in p.finditer(output)]
    return max(matches, key=lambda m: m.start()).group(1) if matches else None


def _first_letter(part: str) -> str | None:
    for pattern in (*_LETTER_PATTERNS, _LEADING_LETTER):
        match = pattern.search(part)
        if match:
            return match.group(1)
    return None


def _words(text: str) -> tuple[str, ...]:
    words = (normalize_answer(w).replace(" ", "") for w in _WORD_SPLIT.split(text))
    return tuple(w for w in words if w)


def _format_number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


# --- built-in metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactMatch:
    """The normalized final answer (answer part, else last line) equals the normalized target."""

    name: str = "exact"

    def __call__(self, output: str, target: str) -> Judgement:
        extracted = normalize_answer(final_answer(output)) or None
        return Judgement(extracted is not None and extracted == normalize_answer(target), extracted)


@dataclass(frozen=True)
class MultipleChoice:
    """Multiple choice. A letter target (``(B)``/``B``) is compared with the option letter read
    from the answer part (first ``(X)``, ``X)``, ``option X`` or leading ``X``), else with the
    last one in the output. A text target must occur in the normalized final answer."""

    name: str = "choice"

    def __call__(self, output: str, target: str) -> Judgement:
        gold = _TARGET_LETTER.match(target.strip())
        if gold is None:
            answer = normalize_answer(final_answer(output))
            return Judgement(_contains(answer, target).correct, answer or None)
        letter = _letter(output)
        extracted = None if letter is None else f"({letter})"
        return Judgement(letter == gold.group(1), extracted)


@dataclass(frozen=True)
class Numeric:
    """The last number of the answer part (else of the whole output) equals the target's number
    within 1e-6; commas, currency signs, units, percent signs and ``\\boxed{}`` are handled."""

    name: str = "numeric"

    def __call__(self, output: str, target: str) -> Judgement:
        part = answer_part(output)
        value = parse_number(output if part is None else part)
        gold = parse_number(final_answer(target))
        if value is None:
            return Judgement(False, None)
        return Judgement(
            gold is not None and abs(value - gold) <= _TOLERANCE, _format_number(value)
        )


@dataclass(frozen=True)
class Label:
    """One of a closed set of words (yes/no; true/false/valid/invalid): the first in the answer
    part if there is one, else the last in the output; compared case-insensitively."""

    name: str
    pattern: re.Pattern[str]

    def __call__(self, output: str, target: str) -> Judgement:
        extracted = _label(output, self.pattern)
        return Judgement(extracted == normalize_answer(target), extracted)


@dataclass(frozen=True)
class WordList:
    """The words of the final answer (answer part, else last line), case-folded and without
    punctuation, equal the target's words in the same order."""

    name: str = "word_list"

    def __call__(self, output: str, target: str) -> Judgement:
        words = _words(final_answer(output))
        return Judgement(bool(words) and words == _words(target), " ".join(words) or None)


@dataclass(frozen=True)
class Contains:
    """The normalized target occurs in the normalized output, on word boundaries."""

    name: str = "contains"

    def __call__(self, output: str, target: str) -> Judgement:
        return _contains(normalize_answer(output), target)


def _contains(normalized_output: str, target: str) -> Judgement:
    gold = normalize_answer(target)
    found = bool(gold) and f" {gold} " in f" {normalized_output} "
    return Judgement(found, gold if found else None)


exact = ExactMatch()
choice = MultipleChoice()
numeric = Numeric()
yes_no = Label("yes_no", _YES_NO)
true_false = Label("true_false", _TRUE_FALSE)
word_list = WordList()
contains = Contains()

BUILTIN_METRICS: tuple[Metric, ...] = (
    exact,
    choice,
    numeric,
    yes_no,
    true_false,
    word_list,
    contains,
)


def metric_by_name(name: str) -> Metric:
    """The built-in metric called ``name``; ``ConfigError`` listing the known ones otherwise."""
    for metric in BUILTIN_METRICS:
        if metric.name == name:
            return metric
    known = ", ".join(m.name for m in BUILTIN_METRICS)
    raise ConfigError(f"metric: expected one of {known}, found {name!r}")


# --- choosing a metric from the data ----------------------------------------------------------

_KIND_OPTION = re.compile(r"^\([A-Z]\)$")
_KIND_NUMBER = re.compile(r"^-?\d[\d,]*(?:\.\d+)?$")
_KIND_CHOICES: tuple[tuple[AnswerKind, frozenset[str]], ...] = (
    ("yes_no", frozenset({"yes", "no"})),
    ("true_false", frozenset({"true", "false"})),
    ("valid_invalid", frozenset({"valid", "invalid"})),
)
_METRIC_OF_KIND: Mapping[AnswerKind, Metric] = {
    "number": numeric,
    "option_letter": choice,
    "yes_no": yes_no,
    "true_false": true_false,
    "valid_invalid": true_false,
    "word_list": word_list,
    "free": exact,
}


def _share(examples: Sequence[Example], test: Callable[[Example], object]) -> float:
    return sum(1 for e in examples if test(e)) / len(examples)


def _is_word_list(example: Example) -> bool:
    words = example.target.split()
    haystack = example.input.lower()
    return words == sorted(words) and all(w.lower() in haystack for w in words)


def detect_kind(examples: Sequence[Example]) -> AnswerKind:
    """The answer kind at least 90 % of the targets have (``"free"`` if none): ``(X)`` option
    letters, yes/no, true/false, valid/invalid, numbers, or sorted words taken from the input."""
    if not examples:
        return "free"
    if _share(examples, lambda e: _KIND_OPTION.match(e.target.strip())) >= 0.9:
        return "option_letter"
    targets = [e.target.strip().lower() for e in examples]
    for kind, words in _KIND_CHOICES:
        if sum(1 for t in targets if t in words) >= 0.9 * len(targets):
            return kind
    if _share(examples, lambda e: _KIND_NUMBER.match(e.target.strip())) >= 0.9:
        return "number"
    multi = _share(examples, lambda e: len(e.target.split()) >= 2)
    if multi >= 0.5 and _share(examples, _is_word_list) >= 0.9:
        return "word_list"
    return "free"


def auto_metric(examples: Sequence[Example]) -> Metric:
    """The metric that fits the targets: option letters (``(B)`` or ``B``) -> choice, yes/no ->
    yes_no, true/false or valid/invalid -> true_false, numbers -> numeric, sorted word lists ->
    word_list, anything else -> exact."""
    kind = detect_kind(examples)
    letters = kind == "free" and bool(examples)
    if letters and _share(examples, lambda e: _TARGET_LETTER.match(e.target.strip())) >= 0.9:
        return choice
    return _METRIC_OF_KIND[kind]


# --- custom metrics and judging ---------------------------------------------------------------

Verdict = bool | Judgement
CustomFunction = Callable[[str, str], Verdict | Awaitable[Verdict]]


@dataclass(frozen=True)
class CustomMetric:
    """A user function ``fn(output, target)`` returning a bool or a Judgement, sync or async."""

    fn: CustomFunction
    name: str

    def __call__(self, output: str, target: str) -> Judgement | Awaitable[Judgement]:
        result = self.fn(output, target)
        if inspect.isawaitable(result):
            return self._settle(result)
        return _as_judgement(result, self.name)

    async def _settle(self, pending: Awaitable[Verdict]) -> Judgement:
        return _as_judgement(await pending, self.name)


def custom_metric(fn: CustomFunction, *, name: str | None = None) -> CustomMetric:
    """Wrap ``fn`` as a :class:`Metric` (its name defaults to the function's)."""
    return CustomMetric(fn=fn, name=name or str(getattr(fn, "__name__", "custom")))


async def judge(metric: Metric | CustomFunction, output: str, target: str) -> Judgement:
    """``metric(output, target)`` as a Judgement, awaited if the metric is async; a plain bool
    result is accepted (``extracted`` is then None)."""
    result = metric(output, target)
    if inspect.isawaitable(result):
        result = await result
    return _as_judgement(result, getattr(metric, "name", getattr(metric, "__name__", "custom")))


def _as_judgement(result: object, name: str) -> Judgement:
    if isinstance(result, Judgement):
        return result
    if isinstance(result, bool):
        return Judgement(result, None)
    found = type(result).__name__
    raise ConfigError(f"metric {name!r}: expected a bool or a Judgement, found a {found}")
