"""Answer extraction and metrics: did a task model's free-text output get the gold target?

A model's reply ends with its answer in one of many styles: ``So the answer is (B).`` (the
simulator), ``Answer: 42``, ``**Yes**``, ``\\boxed{7}``, ``the answer is: True``, or in prose
(``Therefore, the statement is false.``). Where an output states its answer is read in
:mod:`pipeline.tasks._extract`: the *answer part* is the content of its last ``\\boxed{...}`` if
any, else the first non-empty line after its last marker (``answer is``, ``answer:``,
``final answer``, ``####``); the letter, label and number metrics then look at the conclusion
(``therefore``, ``thus``, ...) and the last occurrence, as documented on each. A metric that reads
no answer says so (``Judgement.extracted is None``); runs count those outputs per job.

Every metric is called as ``metric(output, target)`` and returns a :class:`Judgement`; custom ones
may be async or return a plain ``bool`` (see :func:`custom_metric` and :func:`judge`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from pipeline.errors import ConfigError
from pipeline.tasks._data import Example
from pipeline.tasks._extract import (
    LETTERS,
    NUMBERS,
    final_answer,
    label_reader,
    normalize_answer,
    parse_number,
    read_answer,
)

AnswerKind = Literal[
    "number", "option_letter", "yes_no", "true_false", "valid_invalid", "word_list", "free"
]

_TOLERANCE = Decimal("1e-6")
_TARGET_LETTER = re.compile(r"^\(?([A-Z])\)?$")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_TRUE_FALSE = re.compile(r"\b(true|false|valid|invalid)\b", re.IGNORECASE)
_WORD_SPLIT = re.compile(r"[\s,;]+")
_DECORATION = "*_`\"'\u201c\u201d\u2018\u2019"
_SENTENCE_MARKS = ".!?,;:"


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


def _words(text: str) -> tuple[str, ...]:
    words = (normalize_answer(w).replace(" ", "") for w in _WORD_SPLIT.split(text))
    return tuple(w for w in words if w)


def _format_number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _is_symbolic(target: str) -> bool:
    """A target made of punctuation and symbols only (``> )``, ``] ) }``): they are the answer."""
    return bool(target.strip()) and not any(c.isalnum() for c in target)


def _symbols(answer: str, target: str) -> str | None:
    """The first run of words without letters or digits in ``answer``, without whitespace,
    markdown or quotes (unless the target has them) or the sentence's closing punctuation:
    ``So the answer is `> )`.`` -> ``>)``."""
    decoration = "".join(c for c in _DECORATION if c not in target)
    run: list[str] = []
    for word in answer.split():
        if any(c.isalnum() for c in word):
            if run:
                break
            continue
        run.append(word)
    text = "".join(c for c in "".join(run) if c not in decoration)
    if not target.rstrip().endswith(tuple(_SENTENCE_MARKS)):
        text = text.rstrip(_SENTENCE_MARKS)
    return text or None


# --- built-in metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactMatch:
    """The normalized final answer (answer part, else last line) equals the normalized target.

    A target of punctuation and symbols only (BBH ``dyck_languages``: ``> )``) is compared
    symbol for symbol with the answer's first run of such words, whitespace, markdown, quotes
    and a closing full stop aside: ``So the answer is > ).`` is right and ``> ]`` is wrong."""

    name: str = "exact"

    def __call__(self, output: str, target: str) -> Judgement:
        answer = final_answer(output)
        if _is_symbolic(target):
            symbols = _symbols(answer, target)
            return Judgement(symbols is not None and symbols == _symbols(target, target), symbols)
        extracted = normalize_answer(answer) or None
        return Judgement(extracted is not None and extracted == normalize_answer(target), extracted)


@dataclass(frozen=True)
class MultipleChoice:
    """Multiple choice. A letter target (``(B)``/``B``) is compared with the option letter read
    where the output states its answer (see :mod:`pipeline.tasks._extract`): after the marker
    the first ``(X)``, ``X)``, ``option X`` or leading ``X``; in a conclusion the first marked
    one; else a lone letter on the last line or the last marked one. A text target must occur
    in the normalized final answer."""

    name: str = "choice"

    def __call__(self, output: str, target: str) -> Judgement:
        gold = _TARGET_LETTER.match(target.strip())
        if gold is None:
            answer = normalize_answer(final_answer(output))
            return Judgement(_contains(answer, target).correct, answer or None)
        letter = read_answer(output, LETTERS)
        extracted = None if letter is None else f"({letter})"
        return Judgement(letter == gold.group(1), extracted)


@dataclass(frozen=True)
class Numeric:
    """The number where the output states its answer (the last of the first clause after the
    marker or in the conclusion, else the last in the output) equals the target's number
    within 1e-6; commas, currency signs, units, percent signs and ``\\boxed{}`` are handled."""

    name: str = "numeric"

    def __call__(self, output: str, target: str) -> Judgement:
        read = read_answer(output, NUMBERS)
        gold = parse_number(final_answer(target))
        if read is None:
            return Judgement(False, None)
        value = Decimal(read)
        return Judgement(
            gold is not None and abs(value - gold) <= _TOLERANCE, _format_number(value)
        )


@dataclass(frozen=True)
class Label:
    """One of a closed set of words (yes/no; true/false/valid/invalid) where the output states
    its answer: the first after the marker, else the first in the conclusion, else the last in
    the output; compared case-insensitively."""

    name: str
    pattern: re.Pattern[str]

    def __call__(self, output: str, target: str) -> Judgement:
        extracted = read_answer(output, label_reader(self.pattern))
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


def reads_answers(metric: object) -> bool:
    """Whether ``metric`` is a built-in one, whose ``extracted is None`` means it read no answer
    in the output (custom metrics may return a bare bool, which says nothing about it)."""
    return isinstance(metric, ExactMatch | MultipleChoice | Numeric | Label | WordList | Contains)


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
