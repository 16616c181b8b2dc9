"""The jobs of the run configuration (``[[jobs]]``), and the strategy of ``[optimizer]``.

A table names its data with ``data`` (a file, or ``"builtin:NAME"`` for a simulator's synthetic
task) or ``glob`` (one job per matching file, named after it). Endpoint references default to
``[optimizer]``'s, the task endpoint to the only endpoint when there is one, the optimizer
endpoint to the task endpoint. A job's ``preset`` and ``strategy`` table override the run's
strategy (the run's knobs apply first, then the job's). The tables' keys and types are checked
(:mod:`pipeline.config._schema`); what is checked here are references to other tables, files,
and the consistency of the knobs (by :func:`stages.strategy.strategy`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from msgspec import UnsetType

from pipeline.config._messages import At, show
from pipeline.config._schema import JobTable, Knobs, given
from pipeline.config._sections import (
    BUILTIN_PREFIX,
    EndpointSpec,
    build_caps,
    check_file,
    expand,
    resolve,
)
from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.runner._jobs import DEFAULT_INITIAL_PROMPT
from pipeline.sim.synthetic import GENERATORS
from pipeline.tasks._data import Format
from stages.messages import Placement
from stages.strategy import Strategy, strategy

BUILTIN_NAMES: Final = tuple(name for name, _ in GENERATORS)
ENDPOINT_REFS: Final = ("task_endpoint", "optimizer_endpoint", "embedding_endpoint")
_SETTINGS: Final = (
    "format",
    "input_field",
    "target_field",
    "metric",
    "initial_prompt",
    "placement",
    "dev_size",
    "test_size",
    "small_splits",
)
_KNOB_ERROR: Final = re.compile(r"^strategy knob '(?P<knob>\w+)': (?P<rest>.*)$", re.S)


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


def knob_values(table: Knobs) -> dict[str, Any]:
    """The knobs a table sets (of ``[optimizer]``, the knobs only)."""
    return given(table, *Knobs.__struct_fields__)


def parse_strategy(at: At, preset: str, overrides: Mapping[str, object]) -> Strategy:
    """The strategy, its knobs' consistency checked by :func:`stages.strategy.strategy` (the
    types and ranges of single knobs are the tables'); its message placed at the knob."""
    try:
        return strategy(preset, **overrides)
    except ConfigError as exc:
        knob = _KNOB_ERROR.match(str(exc))
        if knob is None:
            raise at.error(str(exc)) from None
        message = _toml_flavoured(knob["rest"], knob["knob"], overrides)
        raise at.key(knob["knob"]).error(message) from None


def _toml_flavoured(message: str, knob: str, overrides: Mapping[str, object]) -> str:
    """The strategy's ``expected 'a', 'b', found 'x'`` as ``expected a, b, found "x"``."""
    expected, sep, _ = message.rpartition(", found ")
    if not sep or knob not in overrides:
        return message
    return f"{expected.replace(chr(39), '')}, found {show(overrides[knob])}"


def endpoint_ref(
    at: At, key: str, name: str | UnsetType, endpoints: Mapping[str, EndpointSpec]
) -> str | None:
    """The endpoint ``name`` of the table at ``at``, checked: it exists and serves ``key``."""
    if isinstance(name, UnsetType):
        return None
    if name not in endpoints:
        at.key(key).fail("the name of an endpoint (" + ", ".join(endpoints) + ")", name)
    if key == "embedding_endpoint" and endpoints[name].kind == "anthropic":
        expected = "an endpoint that serves embeddings (kind openai or simulator)"
        raise at.key(key).error(f"expected {expected}, found {show(name)} (kind anthropic)")
    return name


# --- jobs ---------------------------------------------------------------------------------------


def build_job_specs(tables: tuple[JobTable, ...], ctx: JobDefaults, at: At) -> tuple[JobSpec, ...]:
    """Every job of the ``[[jobs]]`` tables; their names must be unique."""
    placed = [pair for i, table in enumerate(tables) for pair in _specs(table, ctx, at.key(i))]
    first: dict[str, str] = {}
    for where, spec in placed:
        if spec.name in first:
            raise At(at.file, where).error(
                f"expected a unique job name, found {show(spec.name)} again (first in "
                f"{first[spec.name]}); set name = ... to tell them apart"
            )
        first[spec.name] = where
    return tuple(spec for _, spec in placed)


def _specs(table: JobTable, ctx: JobDefaults, at: At) -> list[tuple[str, JobSpec]]:
    settings = _settings(table, ctx, at)
    return [
        (where, JobSpec(name=name, data=data, **settings))
        for where, name, data in _sources(table, ctx, at)
    ]


def _sources(table: JobTable, ctx: JobDefaults, at: At) -> list[tuple[str, str, str]]:
    """(key path, job name, data) of each job of a ``[[jobs]]`` table."""
    if not isinstance(table.glob, UnsetType):
        files = expand(ctx.base, table.glob)
        if not files and ctx.check_files:
            pattern = show(str(resolve(ctx.base, table.glob)))
            raise at.key("glob").error(f"no files match {pattern}")
        return [(f"{at.path} ({file.name})", file.stem, str(file)) for file in files]
    data = _data(str(table.data), ctx, at.key("data"))
    stem = data.removeprefix(BUILTIN_PREFIX) if data.startswith(BUILTIN_PREFIX) else Path(data).stem
    return [(at.path, given(table).get("name", stem), data)]


def _data(text: str, ctx: JobDefaults, at: At) -> str:
    if text.startswith(BUILTIN_PREFIX):
        if text.removeprefix(BUILTIN_PREFIX) not in BUILTIN_NAMES:
            at.fail("a file or builtin:NAME with NAME one of " + ", ".join(BUILTIN_NAMES), text)
        return text
    path = resolve(ctx.base, text)
    if ctx.check_files:
        check_file(at, path)
    return str(path)


def _settings(table: JobTable, ctx: JobDefaults, at: At) -> dict[str, Any]:
    refs = {
        key: endpoint_ref(at, key, getattr(table, key), ctx.endpoints) or ctx.refs[key]
        for key in ENDPOINT_REFS
    }
    task = refs["task_endpoint"] or _sole_endpoint(ctx, at)
    return {
        **given(table, *_SETTINGS),
        "budget": build_caps(table),
        "task_endpoint": task,
        "optimizer_endpoint": refs["optimizer_endpoint"] or task,
        "embedding_endpoint": refs["embedding_endpoint"],
        "strategy": _job_strategy(table, ctx, at),
    }


def _sole_endpoint(ctx: JobDefaults, at: At) -> str:
    if len(ctx.endpoints) == 1:
        return next(iter(ctx.endpoints))
    names = ", ".join(ctx.endpoints)
    raise at.key("task_endpoint").error(
        f"expected the name of an endpoint ({names}) here or as optimizer.task_endpoint, "
        "found nothing"
    )


def _job_strategy(table: JobTable, ctx: JobDefaults, at: At) -> Strategy | None:
    if isinstance(table.preset, UnsetType) and isinstance(table.strategy, UnsetType):
        return None
    preset = given(table).get("preset", ctx.preset)
    knobs = {} if isinstance(table.strategy, UnsetType) else knob_values(table.strategy)
    return parse_strategy(at.key("strategy"), preset, {**ctx.knobs, **knobs})
