"""What determines a run's results, as a JSON-able digest of its config, and how two digests differ.

A resumed run whose configuration changed would mix the results of two setups, so a run directory
keeps the :func:`config_digest` of the config it started with, and a resume compares it with the
current one through :func:`diff_digests` (and refuses when they differ).

In the digest: the seed; the preset, every strategy knob and the max tokens; the endpoints the jobs
use (kind, model, base URL, and what shapes their requests: ``supports_n``,
``default_max_tokens``, ``anthropic_version``); the simulator's seed and task files; each job's
data (path and sha256 of the content, or the built-in task's examples), format, fields, metric,
initial prompt, placement, split sizes, endpoints and own strategy.

Deliberately *not* in it: budgets, rate limits, concurrency, timeouts, retry policies, prices, and
the simulator's latency, limits and faults. They decide how fast and how far a run gets, not what a
call returns, so a resumed run may raise its budget or change its limits. API keys never appear.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pipeline.config._sections import BUILTIN_PREFIX
from pipeline.errors import ConfigError
from pipeline.llm._endpoint import EndpointConfig
from pipeline.sim.config import SimConfig
from pipeline.sim.tasks import builtin_tasks
from stages.strategy import Strategy

if TYPE_CHECKING:
    from pipeline.config._load import JobSpec, RunConfig

DIGEST_VERSION: Final = 1
_KNOB_DEFAULTS: Final = Strategy().describe()
_MISSING: Final = object()
_KEYED: Final = (("jobs",), ("simulator", "tasks"))
_SHOWN_CHARS: Final = 60
_CHUNK: Final = 1 << 20


def config_digest(config: RunConfig) -> dict[str, Any]:
    """The normalized parts of ``config`` that determine a run's results (module docstring)."""
    used = {
        name
        for job in config.jobs
        for name in (job.task_endpoint, job.optimizer_endpoint, job.embedding_endpoint)
    }
    return {
        "version": DIGEST_VERSION,
        "seed": config.seed,
        "optimizer": {
            "preset": config.preset,
            **config.settings.strategy.describe(),
            "scorer_max_tokens": config.settings.scorer_max_tokens,
            "optimizer_max_tokens": config.settings.optimizer_max_tokens,
        },
        "endpoints": {
            e.name: _endpoint(e, simulated=e.name in config.simulated)
            for e in config.endpoints
            if e.name in used
        },
        "simulator": _simulator(config.simulator),
        "jobs": {job.name: _job(job) for job in config.jobs},
    }


def diff_digests(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two digests, one line each; empty when equal::

        optimizer.candidates: 8 -> 4
        jobs[navigate].data: file content changed
        jobs[web_of_lies]: added

    Budgets, limits, timeouts and prices are not in digests, so they never differ here.
    """
    lines: list[str] = []
    _diff(old, new, (), lines)
    return lines


# --- digest parts -------------------------------------------------------------------------------


def _endpoint(endpoint: EndpointConfig, *, simulated: bool) -> dict[str, Any]:
    digest: dict[str, Any] = {
        "kind": "simulator" if simulated else endpoint.kind,
        "model": endpoint.model,
        "base_url": None if simulated else endpoint.url,
        "supports_n": endpoint.supports_n,
        "default_max_tokens": endpoint.default_max_tokens,
    }
    if endpoint.kind == "anthropic":
        digest["anthropic_version"] = endpoint.anthropic_version
    return digest


def _simulator(simulator: SimConfig | None) -> dict[str, Any] | None:
    if simulator is None:
        return None
    tasks = {path: {"sha256": _file_sha256(Path(path))} for path in simulator.task_paths}
    return {"seed": simulator.seed, "tasks": tasks}


def _job(job: JobSpec) -> dict[str, Any]:
    return {
        "data": {"path": job.data, "sha256": _data_sha256(job.data)},
        "format": job.format,
        "input_field": job.input_field,
        "target_field": job.target_field,
        "metric": job.metric,
        "initial_prompt": job.initial_prompt,
        "placement": job.placement,
        "dev_size": job.dev_size,
        "test_size": job.test_size,
        "task_endpoint": job.task_endpoint,
        "optimizer_endpoint": job.optimizer_endpoint,
        "embedding_endpoint": job.embedding_endpoint,
        "strategy": job.strategy.describe() if job.strategy is not None else None,
    }


def _data_sha256(data: str) -> str:
    if not data.startswith(BUILTIN_PREFIX):
        return _file_sha256(Path(data))
    name = data.removeprefix(BUILTIN_PREFIX)
    examples = next(t.examples for t in builtin_tasks() if t.name == name)
    text = json.dumps([[e.input, e.target] for e in examples], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read data file ({exc.strerror or exc})") from None
    return digest.hexdigest()


# --- differences --------------------------------------------------------------------------------


def _diff(old: object, new: object, path: tuple[str, ...], lines: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in [*old, *(k for k in new if k not in old)]:
            if key not in new:
                lines.append(f"{_render((*path, key))}: removed")
            elif key not in old:
                _added(path, key, new[key], lines)
            else:
                _diff(old[key], new[key], (*path, key), lines)
    elif old != new:
        lines.append(_change(path, old, new))


def _added(path: tuple[str, ...], key: str, value: object, lines: list[str]) -> None:
    """A key only the new digest has. A strategy knob that a newer gpo added, at its default
    (which keeps what older versions did), is no difference: their runs resume."""
    knobs = path[-1:] in (("optimizer",), ("strategy",))
    if knobs and _KNOB_DEFAULTS.get(key, _MISSING) == value:
        return
    shown = "" if isinstance(value, Mapping) else f" ({_show(value)})"
    lines.append(f"{_render((*path, key))}: added{shown}")


def _change(path: tuple[str, ...], old: object, new: object) -> str:
    if path and path[-1] == "sha256":
        return f"{_render(path[:-1])}: file content changed"
    where = _render(path[:-1] if path and path[-1] == "path" else path)
    if old is None and isinstance(new, Mapping):
        return f"{where}: added"
    if new is None and isinstance(old, Mapping):
        return f"{where}: removed"
    return f"{where}: {_show(old)} -> {_show(new)}"


def _render(path: tuple[str, ...]) -> str:
    """``("jobs", "navigate", "metric")`` -> ``jobs[navigate].metric``."""
    text = ""
    for i, part in enumerate(path):
        if path[:i] in _KEYED:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(digest)"


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
