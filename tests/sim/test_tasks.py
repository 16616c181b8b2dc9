"""Built-in synthetic tasks and the task-file loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.sim.synthetic import CATEGORIES, evaluate_boolean
from pipeline.sim.tasks import (
    Example,
    Task,
    TaskFileError,
    builtin_tasks,
    detect_kind,
    load_task_file,
)

NUMBER_WORDS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def builtin(name: str) -> Task:
    return next(t for t in builtin_tasks() if t.name == name)


def count_objects(question: str) -> int:
    listing, asked = re.fullmatch(r"I have (.*)\. How many (.*) do I have\?", question).groups()  # type: ignore[union-attr]
    nouns = {n for pair in CATEGORIES[asked] for n in pair}
    items = re.split(r", and |, | and ", listing)
    counts = [item.split(" ", 1) for item in items]
    return sum(NUMBER_WORDS[n] for n, noun in counts if noun in nouns)


def test_builtin_tasks_have_the_four_names_and_kinds() -> None:
    kinds = {t.name: t.kind for t in builtin_tasks()}
    assert kinds == {
        "arithmetic": "number",
        "word_sorting": "word_list",
        "boolean_expressions": "true_false",
        "object_counting": "number",
    }


def test_builtin_tasks_have_at_least_200_distinct_inputs_across_all_tasks() -> None:
    inputs = [e.input for t in builtin_tasks() for e in t.examples]
    assert all(len(t.examples) >= 200 for t in builtin_tasks())
    assert len(set(inputs)) == len(inputs)


def test_builtin_tasks_are_deterministic() -> None:
    builtin_tasks.cache_clear()
    first = builtin_tasks()
    builtin_tasks.cache_clear()
    assert builtin_tasks() == first


def test_arithmetic_targets_are_the_values_of_the_expressions() -> None:
    for example in builtin("arithmetic").examples[:50]:
        assert example.input.endswith(" =")
        assert str(eval(example.input[:-2])) == example.target


def test_word_sorting_targets_are_the_sorted_words() -> None:
    for example in builtin("word_sorting").examples[:50]:
        words = example.input.split("List: ", 1)[1].split()
        assert example.target == " ".join(sorted(words))


def test_boolean_targets_are_the_python_values() -> None:
    for example in builtin("boolean_expressions").examples[:50]:
        assert example.input.endswith(" is")
        assert str(eval(example.input[:-3])) == example.target


def test_boolean_evaluator_follows_python_precedence() -> None:
    assert evaluate_boolean("not True or False and not ( False or True )") is False
    assert evaluate_boolean("True or False and False") is True
    assert evaluate_boolean("not ( True and False ) and not not True") is True


def test_object_counting_targets_count_only_the_asked_category() -> None:
    for example in builtin("object_counting").examples[:50]:
        assert str(count_objects(example.input)) == example.target


@pytest.mark.parametrize(
    ("targets", "kind"),
    [
        (["(A)", "(C)", "(B)"], "option_letter"),
        (["Yes", "No", "no"], "yes_no"),
        (["True", "False"], "true_false"),
        (["valid", "invalid"], "valid_invalid"),
        (["42", "-3", "1,200", "2.5"], "number"),
        (["hello world", "foo"], "free"),
    ],
)
def test_answer_kind_is_detected_from_targets(targets: list[str], kind: str) -> None:
    assert detect_kind([Example(input=f"q{i}", target=t) for i, t in enumerate(targets)]) == kind


def test_word_list_kind_needs_sorted_words_from_the_input() -> None:
    examples = [Example("Sort: pear apple fig", "apple fig pear"), Example("Sort: b a", "a b")]
    assert detect_kind(examples) == "word_list"


def test_option_kind_tolerates_a_rare_odd_target() -> None:
    targets = ["(A)"] * 19 + ["Monsters, Inc"]
    assert detect_kind([Example(f"q{i}", t) for i, t in enumerate(targets)]) == "option_letter"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_a_bbh_json_file(tmp_path: Path) -> None:
    data = {"canary": "x", "examples": [{"input": "Q1?\nOptions:\n(A) a\n(B) b", "target": "(B)"}]}
    task = load_task_file(write(tmp_path / "date_thing.json", json.dumps(data)))
    assert task.name == "date_thing"
    assert task.examples == (Example("Q1?\nOptions:\n(A) a\n(B) b", "(B)"),)
    assert task.kind == "option_letter"


def test_loads_an_input_target_jsonl_file(tmp_path: Path) -> None:
    rows = [{"input": "Is it? ", "target": "Yes"}, {"input": "b", "target": "No"}]
    lines = [json.dumps(rows[0]), "", json.dumps(rows[1])]
    task = load_task_file(write(tmp_path / "yn.jsonl", "\n".join(lines)))
    assert task.examples == (Example("Is it?", "Yes"), Example("b", "No"))
    assert task.kind == "yes_no"


def test_loads_gsm8k_with_the_number_after_the_marks(tmp_path: Path) -> None:
    record = {"question": "How many?", "answer": "Some work <<2*3=6>>\n#### 1,234"}
    task = load_task_file(write(tmp_path / "gsm.jsonl", json.dumps(record)))
    assert task.name == "gsm"
    assert task.examples == (Example("How many?", "1234"),)
    assert task.kind == "number"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.jsonl", '{"input": "a", "target": "b"}\n{oops', r"bad\.jsonl: line 2: invalid JSON"),
        ("keys.jsonl", '{"input": "a", "label": "b"}', r'line 1: expected keys "input" and'),
        ("gsm.jsonl", '{"question": "q", "answer": "no"}', r'line 1: "answer": expected "####'),
        ("noex.json", '{"data": []}', r'noex\.json: expected key "examples", found \'data\''),
        ("list.json", '{"examples": {"a": 1}}', r'"examples": expected a list, found an object'),
        ("item.json", '{"examples": [{"input": "a", "target": "b"}, 3]}', r'"examples"\[1\]: exp'),
        ("empty.jsonl", "\n\n", r"empty\.jsonl: expected at least one example"),
        ("type.jsonl", '{"input": ["a"], "target": "b"}', r'"input": expected a string, found a'),
        ("task.csv", "input,target", r"task\.csv: expected a \.json \(BBH\) or \.jsonl file"),
    ],
)
def test_bad_task_files_raise_value_errors_that_say_where(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        load_task_file(write(tmp_path / name, text))


def test_missing_file_is_a_task_file_error(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="cannot read task file"):
        load_task_file(tmp_path / "nope.json")
