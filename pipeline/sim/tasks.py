"""Tasks the simulator knows the answers to: built-in synthetic ones and ones loaded from files.

File formats (the task name is the file stem):

- ``*.json``: BIG-Bench Hard, ``{"examples": [{"input": ..., "target": ...}, ...]}``;
- ``*.jsonl`` with ``{"input": ..., "target": ...}`` per line;
- ``*.jsonl`` with GSM8K's ``{"question": ..., "answer": "... #### 42"}`` per line: the gold is the
  number after ``####`` with thousands separators removed.

Errors raise :class:`TaskFileError` (a ``ValueError``) naming the file, the line or key, what was
expected and what was found.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pipeline.sim.synthetic import GENERATORS, distinct

AnswerKind = Literal[
    "number", "option_letter", "yes_no", "true_false", "valid_invalid", "word_list", "free"
]

BUILTIN_SEED = 20240227
BUILTIN_SIZE = 250

_OPTION = re.compile(r"^\([A-Z]\)$")
_NUMBER = re.compile(r"^-?\d[\d,]*(?:\.\d+)?$")
_GSM8K_GOLD = re.compile(r"####\s*(\S+)\s*$")
_CHOICES: tuple[tuple[AnswerKind, frozenset[str]], ...] = (
    ("yes_no", frozenset({"yes", "no"})),
    ("true_false", frozenset({"true", "false"})),
    ("valid_invalid", frozenset({"valid", "invalid"})),
)


class TaskFileError(ValueError):
    """A task file could not be read: the message names the file, the place and the problem."""


@dataclass(frozen=True, slots=True)
class Example:
    input: str
    target: str


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    examples: tuple[Example, ...]
    kind: AnswerKind

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError(f"task {self.name!r} has no examples")


def _share(examples: Sequence[Example], test: Callable[[Example], object]) -> float:
    return sum(1 for e in examples if test(e)) / len(examples)


def _choice_share(examples: Sequence[Example], choices: frozenset[str]) -> float:
    return sum(1 for e in examples if e.target.strip().lower() in choices) / len(examples)


def _is_word_list(example: Example) -> bool:
    words = example.target.split()
    haystack = example.input.lower()
    return words == sorted(words) and all(w.lower() in haystack for w in words)


def detect_kind(examples: Sequence[Example]) -> AnswerKind:
    """The answer kind that at least 90 % of the targets have (``"free"`` if none)."""
    if not examples:
        return "free"
    if _share(examples, lambda e: _OPTION.match(e.target.strip())) >= 0.9:
        return "option_letter"
    for kind, choices in _CHOICES:
        if _choice_share(examples, choices) >= 0.9:
            return kind
    if _share(examples, lambda e: _NUMBER.match(e.target.strip())) >= 0.9:
        return "number"
    multi = _share(examples, lambda e: len(e.target.split()) >= 2)
    if multi >= 0.5 and _share(examples, _is_word_list) >= 0.9:
        return "word_list"
    return "free"


def make_task(name: str, examples: Sequence[Example]) -> Task:
    """A task whose answer kind is detected from its targets."""
    return Task(name=name, examples=tuple(examples), kind=detect_kind(examples))


@lru_cache(maxsize=1)
def builtin_tasks() -> tuple[Task, ...]:
    """The synthetic tasks: arithmetic, word_sorting, boolean_expressions, object_counting."""
    tasks = []
    for offset, (name, make) in enumerate(GENERATORS):
        rng = random.Random(BUILTIN_SEED + offset)
        pairs = distinct(make, rng, BUILTIN_SIZE)
        tasks.append(make_task(name, [Example(input=q, target=t) for q, t in pairs]))
    return tuple(tasks)


# --- loaders ----------------------------------------------------------------------------------


def load_task_file(path: str | os.PathLike[str]) -> Task:
    """Load a BBH ``.json``, an input/target ``.jsonl`` or a GSM8K ``.jsonl`` task file."""
    file = Path(path)
    text = _read(file)
    suffix = file.suffix.lower()
    if suffix == ".json":
        examples = _parse_json(file, text)
    elif suffix == ".jsonl":
        examples = _parse_jsonl(file, text)
    else:
        raise TaskFileError(f"{file}: expected a .json (BBH) or .jsonl file, found {suffix!r}")
    if not examples:
        raise TaskFileError(f"{file}: expected at least one example, found none")
    return make_task(file.stem, examples)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFileError(f"{file}: cannot read task file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise TaskFileError(f"{file}: expected UTF-8 text ({exc.reason})") from exc


def _parse_json(file: Path, text: str) -> list[Example]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{file}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if isinstance(data, dict):
        if "examples" not in data:
            found = ", ".join(map(repr, list(data)[:5])) or "no keys"
            raise TaskFileError(f'{file}: expected key "examples", found {found}')
        data = data["examples"]
    if not isinstance(data, list):
        raise TaskFileError(f'{file}: key "examples": expected a list, found {_kind(data)}')
    return [_input_target(e, f'{file}: "examples"[{i}]') for i, e in enumerate(data)]


def _parse_jsonl(file: Path, text: str) -> list[Example]:
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            examples.append(_jsonl_example(line, f"{file}: line {number}"))
    return examples


def _jsonl_example(line: str, where: str) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{where}: invalid JSON ({exc.msg})") from exc
    if isinstance(record, dict) and "question" in record and "target" not in record:
        return _gsm8k(record, where)
    return _input_target(record, where)


def _input_target(record: object, where: str) -> Example:
    if not isinstance(record, dict):
        found = _kind(record)
        raise TaskFileError(f"{where}: expected an object with input and target, found {found}")
    missing = [k for k in ("input", "target") if k not in record]
    if missing:
        found = ", ".join(map(repr, record)) or "no keys"
        raise TaskFileError(f'{where}: expected keys "input" and "target", found {found}')
    question = _text(record["input"], f'{where}: "input"')
    return Example(input=question, target=_text(record["target"], f'{where}: "target"'))


def _gsm8k(record: dict[str, object], where: str) -> Example:
    if "answer" not in record:
        raise TaskFileError(f'{where}: expected key "answer" next to "question", found none')
    question = _text(record["question"], f'{where}: "question"')
    answer = _text(record["answer"], f'{where}: "answer"')
    match = _GSM8K_GOLD.search(answer)
    gold = match.group(1).replace(",", "") if match else ""
    if not _NUMBER.match(gold):
        tail = answer[-40:].replace("\n", " ")
        expected = '"answer": expected "#### <number>" at the end'
        raise TaskFileError(f"{where}: {expected}, found {tail!r}")
    return Example(input=question, target=gold)


def _text(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TaskFileError(f"{where}: expected a string, found {_kind(value)}")
    text = str(value).strip()
    if not text:
        raise TaskFileError(f"{where}: expected a non-empty string, found an empty one")
    return text


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")
