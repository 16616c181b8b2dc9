"""The library values built from the decoded tables: endpoints, caps, the simulator; and files.

``[endpoints.NAME]`` becomes an :class:`~pipeline.EndpointConfig` (its API key read from the
environment into a :class:`~pipeline.llm._secret.Secret`), ``[simulator]`` a
:class:`~pipeline.sim.config.SimConfig`, ``budget_usd``/``budget_tokens`` a
:class:`~pipeline.Caps`. The tables have been checked by type (:mod:`pipeline.config._schema`);
what is checked here needs the environment or the file system.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from msgspec import UnsetType

from pipeline.config._messages import At, show
from pipeline.config._schema import (
    EndpointTable,
    JobTable,
    PriceTable,
    RunTable,
    SimulatorTable,
    given,
)
from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.llm._endpoint import BatchPolicy, EndpointConfig, RetryPolicy
from pipeline.llm._pricing import FREE, Price
from pipeline.llm._secret import Secret
from pipeline.sim.config import SimConfig
from pipeline.sim.faults import FaultSpec

BUILTIN_PREFIX: Final = "builtin:"
"""``data = "builtin:NAME"`` names a built-in synthetic task of the simulator."""
SIMULATOR_URL: Final = "http://simulator.invalid/v1"
"""Placeholder base URL of simulator endpoints until the simulator listens (see
:func:`pipeline.config._load.with_simulator_url`)."""

_DEFAULT_URL: Final = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
_DEFAULT_KEY_ENV: Final = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_LIMITS: Final = (
    "rpm",
    "tpm",
    "max_in_flight",
    "timeout_s",
    "max_timeout_s",
    "connect_timeout_s",
    "supports_n",
    "default_max_tokens",
    "anthropic_version",
)
_TASK_SUFFIXES: Final = (".json", ".jsonl")
_MAGIC: Final = re.compile(r"[*?[]")


# --- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A built endpoint, with what is needed to check its key once we know it is used."""

    config: EndpointConfig
    key_env: str  # "" = the endpoint needs no key
    simulated: bool
    at: At
    key_set: bool  # the variable ``key_env`` is in the environment (maybe empty)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return "simulator" if self.simulated else self.config.kind

    def check_key(self) -> None:
        """``ConfigError`` when the endpoint needs a key and its variable is unset, empty, or
        holds surrounding whitespace or a control character (which no HTTP header can carry).
        The message never shows the key."""
        if not self.key_env:
            return
        problem = _key_problem(self.config.api_key.reveal(), is_set=self.key_set)
        if problem:
            at = self.at.key("api_key_env")
            raise at.error(f"the environment variable {self.key_env} {problem}")


def _key_problem(key: str, *, is_set: bool) -> str | None:
    if not is_set:
        return 'is not set (export it, or set api_key_env = "" for a server that needs no key)'
    if not key:
        return "is set but empty"
    if key != key.strip() or not key.isprintable():
        return "holds a key with a trailing newline/whitespace or a control character; remove it"
    return None


def build_endpoints(
    tables: Mapping[str, EndpointTable], env: Mapping[str, str], at: At
) -> dict[str, EndpointSpec]:
    """Every ``[endpoints.NAME]`` table, in file order."""
    return {name: build_endpoint(t, name, env, at.key(name)) for name, t in tables.items()}


def build_endpoint(table: EndpointTable, name: str, env: Mapping[str, str], at: At) -> EndpointSpec:
    simulated = table.kind == "simulator"
    key_env = given(table).get("api_key_env", _DEFAULT_KEY_ENV.get(table.kind, ""))
    price = None if isinstance(table.price, UnsetType) else _price(table.price)
    if simulated and price is not None:
        price = _half_for_batches(price)
    retry = {} if isinstance(table.retry, UnsetType) else given(table.retry)
    base_url = SIMULATOR_URL if simulated else _base_url(table, env, at)
    try:
        config = EndpointConfig(
            name=name,
            model=given(table).get("model", "sim-1"),
            kind="anthropic" if table.kind == "anthropic" else "openai",  # simulator: openai
            base_url=base_url,
            api_key=Secret(env.get(key_env, "") if key_env else ""),
            price=FREE if simulated and price is None else price,  # the simulator bills nothing
            retry=RetryPolicy(**retry),
            batch=_batch_policy(table),
            **given(table, *_LIMITS),
        )
    except ConfigError as exc:  # the tables are checked; kept as a safety net
        raise at.error(str(exc)) from None
    key_set = bool(key_env) and key_env in env
    return EndpointSpec(config=config, key_env=key_env, simulated=simulated, at=at, key_set=key_set)


_BATCH_KEYS: Final = {
    "batch": "mode",
    "batch_size": "max_requests",
    "batch_linger_s": "linger_s",
    "batch_poll_s": "poll_s",
    "batch_max_poll_s": "max_poll_s",
    "batch_retries": "retries",
    "batch_fallback": "fallback",
    "batch_max_wait_s": "max_wait_s",
}


def _batch_policy(table: EndpointTable) -> BatchPolicy:
    """The ``batch*`` keys of an endpoint table (``batch_size`` is ``max_requests``)."""
    keys = given(table, *_BATCH_KEYS)
    return BatchPolicy(**{_BATCH_KEYS[k]: v for k, v in keys.items()})


def _half_for_batches(price: Price) -> Price:
    """The simulator bills batches at half its price, as OpenAI and Anthropic do."""
    batch_in = price.batch_input_per_mtok
    batch_out = price.batch_output_per_mtok
    return dataclasses.replace(
        price,
        batch_input_per_mtok=price.input_per_mtok / 2 if batch_in is None else batch_in,
        batch_output_per_mtok=price.output_per_mtok / 2 if batch_out is None else batch_out,
    )


def _base_url(table: EndpointTable, env: Mapping[str, str], at: At) -> str:
    """The table's ``base_url``, else for openai ``$OPENAI_BASE_URL``, else the public API's."""
    if not isinstance(table.base_url, UnsetType):
        return table.base_url
    from_env = env.get("OPENAI_BASE_URL", "").strip() if table.kind == "openai" else ""
    if from_env and not from_env.startswith(("http://", "https://")):
        message = f"expected an http:// or https:// URL, found {show(from_env)}"
        raise at.key("base_url").error(message + " (from $OPENAI_BASE_URL)")
    return from_env or _DEFAULT_URL[table.kind]


def _price(price: Literal["free"] | PriceTable) -> Price:
    """``price = "free"`` or ``price = { input_per_mtok = ..., output_per_mtok = ..., ... }``."""
    return FREE if price == "free" else Price(**given(price), source="config")


# --- budgets and the simulator ------------------------------------------------------------------


def build_caps(table: RunTable | JobTable) -> Caps | None:
    """``budget_usd``/``budget_tokens`` of a table; None when neither is given."""
    caps = given(table, "budget_usd", "budget_tokens")
    return Caps(usd=caps.get("budget_usd"), tokens=caps.get("budget_tokens")) if caps else None


def build_simulator(
    table: SimulatorTable, *, base: Path, seed: int, check_files: bool, at: At
) -> SimConfig:
    """``[simulator]``: an in-process simulator on 127.0.0.1 and a free port."""
    try:
        faults = FaultSpec.parse(table.faults)
    except ValueError as exc:
        raise at.key("faults").error(str(exc)) from None
    return SimConfig(
        seed=given(table).get("seed", seed),
        faults=faults,
        task_paths=_tasks(table.tasks, base, check_files, at.key("tasks")),
        **given(table, "rpm", "tpm", "latency_ms", "latency_sigma", "burst_s", *_SIM_BATCH),
    )


_SIM_BATCH: Final = ("batch_delay_s", "batch_expire_s", "batch_fail_rate", "batch_error_rate")


def _tasks(patterns: tuple[str, ...], base: Path, check_files: bool, at: At) -> tuple[str, ...]:
    paths: list[str] = []
    for i, pattern in enumerate(patterns):
        found = expand(base, pattern) if has_magic(pattern) else [resolve(base, pattern)]
        if check_files and not found:
            raise at.key(i).error(f"no files match {show(str(resolve(base, pattern)))}")
        for path in found:
            if path.suffix.lower() not in _TASK_SUFFIXES:
                at.key(i).fail("a .json (BBH) or .jsonl task file", str(path))
            if check_files:
                check_file(at.key(i), path)
            paths.append(str(path))
    return tuple(paths)


# --- files --------------------------------------------------------------------------------------


def resolve(base: Path, text: str) -> Path:
    """``text`` (``~`` expanded) relative to ``base``, normalized (symlinks are kept)."""
    return Path(os.path.normpath(base / Path(text).expanduser()))


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` is a glob pattern (has ``*``, ``?`` or ``[``)."""
    return _MAGIC.search(pattern) is not None


def expand(base: Path, pattern: str) -> list[Path]:
    """The files matching ``pattern`` (relative to ``base``; ``**`` recurses), sorted."""
    matches = glob.glob(str(resolve(base, pattern)), recursive=True)
    return sorted(Path(m) for m in matches if os.path.isfile(m))


def check_file(at: At, path: Path) -> None:
    if path.is_dir():
        raise at.error(f"expected a file, found a directory: {path}")
    if not path.is_file():
        raise at.error(f"no such file: {path}")
