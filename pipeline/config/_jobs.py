"""The ``[[jobs]]`` tables of the run configuration, and the strategy of ``[optimizer]``.

A table names its data with ``data`` (a file, or ``"builtin:NAME"`` for a simulator's synthetic
task) or ``glob`` (one job per matching file, named after it). Endpoint references default to
``[optimizer]``'s, the task endpoint to the only endpoint when there is one, the optimizer
endpoint to the task endpoint. A job's ``preset`` and ``strategy`` table override the run's
strategy (the run's knobs apply first, then the job's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

from pipeline.config._schema import Node, show
from pipeline.config._sections import (
    BUILTIN_PREFIX,
    EndpointSpec,
    check_file,
    expand,
    parse_caps,
    resolve,
)
from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.runner._jobs import DEFAULT_INITIAL_PROMPT
from pipeline.sim.synthetic import GENERATORS
from pipeline.tasks._data import FORMATS, Format
from pipeline.tasks._metrics import BUILTIN_METRICS
from stages.messages import Placement
from stages.strategy import PRESETS, Strategy, knobs, strategy

BUILTIN_NAMES: Final = tuple(name for name, _ in GENERATORS)
METRIC_NAMES: Final = ("auto", *(m.name for m in BUILTIN_METRICS))
PLACEMENTS: Final = get_args(Placement)
ENDPOINT_REFS: Final = ("task_endpoint", "optimizer_endpoint", "embedding_endpoint")
_JOB_KEYS: Final = (
    "name",
    "data",
    "glob",
    "format",
    "input_field",
    "target_field",
    "metric",
    "initial_prompt",
    "placement",
    "dev_size",
    "test_size",
    "small_splits",
    "budget_usd",
    "budget_tokens",
    *ENDPOINT_REFS,
    "preset",
    "strategy",
)


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One job as configured: ``data`` is an absolute file path or ``"builtin:NAME"``; endpoint
    references are resolved (the optimizer endpoint defaults to the task endpoint); ``strategy``
    is None unless the job sets its own ``preset`` or ``strategy`` table (then: the run's)."""

    name: str
    data: str
    format: Format = "auto"
    input_field: str = "input"
    target_field: str = "target"
    metric: str = "auto"
    initial_prompt: str = DEFAULT_INITIAL_PROMPT
    placement: Placement = "after"
    dev_size: int = 48
    test_size: int = 144
    small_splits: bool = False
    budget: Caps | None = None
    task_endpoint: str
    optimizer_endpoint: str
    embedding_endpoint: str | None = None
    strategy: Strategy | None = None


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What ``[[jobs]]`` tables take from the rest of the file: the config file's directory, the
    endpoints, and the ``[optimizer]`` defaults (preset, knobs, endpoint references)."""

    base: Path
    check_files: bool
    endpoints: Mapping[str, EndpointSpec]
    preset: str
    knobs: Mapping[str, object]
    refs: Mapping[str, str | None]


_KNOB_ERROR = re.compile(r"^strategy knob '(?P<knob>\w+)': (?P<rest>.*)$", re.S)


def parse_strategy(node: Node, preset: str, overrides: Mapping[str, object]) -> Strategy:
    try:
        return strategy(preset, **overrides)
    except ConfigError as exc:
        knob = _KNOB_ERROR.match(str(exc))
        if knob is None:
            raise node.error(None, str(exc)) from None
        message = _toml_flavoured(knob["rest"], knob["knob"], overrides)
        raise node.error(knob["knob"], message) from None


def _toml_flavoured(message: str, knob: str, overrides: Mapping[str, object]) -> str:
    """The strategy's ``expected 'a', 'b', found 'x'`` as ``expected a, b, found "x"``."""
    expected, sep, _ = message.rpartition(", found ")
    if not sep or knob not in overrides:
        return message
    return f"{expected.replace(chr(39), '')}, found {show(overrides[knob])}"


def endpoint_ref(node: Node, key: str, endpoints: Mapping[str, EndpointSpec]) -> str | None:
    name = node.string(key, None, empty=False)
    if name is None:
        return None
    if name not in endpoints:
        node.fail(key, "the name of an endpoint (" + ", ".join(endpoints) + ")", name)
    if key == "embedding_endpoint" and endpoints[name].kind == "anthropic":
        expected = "an endpoint that serves embeddings (kind openai or simulator)"
        raise node.error(key, f"expected {expected}, found {show(name)} (kind anthropic)")
    return name


# --- jobs ---------------------------------------------------------------------------------------


def parse_jobs(root: Node, ctx: JobDefaults) -> tuple[JobSpec, ...]:
    nodes = root.tables("jobs")
    if not nodes:
        raise root.error(None, "expected at least one [[jobs]] table, found none")
    placed = [pair for node in nodes for pair in _job_specs(node, ctx)]
    first: dict[str, str] = {}
    for where, spec in placed:
        if spec.name in first:
            raise ConfigError(
                f"{root.file}: {where}: expected a unique job name, found {show(spec.name)} "
                f"again (first in {first[spec.name]}); set name = ... to tell them apart"
            )
        first[spec.name] = where
    return tuple(spec for _, spec in placed)


def _job_specs(node: Node, ctx: JobDefaults) -> list[tuple[str, JobSpec]]:
    node.only(_JOB_KEYS)
    settings = _job_settings(node, ctx)
    return [
        (where, JobSpec(name=name, data=data, **settings))
        for where, name, data in _sources(node, ctx)
    ]


def _sources(node: Node, ctx: JobDefaults) -> list[tuple[str, str, str]]:
    """(key path, job name, data) of each job of a ``[[jobs]]`` table."""
    if node.has("glob"):
        return _glob_sources(node, ctx)
    if not node.has("data"):
        raise node.error(None, "expected a data or a glob key, found neither")
    data = _data(node, ctx)
    stem = data.removeprefix(BUILTIN_PREFIX) if data.startswith(BUILTIN_PREFIX) else Path(data).stem
    return [(node.path, node.string("name", stem, empty=False), data)]


def _glob_sources(node: Node, ctx: JobDefaults) -> list[tuple[str, str, str]]:
    for key in ("data", "name"):
        if node.has(key):
            message = "expected no data or name with glob (each file is a job named after it)"
            raise node.error(key, f"{message}, found {show(node.data[key])}")
    pattern = node.required_string("glob")
    files = expand(ctx.base, pattern)
    if not files and ctx.check_files:
        raise node.error("glob", f"no files match {show(str(resolve(ctx.base, pattern)))}")
    return [(f"{node.path} ({file.name})", file.stem, str(file)) for file in files]


def _data(node: Node, ctx: JobDefaults) -> str:
    text = node.required_string("data")
    if text.startswith(BUILTIN_PREFIX):
        if text.removeprefix(BUILTIN_PREFIX) not in BUILTIN_NAMES:
            expected = "a file or builtin:NAME with NAME one of " + ", ".join(BUILTIN_NAMES)
            node.fail("data", expected, text)
        return text
    path = resolve(ctx.base, text)
    if ctx.check_files:
        check_file(node, "data", path)
    return str(path)


def _job_settings(node: Node, ctx: JobDefaults) -> dict[str, Any]:
    refs = {key: endpoint_ref(node, key, ctx.endpoints) or ctx.refs[key] for key in ENDPOINT_REFS}
    task = refs["task_endpoint"] or _sole_endpoint(node, ctx)
    values = {
        "format": node.choice("format", FORMATS, None),
        "input_field": node.string("input_field", None, empty=False),
        "target_field": node.string("target_field", None, empty=False),
        "metric": node.choice("metric", METRIC_NAMES, None),
        "initial_prompt": node.string("initial_prompt", None),
        "placement": node.choice("placement", PLACEMENTS, None),
        "dev_size": node.integer("dev_size", None, minimum=1),
        "test_size": node.integer("test_size", None, minimum=0),
        "small_splits": node.boolean("small_splits", None),
    }
    return {
        **{k: v for k, v in values.items() if v is not None},
        "budget": parse_caps(node),
        "task_endpoint": task,
        "optimizer_endpoint": refs["optimizer_endpoint"] or task,
        "embedding_endpoint": refs["embedding_endpoint"],
        "strategy": _job_strategy(node, ctx),
    }


def _sole_endpoint(node: Node, ctx: JobDefaults) -> str:
    if len(ctx.endpoints) == 1:
        return next(iter(ctx.endpoints))
    names = ", ".join(ctx.endpoints)
    raise node.error(
        "task_endpoint",
        f"expected the name of an endpoint ({names}) here or as optimizer.task_endpoint, "
        "found nothing",
    )


def _job_strategy(node: Node, ctx: JobDefaults) -> Strategy | None:
    if not node.has("preset") and not node.has("strategy"):
        return None
    preset = node.choice("preset", tuple(PRESETS), ctx.preset)
    table = node.table("strategy")
    table.only(knobs())
    return parse_strategy(table, preset, {**ctx.knobs, **table.data})
