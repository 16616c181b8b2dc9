"""The run configuration: one TOML file naming the endpoints, the optimizer, budgets and jobs.

Its tables (``[run]``, ``[simulator]``, ``[endpoints.NAME]``, ``[optimizer]``, ``[[jobs]]``) and
their keys are declared in :mod:`pipeline.config._schema`. Paths are relative to the config file.
API keys are read from the environment variables named by ``api_key_env`` at load time into
:class:`~pipeline.Secret`; ``api_key_env = ""`` means the server needs no key (local vLLM,
Ollama). Validation is complete before anything is spent: every problem raises one
:class:`~pipeline.errors.ConfigError` naming the file, the key path, what was expected and what
was found (see :mod:`pipeline.config._messages`). A job's ``preset`` and ``strategy`` table
override the run's strategy for that job (run-level knobs apply first).
A job whose data has fewer examples than its splits ask for (the strategy's ``exemplars`` +
``dev_size`` + ``test_size``, by default 3 + 48 + 144 = 195) is refused by :func:`build_jobs`,
naming the job and both numbers, unless it sets ``small_splits = true``: then dev keeps its size
as long as one example is left for test, and test gets what remains.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from msgspec import UnsetType

from pipeline.config._digest import config_digest, diff_digests
from pipeline.config._jobs import (
    ENDPOINT_REFS,
    JobDefaults,
    JobSpec,
    build_job_specs,
    endpoint_ref,
    knob_values,
    parse_strategy,
)
from pipeline.config._messages import At, decode
from pipeline.config._schema import ConfigFile, OptimizerTable, RunTable, given, json_schema
from pipeline.config._sections import (
    BUILTIN_PREFIX,
    SIMULATOR_URL,
    EndpointSpec,
    build_caps,
    build_endpoints,
    build_simulator,
    resolve,
)
from pipeline.coord._conn import redacted
from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.llm._endpoint import EndpointConfig
from pipeline.runner._jobs import CALL_WORKERS, Job, OptimizerSettings, check_splits
from pipeline.sim.config import SimConfig
from pipeline.sim.tasks import builtin_tasks
from pipeline.tasks._data import Example, load_examples

__all__ = [
    "BUILTIN_PREFIX",
    "SIMULATOR_URL",
    "JobSpec",
    "RunConfig",
    "build_job",
    "build_jobs",
    "config_digest",
    "diff_digests",
    "json_schema",
    "load_config",
    "load_job_examples",
    "unpriced_endpoints",
    "with_simulator_url",
]

_TOML_PLACE: Final = re.compile(
    r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.S
)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A validated run configuration. Endpoints of kind ``"simulator"`` (named in
    ``simulated``) have the placeholder base URL until :func:`with_simulator_url`;
    ``simulator`` is None when no endpoint is simulated."""

    path: Path
    run_dir: Path | None
    seed: int
    budget: Caps
    simulator: SimConfig | None
    endpoints: tuple[EndpointConfig, ...]
    simulated: frozenset[str]
    preset: str
    settings: OptimizerSettings
    jobs: tuple[JobSpec, ...]
    coordination: str = "local"
    """``"local"`` or a ``redis://`` URL (``[run] coordination``, else ``GPO_REDIS_URL``)."""
    budget_scope: str | None = None
    """The shared account the run's caps apply to (with Redis; default: the run's own)."""

    def endpoint(self, name: str) -> EndpointConfig:
        return next(e for e in self.endpoints if e.name == name)


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
    require_keys: bool = True,
) -> RunConfig:
    """Read and validate the config at ``path``; ``env`` defaults to ``os.environ``.

    ``check_files=False`` skips the existence checks of data and task files (a glob matching
    nothing then gives no jobs); ``require_keys=False`` accepts unset API key variables (for
    commands that call no endpoint). Raises one :class:`ConfigError` for the first problem.
    """
    file = Path(path)
    raw = _read_toml(file, str(path))
    at = At(str(path))
    doc = decode(raw, ConfigFile, at)
    base = file.absolute().parent
    simulator = build_simulator(
        doc.simulator, base=base, seed=doc.run.seed, check_files=check_files, at=at.key("simulator")
    )
    env_ = os.environ if env is None else env
    endpoints = build_endpoints(doc.endpoints, env_, at.key("endpoints"))
    ctx = _defaults(doc.optimizer, endpoints, base, check_files, at.key("optimizer"))
    jobs = build_job_specs(doc.jobs, ctx, at.key("jobs"))
    if require_keys:
        for name in _used(jobs, endpoints):
            endpoints[name].check_key()
    settings = _settings(doc, ctx, at.key("optimizer"))
    simulated = frozenset(name for name, spec in endpoints.items() if spec.simulated)
    return RunConfig(
        path=file.absolute(),
        run_dir=None if isinstance(doc.run.dir, UnsetType) else resolve(base, doc.run.dir),
        seed=doc.run.seed,
        budget=build_caps(doc.run) or Caps(),
        simulator=simulator if simulated else None,
        endpoints=tuple(spec.config for spec in endpoints.values()),
        simulated=simulated,
        preset=ctx.preset,
        settings=settings,
        jobs=jobs,
        coordination=_coordination(doc.run, env_, at.key("run")),
        budget_scope=None if isinstance(doc.run.budget_scope, UnsetType) else doc.run.budget_scope,
    )


def _coordination(run: RunTable, env: Mapping[str, str], at: At) -> str:
    """``[run] coordination``, else ``GPO_REDIS_URL``, else ``"local"``; checked here."""
    given = run.coordination if not isinstance(run.coordination, UnsetType) else None
    value = given or env.get("GPO_REDIS_URL") or "local"
    if value != "local" and not value.startswith(("redis://", "rediss://", "unix://")):
        message = f'expected "local" or a redis://HOST:PORT/DB URL, found {redacted(value)!r}'
        if given:
            raise at.key("coordination").error(message)
        raise ConfigError(f"GPO_REDIS_URL: {message}")
    return value


def with_simulator_url(config: RunConfig, url: str) -> RunConfig:
    """``config`` with the simulator endpoints pointed at ``url`` (the running simulator's)."""
    endpoints = tuple(
        dataclasses.replace(e, base_url=url) if e.name in config.simulated else e
        for e in config.endpoints
    )
    return dataclasses.replace(config, endpoints=endpoints)


def unpriced_endpoints(config: RunConfig) -> list[EndpointConfig]:
    """The endpoints some job uses whose price is unknown; ``ConfigError`` when a USD cap (the
    run's or a job's) is set, since a cap cannot be enforced without a price."""
    used = {n for job in config.jobs for n in (job.task_endpoint, job.optimizer_endpoint)}
    used |= {job.embedding_endpoint for job in config.jobs if job.embedding_endpoint}
    unknown = [e for e in config.endpoints if e.name in used and e.effective_price is None]
    capped = config.budget.usd is not None or any(
        job.budget is not None and job.budget.usd is not None for job in config.jobs
    )
    if unknown and capped:
        e = unknown[0]
        raise ConfigError(
            f"{config.path}: endpoints.{e.name}: no price is known for model {e.model!r} at "
            f"{e.base_url} and a USD cap is set; set price = {{ input_per_mtok = ..., "
            f'output_per_mtok = ... }} (USD per million tokens), or price = "free" for a local '
            "server"
        )
    return unknown


def build_jobs(config: RunConfig) -> list[Job]:
    """The optimizer's jobs, data loaded; a loader's ``ConfigError`` (naming the file) propagates,
    and so does a job with fewer examples than its splits (see ``small_splits``). Use
    :func:`build_job` per spec to let one broken data file fail alone."""
    jobs = [build_job(spec) for spec in config.jobs]
    try:
        check_splits(jobs, config.settings)
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    return jobs


def build_job(spec: JobSpec) -> Job:
    """The :class:`~pipeline.runner._jobs.Job` of ``spec``, its examples loaded."""
    return Job(
        name=spec.name,
        examples=load_job_examples(spec),
        task_endpoint=spec.task_endpoint,
        optimizer_endpoint=spec.optimizer_endpoint,
        embedding_endpoint=spec.embedding_endpoint,
        metric=None if spec.metric == "auto" else spec.metric,
        initial_prompt=spec.initial_prompt,
        placement=spec.placement,
        dev_size=spec.dev_size,
        test_size=spec.test_size,
        small_splits=spec.small_splits,
        strategy=spec.strategy,
        budget=spec.budget,
    )


def load_job_examples(spec: JobSpec) -> tuple[Example, ...]:
    """The examples of ``spec``: a built-in task's or the data file's."""
    if spec.data.startswith(BUILTIN_PREFIX):
        name = spec.data.removeprefix(BUILTIN_PREFIX)
        return next(t.examples for t in builtin_tasks() if t.name == name)
    return load_examples(
        spec.data,
        format=spec.format,
        input_field=spec.input_field,
        target_field=spec.target_field,
    )


# --- reading ------------------------------------------------------------------------------------


def _read_toml(file: Path, shown: str) -> dict[str, Any]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        found = f"byte {data[exc.start]:#04x}"
        raise ConfigError(f"{shown}: line {line}: expected UTF-8 text, found {found}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        place = _TOML_PLACE.match(str(exc))
        if place is None:
            raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
        message = f"line {place['line']}: invalid TOML: {place['msg']} (column {place['col']})"
        raise ConfigError(f"{shown}: {message}") from None


# --- optimizer ---------------------------------------------------------------------------------


def _defaults(
    table: OptimizerTable,
    endpoints: Mapping[str, EndpointSpec],
    base: Path,
    check_files: bool,
    at: At,
) -> JobDefaults:
    knobs = knob_values(table)
    parse_strategy(at, table.preset, knobs)  # check the run's knobs where they are written
    refs = {key: endpoint_ref(at, key, getattr(table, key), endpoints) for key in ENDPOINT_REFS}
    return JobDefaults(base, check_files, endpoints, table.preset, knobs, refs)


def _settings(doc: ConfigFile, ctx: JobDefaults, at: At) -> OptimizerSettings:
    run = given(doc.run, "max_active_jobs", "call_workers")
    batching = [
        e.config.batch.max_requests for e in ctx.endpoints.values() if e.config.batch.mode != "off"
    ]
    if batching and "call_workers" not in run:  # a batch fills only as fast as calls are asked
        run["call_workers"] = max(CALL_WORKERS, *batching)
    return OptimizerSettings(
        strategy=parse_strategy(at, ctx.preset, ctx.knobs),
        seed=doc.run.seed,
        **run,
        **given(doc.optimizer, "scorer_max_tokens", "optimizer_max_tokens"),
    )


def _used(jobs: tuple[JobSpec, ...], endpoints: Mapping[str, EndpointSpec]) -> list[str]:
    """The endpoints some job calls, in file order."""
    used = {name for job in jobs for name in (job.task_endpoint, job.optimizer_endpoint)}
    used |= {job.embedding_endpoint for job in jobs if job.embedding_endpoint}
    return [name for name in endpoints if name in used]
