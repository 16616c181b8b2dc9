"""Task data: examples loaded from files or built in memory, and their seeded splits.

File formats (``format="auto"`` picks one from the suffix):

- ``bbh`` (``.json``): BIG-Bench Hard, ``{"examples": [{"input": ..., "target": ...}, ...]}`` (a
  top-level list of records is accepted too);
- ``jsonl`` (``.jsonl``): one ``{"input": ..., "target": ...}`` object a line, blank lines skipped;
- ``gsm8k`` (``.jsonl`` whose first record has ``question`` and ``answer`` but no input field):
  ``{"question": ..., "answer": "... #### 1,234"}``; the gold is the number after ``####`` at the
  end of the answer, thousands separators removed;
- ``csv`` (``.csv``): a header row naming the columns, then one example per record (quoted fields
  may span lines).

The field (or column) names of ``bbh``, ``jsonl`` and ``csv`` are configurable. Inputs must be
strings; targets may be strings or JSON numbers (``42`` becomes ``"42"``). Both are stripped and
must not be empty. Every problem raises :class:`~pipeline.errors.ConfigError` with one message that
names the file and the line or key, what was expected and what was found.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pipeline.errors import ConfigError

Format = Literal["auto", "bbh", "jsonl", "csv", "gsm8k"]
FORMATS: tuple[str, ...] = get_args(Format)

_GSM8K_GOLD = re.compile(r"####\s*(\S+)\s*$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_SUFFIXES = {".json": "bbh", ".csv": "csv", ".jsonl": "jsonl"}


@dataclass(frozen=True, slots=True)
class Example:
    """One task example: the question put to the task model and the gold answer."""

    input: str
    target: str


@dataclass(frozen=True, slots=True)
class _Fields:
    input: str
    target: str

    def expected(self, what: str) -> str:
        return f'{what} "{self.input}" and "{self.target}"'


_Parser = Callable[[Path, str, _Fields], list[Example]]


def load_examples(
    path: str | os.PathLike[str],
    *,
    format: Format = "auto",
    input_field: str = "input",
    target_field: str = "target",
) -> tuple[Example, ...]:
    """The examples in ``path``, in file order (see the module docstring for the formats)."""
    file, fields = Path(path), _Fields(input_field, target_field)
    if format not in FORMATS:
        raise ConfigError(f"{file}: format: expected one of {', '.join(FORMATS)}, found {format!r}")
    text = _read(file)
    parser = _PARSERS[_resolve_format(file, text, format, fields)]
    examples = parser(file, text, fields)
    if not examples:
        raise ConfigError(f"{file}: expected at least one example, found no examples")
    return tuple(examples)


def examples_from(
    items: Iterable[tuple[str, str] | Mapping[str, str] | Example],
) -> tuple[Example, ...]:
    """Examples from in-memory items: ``Example``s, ``(input, target)`` pairs or mappings with
    ``"input"`` and ``"target"``, validated like file records (errors name the item index)."""
    examples = tuple(_item_example(item, f"examples: item {i}") for i, item in enumerate(items))
    if not examples:
        raise ConfigError("examples: expected at least one example, found no examples")
    return examples


# --- reading and format detection ---------------------------------------------------------------


def _read(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read task file ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        found = f"byte {data[exc.start]:#04x}"
        raise ConfigError(f"{file}: line {line}: expected UTF-8 text, found {found}") from exc


def _resolve_format(file: Path, text: str, format: Format, fields: _Fields) -> str:
    if format != "auto":
        return format
    suffix = file.suffix.lower()
    if suffix not in _SUFFIXES:
        found = repr(suffix) if suffix else "no suffix"
        expected = "a .json, .jsonl or .csv file (or an explicit format)"
        raise ConfigError(f"{file}: expected {expected}, found {found}")
    if suffix == ".jsonl" and _looks_like_gsm8k(text, fields):
        return "gsm8k"
    return _SUFFIXES[suffix]


def _looks_like_gsm8k(text: str, fields: _Fields) -> bool:
    first = next((line for _, line in _lines(text)), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    keys = record if isinstance(record, dict) else {}
    return "question" in keys and "answer" in keys and fields.input not in keys


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """The non-blank lines of ``text`` with their 1-based numbers."""
    return ((n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())


# --- JSON formats -----------------------------------------------------------------------------


def _parse_bbh(file: Path, text: str, fields: _Fields) -> list[Example]:
    data = _json(text, f"{file}", whole_file=True)
    where = f'{file}: "examples"'
    if isinstance(data, dict):
        if "examples" not in data:
            raise ConfigError(f'{file}: expected key "examples", found {_keys(data)}')
        data = data["examples"]
    else:
        where = f"{file}: top level"
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list, found {_kind(data)}")
    return [_json_record(item, f"{where}[{i}]", fields) for i, item in enumerate(data)]


def _parse_jsonl(file: Path, text: str, fields: _Fields) -> list[Example]:
    return [
        _json_record(_json(line, f"{file}: line {n}"), f"{file}: line {n}", fields)
        for n, line in _lines(text)
    ]


def _parse_gsm8k(file: Path, text: str, fields: _Fields) -> list[Example]:
    del fields  # GSM8K's field names are fixed
    return [
        _gsm8k_record(_json(line, f"{file}: line {n}"), f"{file}: line {n}")
        for n, line in _lines(text)
    ]


def _json(text: str, where: str, *, whole_file: bool = False) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        place = f"line {exc.lineno}: " if whole_file else ""
        raise ConfigError(f"{where}: {place}invalid JSON ({exc.msg})") from exc


def _json_record(record: object, where: str, fields: _Fields) -> Example:
    if not isinstance(record, dict):
        expected = fields.expected("a JSON object with")
        raise ConfigError(f"{where}: expected {expected}, found {_kind(record)}")
    return _mapping_example(record, where, fields)


def _mapping_example(record: Mapping[str, object], where: str, fields: _Fields) -> Example:
    if fields.input not in record or fields.target not in record:
        raise ConfigError(f"{where}: expected {fields.expected('keys')}, found {_keys(record)}")
    question = _input(record[fields.input], f'{where}: "{fields.input}"')
    return Example(question, _target(record[fields.target], f'{where}: "{fields.target}"'))


def _gsm8k_record(record: object, where: str) -> Example:
    if not isinstance(record, dict) or "question" not in record or "answer" not in record:
        found = _keys(record) if isinstance(record, dict) else _kind(record)
        expected = 'a JSON object with "question" and "answer"'
        raise ConfigError(f"{where}: expected {expected}, found {found}")
    question = _input(record["question"], f'{where}: "question"')
    return Example(question, _gsm8k_gold(_input(record["answer"], f'{where}: "answer"'), where))


def _gsm8k_gold(answer: str, where: str) -> str:
    match = _GSM8K_GOLD.search(answer)
    gold = match.group(1).replace(",", "") if match else ""
    if not _NUMBER.match(gold):
        tail = answer[-40:].replace("\n", " ")
        raise ConfigError(f'{where}: "answer": expected "#### <number>" at the end, found {tail!r}')
    return gold


# --- CSV --------------------------------------------------------------------------------------


def _parse_csv(file: Path, text: str, fields: _Fields) -> list[Example]:
    rows = _csv_rows(file, text)
    if not rows:
        raise ConfigError(f"{file}: expected a header row, found an empty file")
    (header_line, header), body = rows[0], rows[1:]
    header = [name.strip() for name in header]
    if fields.input not in header or fields.target not in header:
        found = ", ".join(map(repr, header))
        expected = fields.expected("columns")
        raise ConfigError(f"{file}: line {header_line}: expected {expected}, found columns {found}")
    columns = (header.index(fields.input), header.index(fields.target))
    return [_csv_example(row, f"{file}: line {n}", header, columns) for n, row in body]


def _csv_rows(file: Path, text: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ConfigError(f"{file}: line {reader.line_num}: expected CSV, found {exc}") from exc
    return rows


def _csv_example(
    row: list[str], where: str, header: list[str], columns: tuple[int, int]
) -> Example:
    if len(row) != len(header):
        expected = f"{len(header)} fields as in the header"
        raise ConfigError(f"{where}: expected {expected}, found {len(row)}")
    (i, t), (input_name, target_name) = columns, (header[columns[0]], header[columns[1]])
    question = _input(row[i], f'{where}: column "{input_name}"')
    return Example(question, _target(row[t], f'{where}: column "{target_name}"'))


# --- values -----------------------------------------------------------------------------------


def _item_example(item: object, where: str) -> Example:
    fields = _Fields("input", "target")
    if isinstance(item, Example):
        return Example(
            _input(item.input, f"{where}: input"), _target(item.target, f"{where}: target")
        )
    if isinstance(item, Mapping):
        return _mapping_example(item, where, fields)
    if isinstance(item, tuple | list) and len(item) == 2:
        return Example(_input(item[0], f"{where}: input"), _target(item[1], f"{where}: target"))
    expected = "an Example, an (input, target) pair or a mapping with " + fields.expected("keys")
    raise ConfigError(f"{where}: expected {expected}, found {_kind(item)}")


def _input(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, found {_kind(value)}")
    return _non_empty(value, where)


def _target(value: object, where: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string or a number, found {_kind(value)}")
    return _non_empty(value, where)


def _non_empty(value: str, where: str) -> str:
    text = value.strip()
    if not text:
        raise ConfigError(f"{where}: expected a non-empty string, found an empty one")
    return text


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else repr(value)
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")


def _keys(record: Mapping[str, object]) -> str:
    keys = list(record)
    shown = ", ".join(map(repr, keys[:8])) + (", ..." if len(keys) > 8 else "")
    return shown or "no keys"


_PARSERS: Mapping[str, _Parser] = {
    "bbh": _parse_bbh,
    "jsonl": _parse_jsonl,
    "gsm8k": _parse_gsm8k,
    "csv": _parse_csv,
}


# --- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """Disjoint parts of a task's examples: ``dev`` scores candidates during the run, ``test`` is
    scored once at the end, ``exemplars`` are the fixed examples shown in meta-prompts."""

    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    exemplars: tuple[Example, ...]


def split_examples(
    examples: Sequence[Example],
    *,
    seed: int,
    dev_size: int = 48,
    test_size: int = 144,
    exemplars: int = 3,
) -> Splits:
    """Split ``examples`` by ``seed``; the same seed and examples always give the same splits.

    The examples are shuffled with ``random.Random(seed)``; the first ``exemplars`` become the
    exemplars, the next ``dev_size`` the dev split, the next ``test_size`` the test split; any
    further examples are unused. With too few examples the exemplars come first, then dev keeps
    its size as long as at least one example is left for test (when ``test_size > 0``), and test
    gets what remains. ``ConfigError`` when ``dev_size < 1``, a size is negative, or there are
    fewer than ``exemplars + 2`` examples (``exemplars + 1`` when ``test_size == 0``).
    """
    _check_sizes(dev_size=dev_size, test_size=test_size, exemplars=exemplars)
    needed = exemplars + 1 + (1 if test_size else 0)
    if len(examples) < needed:
        expected = f"at least {needed} examples ({exemplars} exemplars, 1 dev" + (
            ", 1 test)" if test_size else ")"
        )
        raise ConfigError(f"examples: expected {expected}, found {len(examples)}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    rest = len(shuffled) - exemplars
    dev = min(dev_size, rest - (1 if test_size else 0))
    test = min(test_size, rest - dev)
    cut = (exemplars, exemplars + dev, exemplars + dev + test)
    parts = shuffled[: cut[0]], shuffled[cut[0] : cut[1]], shuffled[cut[1] : cut[2]]
    return Splits(dev=tuple(parts[1]), test=tuple(parts[2]), exemplars=tuple(parts[0]))


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        least = 1 if name == "dev_size" else 0
        if value < least:
            raise ConfigError(f"{name}: expected an integer >= {least}, found {value!r}")
