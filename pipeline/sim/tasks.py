"""Tasks the simulator knows the answers to: built-in synthetic ones and ones loaded from files.

Task files are read by :func:`pipeline.tasks._data.load_examples` (the task name is the file stem):

- ``*.json``: BIG-Bench Hard, ``{"examples": [{"input": ..., "target": ...}, ...]}``;
- ``*.jsonl`` with ``{"input": ..., "target": ...}`` per line;
- ``*.jsonl`` with GSM8K's ``{"question": ..., "answer": "... #### 42"}`` per line: the gold is the
  number after ``####`` with thousands separators removed.

Errors raise :class:`TaskFileError`, a :class:`~pipeline.errors.ConfigError` that is also a
``ValueError``, naming the file, the line or key, what was expected and what was found.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.sim.synthetic import GENERATORS, distinct
from pipeline.tasks._data import Example, load_examples
from pipeline.tasks._metrics import AnswerKind, detect_kind

__all__ = [
    "BUILTIN_SEED",
    "BUILTIN_SIZE",
    "AnswerKind",
    "Example",
    "Task",
    "TaskFileError",
    "builtin_tasks",
    "detect_kind",
    "load_task_file",
    "make_task",
]

BUILTIN_SEED = 20240227
BUILTIN_SIZE = 250

_TASK_SUFFIXES = (".json", ".jsonl")


class TaskFileError(ConfigError, ValueError):
    """A task file could not be read: the message names the file, the place and the problem."""


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    examples: tuple[Example, ...]
    kind: AnswerKind

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError(f"task {self.name!r} has no examples")


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


def load_task_file(path: str | os.PathLike[str]) -> Task:
    """Load a BBH ``.json``, an input/target ``.jsonl`` or a GSM8K ``.jsonl`` task file."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in _TASK_SUFFIXES:
        raise TaskFileError(f"{file}: expected a .json (BBH) or .jsonl file, found {suffix!r}")
    try:
        examples = load_examples(file)
    except ConfigError as exc:
        raise TaskFileError(str(exc)) from exc
    return make_task(file.stem, examples)
