"""Loading task examples from files and memory, and splitting them by seed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.tasks._data import Example, Splits, examples_from, load_examples, split_examples


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(*records: object) -> str:
    return "\n".join(json.dumps(r) for r in records) + "\n"


def numbered(n: int) -> tuple[Example, ...]:
    return tuple(Example(f"q{i}", f"a{i}") for i in range(n))


# --- formats ----------------------------------------------------------------------------------


def test_loads_bbh_json(tmp_path: Path) -> None:
    data = {"canary": "x", "examples": [{"input": "Q?\n(A) a\n(B) b", "target": "(B)"}]}
    examples = load_examples(write(tmp_path / "t.json", json.dumps(data)))
    assert examples == (Example("Q?\n(A) a\n(B) b", "(B)"),)


def test_loads_a_top_level_json_list(tmp_path: Path) -> None:
    data = [{"input": "a", "target": "b"}, {"input": "c", "target": "d"}]
    assert load_examples(write(tmp_path / "t.json", json.dumps(data))) == (
        Example("a", "b"),
        Example("c", "d"),
    )


def test_loads_jsonl_skipping_blank_lines_and_stripping(tmp_path: Path) -> None:
    text = '{"input": " Is it? ", "target": "Yes"}\n\n  \n{"input": "b", "target": "No"}\n'
    examples = load_examples(write(tmp_path / "t.jsonl", text))
    assert examples == (Example("Is it?", "Yes"), Example("b", "No"))


def test_jsonl_field_names_are_configurable(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", jsonl({"prompt": "2+2", "label": "4", "id": 1}))
    examples = load_examples(path, input_field="prompt", target_field="label")
    assert examples == (Example("2+2", "4"),)


def test_numeric_targets_become_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.jsonl", jsonl({"input": "a", "target": 42}, {"input": "b", "target": 2.5})
    )
    assert [e.target for e in load_examples(path)] == ["42", "2.5"]


def test_loads_csv_with_quoted_multiline_fields(tmp_path: Path) -> None:
    text = 'id,input,target\n1,"Line one\nline two, with comma","say ""hi"""\n2,plain,x\n'
    examples = load_examples(write(tmp_path / "t.csv", text))
    assert examples == (
        Example("Line one\nline two, with comma", 'say "hi"'),
        Example("plain", "x"),
    )


def test_csv_columns_are_configurable_and_a_bom_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "\ufeffquestion,answer\r\nWhy?,Because\r\n")
    examples = load_examples(path, input_field="question", target_field="answer")
    assert examples == (Example("Why?", "Because"),)


def test_loads_gsm8k_gold_after_the_marks_without_commas(tmp_path: Path) -> None:
    records = [
        {"question": "How many?", "answer": "Work <<2*3=6>>6\n#### 1,234"},
        {"question": "Owed?", "answer": "She owes it.\n#### -15"},
    ]
    examples = load_examples(write(tmp_path / "gsm.jsonl", jsonl(*records)))
    assert examples == (Example("How many?", "1234"), Example("Owed?", "-15"))


def test_jsonl_with_an_input_field_is_not_gsm8k(tmp_path: Path) -> None:
    record = {"input": "q", "target": "t", "question": "x", "answer": "y"}
    assert load_examples(write(tmp_path / "t.jsonl", jsonl(record))) == (Example("q", "t"),)


def test_an_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", jsonl({"question": "q", "answer": "#### 7"}))
    assert load_examples(path, format="gsm8k") == (Example("q", "7"),)


# --- malformed files --------------------------------------------------------------------------

BAD_FILES: list[tuple[str, str | bytes, Mapping[str, Any], str]] = [
    ("t.jsonl", b'{"input": "a", "target": "b"}\n{"input": "\xff"}', {}, "line 2: expected UTF-8"),
    ("t.json", '{"examples": [', {}, "line 1: invalid JSON"),
    ("t.jsonl", '{"input": "a", "target": "b"}\n{oops', {}, "line 2: invalid JSON"),
    (
        "t.jsonl",
        '["a", "b"]',
        {},
        'line 1: expected a JSON object with "input" and "target", found a list',
    ),
    (
        "t.jsonl",
        jsonl({"q": "a", "target": "b"}),
        {},
        "line 1: expected keys \"input\" and \"target\", found 'q', 'target'",
    ),
    (
        "t.jsonl",
        jsonl({"input": 3, "target": "b"}),
        {},
        'line 1: "input": expected a string, found a number',
    ),
    (
        "t.jsonl",
        jsonl({"input": "a", "target": True}),
        {},
        '"target": expected a string or a number, found a boolean',
    ),
    (
        "t.jsonl",
        jsonl({"input": "a", "target": "b"}, {"input": "a", "target": "  "}),
        {},
        'line 2: "target": expected a non-empty string',
    ),
    (
        "t.jsonl",
        '{"input": "a", "target": NaN}',
        {},
        '"target": expected a string or a number, found nan',
    ),
    ("t.json", '{"data": []}', {}, "expected key \"examples\", found 'data'"),
    ("t.json", '{"examples": {"a": 1}}', {}, '"examples": expected a list, found an object'),
    (
        "t.json",
        '{"examples": [{"input": "a", "target": "b"}, {"input": "c"}]}',
        {},
        '"examples"\\[1\\]: expected keys',
    ),
    ("t.jsonl", "\n\n", {}, "expected at least one example, found no examples"),
    (
        "g.jsonl",
        jsonl({"question": "q", "answer": "about 7"}),
        {},
        'line 1: "answer": expected "#### <number>" at the end',
    ),
    (
        "g.jsonl",
        jsonl({"question": "q", "answer": "#### 7"}, {"question": "q"}),
        {},
        'line 2: expected a JSON object with "question" and "answer"',
    ),
    (
        "t.csv",
        "q,a\nx,y\n",
        {},
        "line 1: expected columns \"input\" and \"target\", found columns 'q', 'a'",
    ),
    (
        "t.csv",
        'input,target\n"multi\nline",ok\nx,y,z\n',
        {},
        "line 4: expected 2 fields as in the header, found 3",
    ),
    ("t.csv", 'input,target\nx,"y"z\n', {}, "line 2: expected CSV"),
    ("t.csv", "input,target\nx,\n", {}, 'line 2: column "target": expected a non-empty string'),
    ("t.csv", "input,target\n", {}, "expected at least one example, found no examples"),
    ("t.csv", "", {}, "expected a header row, found an empty file"),
    ("t.txt", "input,target\n", {}, "expected a .json, .jsonl or .csv file"),
    (
        "t.json",
        "[]",
        {"format": "yaml"},
        "format: expected one of auto, bbh, jsonl, csv, gsm8k, found 'yaml'",
    ),
]


@pytest.mark.parametrize(("name", "content", "options", "message"), BAD_FILES)
def test_malformed_files_raise_config_errors_naming_file_and_place(
    tmp_path: Path, name: str, content: str | bytes, options: Mapping[str, Any], message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*{message}"):
        load_examples(path, **options)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: cannot read task file"):
        load_examples(path)


# --- in memory --------------------------------------------------------------------------------


def test_examples_from_accepts_pairs_mappings_and_examples() -> None:
    items: list[tuple[str, str] | Mapping[str, str] | Example]
    items = [("a", "b"), {"input": " c ", "target": "d"}, Example("e", "f")]
    assert examples_from(items) == (Example("a", "b"), Example("c", "d"), Example("e", "f"))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("a", "b"), ("c", "")], "item 1: target: expected a non-empty string"),
        ([{"input": "a"}], 'item 0: expected keys "input" and "target", found \'input\''),
        ([("a", "b", "c")], "item 0: expected an Example, an \\(input, target\\) pair"),
        ([Example(3, "x")], "item 0: input: expected a string, found a number"),  # type: ignore[arg-type]
        ([], "expected at least one example, found no examples"),
    ],
)
def test_examples_from_rejects_bad_items_naming_the_index(items: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        examples_from(items)


# --- splits -----------------------------------------------------------------------------------


def test_splits_have_the_requested_sizes_and_are_disjoint() -> None:
    splits = split_examples(numbered(250), seed=1)
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (3, 48, 144)
    seen = [*splits.exemplars, *splits.dev, *splits.test]
    assert len(set(seen)) == len(seen)


def test_splits_are_deterministic_for_a_seed_and_vary_across_seeds() -> None:
    examples = numbered(100)
    first = split_examples(examples, seed=7, dev_size=20, test_size=30)
    assert split_examples(examples, seed=7, dev_size=20, test_size=30) == first
    assert split_examples(examples, seed=8, dev_size=20, test_size=30) != first


def test_too_few_examples_keep_dev_and_give_test_the_rest() -> None:
    splits = split_examples(numbered(60), seed=0)
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (3, 48, 9)


def test_very_few_examples_leave_one_for_test() -> None:
    splits = split_examples(numbered(10), seed=0)
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (3, 6, 1)


def test_test_size_zero_means_no_test_split() -> None:
    splits = split_examples(numbered(4), seed=0, test_size=0)
    assert splits.test == ()
    assert (len(splits.exemplars), len(splits.dev)) == (3, 1)


def test_fewer_than_exemplars_plus_two_examples_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"expected at least 5 examples \(3 exemplars, 1 dev, 1 test\), found 4"
    ):
        split_examples(numbered(4), seed=0)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"dev_size": 0}, "dev_size: expected an integer >= 1, found 0"),
        ({"test_size": -1}, "test_size: expected an integer >= 0, found -1"),
        ({"exemplars": -2}, "exemplars: expected an integer >= 0, found -2"),
    ],
)
def test_bad_split_sizes_are_config_errors(sizes: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_examples(numbered(50), seed=0, **sizes)


def test_splits_is_a_frozen_value() -> None:
    splits = split_examples(numbered(10), seed=0, dev_size=2, test_size=2, exemplars=1)
    assert isinstance(splits, Splits)
    with pytest.raises(AttributeError):
        splits.dev = ()  # type: ignore[misc]
