"""The config file's declared tables: ``gpo config schema``, and what the tables must agree with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from pipeline.config._schema import Knobs, MetricName, Preset
from pipeline.tasks._metrics import BUILTIN_METRICS
from stages.strategy import PRESETS, knobs

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))
TABLES = {"run", "simulator", "endpoints", "optimizer", "jobs"}
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}
# The keywords problems() checks or may ignore; the schema must use no other.
KEYWORDS = {
    *("$schema", "$ref", "$defs", "title", "description", "default", "type", "enum", "anyOf"),
    *("properties", "required", "additionalProperties", "propertyNames", "minProperties"),
    *("items", "prefixItems", "minItems", "maxItems", "minimum", "exclusiveMinimum", "maximum"),
    "pattern",
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    printed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded: dict[str, Any] = json.loads(printed)
    return loaded


def problems(value: Any, node: dict[str, Any] | bool, root: dict[str, Any]) -> list[str]:
    """How ``value`` breaks the schema ``node`` (the JSON Schema 2020-12 of KEYWORDS)."""
    if node is False or node is True:
        return [] if node else [f"{value!r} is not allowed here"]
    if "$ref" in node:
        return problems(value, root["$defs"][node["$ref"].rpartition("/")[2]], root)
    if "anyOf" in node:
        return [] if any(not problems(value, n, root) for n in node["anyOf"]) else ["no anyOf"]
    kind = node.get("type")
    if kind and not is_a(value, kind):
        return [f"{value!r} is not of type {kind}"]
    checks: dict[str, Callable[[Any], bool]] = {
        "enum": lambda bound: value in bound,
        "pattern": lambda bound: re.search(bound, value) is not None,
        "minimum": lambda bound: value >= bound,
        "exclusiveMinimum": lambda bound: value > bound,
        "maximum": lambda bound: value <= bound,
        "minProperties": lambda bound: len(value) >= bound,
        "minItems": lambda bound: len(value) >= bound,
        "maxItems": lambda bound: len(value) <= bound,
    }
    found = [f"{value!r} breaks {k}" for k, ok in checks.items() if k in node and not ok(node[k])]
    if isinstance(value, dict):
        found += [f"{key} is missing" for key in node.get("required", ()) if key not in value]
        for key, item in value.items():
            found += problems(key, node.get("propertyNames", {}), root)
            known = node.get("properties", {})
            found += problems(item, known.get(key, node.get("additionalProperties", {})), root)
    if isinstance(value, list):
        prefix = node.get("prefixItems", [])
        for i, item in enumerate(value):
            found += problems(item, prefix[i] if i < len(prefix) else node.get("items", {}), root)
    return found


def is_a(value: object, kind: str) -> bool:
    """Whether ``value`` is of the JSON type ``kind`` (a TOML boolean is no number)."""
    return isinstance(value, TYPES[kind]) and isinstance(value, bool) == (kind == "boolean")


def keywords(node: Any) -> set[str]:
    """The keywords used by the schema ``node`` and the schemas within it."""
    if not isinstance(node, dict):
        return set()
    used = set(node)
    for key, sub in node.items():
        if key in ("properties", "$defs"):
            used |= set().union(*map(keywords, sub.values()))
        if key in ("prefixItems", "anyOf"):
            used |= set().union(*map(keywords, sub))
        if key in ("items", "additionalProperties", "propertyNames"):
            used |= keywords(sub)
    return used


def test_gpo_config_schema_prints_a_json_schema_of_the_tables(schema: dict[str, Any]) -> None:
    root = schema["$defs"][schema["$ref"].rpartition("/")[2]]
    assert set(root["properties"]) == TABLES
    assert set(root["required"]) == {"endpoints", "jobs"}
    assert root["additionalProperties"] is False
    assert keywords(schema) <= KEYWORDS


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_valid_against_the_schema(schema: dict[str, Any], example: Path) -> None:
    document = tomllib.loads(example.read_text(encoding="utf-8"))
    assert problems(document, schema, schema) == []


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("optimizer", "candidate", 4),
        ("optimizer", "candidates", 0),
        ("optimizer", "schedule", "sawtooth"),
        ("run", "seed", True),
        ("endpoints", "x y", {"model": "m"}),
        ("endpoints", "e", {"model": "m", "rpm": "fast"}),
        ("endpoints", "e", {"model": "m", "price": "fre"}),
        ("endpoints", "e", {"model": "m", "kind": "azure"}),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(
    schema: dict[str, Any], table: str, key: str, value: object
) -> None:
    document: dict[str, Any] = {"endpoints": {"e": {"model": "m"}}, "jobs": [{"data": "d.jsonl"}]}
    assert problems(document, schema, schema) == []
    document.setdefault(table, {})[key] = value
    assert problems(document, schema, schema) != []


def test_the_tables_know_the_librarys_knobs_presets_and_metrics() -> None:
    assert Knobs.__struct_fields__ == knobs()
    assert get_args(Preset) == tuple(PRESETS)
    assert get_args(MetricName) == ("auto", *(m.name for m in BUILTIN_METRICS))
