"""Sections of the run configuration that build the library's frozen values.

``[endpoints.NAME]`` becomes an :class:`~pipeline.EndpointConfig` (its API key read from
the environment into a :class:`~pipeline.llm._secret.Secret`), ``[simulator]`` a
:class:`~pipeline.sim.server.SimConfig`, ``budget_usd``/``budget_tokens`` a
:class:`~pipeline.Caps`. Every problem is one :class:`~pipeline.errors.ConfigError` naming
the file and the key path (see :mod:`pipeline.config._schema`).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pipeline.config._schema import Node, show
from pipeline.errors import ConfigError
from pipeline.llm._budget import Caps
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._pricing import FREE, Price
from pipeline.llm._secret import Secret
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig

BUILTIN_PREFIX: Final = "builtin:"
"""``data = "builtin:NAME"`` names a built-in synthetic task of the simulator."""
ENDPOINT_KINDS: Final = ("openai", "anthropic", "simulator")
SIMULATOR_URL: Final = "http://simulator.invalid/v1"
"""Placeholder base URL of simulator endpoints until the simulator listens (see
:func:`pipeline.config._load.with_simulator_url`)."""

_DEFAULT_URL: Final = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
_DEFAULT_KEY_ENV: Final = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_ENDPOINT_KEYS: Final = (
    "kind",
    "model",
    "base_url",
    "api_key_env",
    "rpm",
    "tpm",
    "max_in_flight",
    "timeout_s",
    "connect_timeout_s",
    "supports_n",
    "default_max_tokens",
    "price",
    "retry",
    "anthropic_version",
)
_SIMULATOR_KEYS: Final = (
    "seed",
    "rpm",
    "tpm",
    "latency_ms",
    "latency_sigma",
    "burst_s",
    "faults",
    "tasks",
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TASK_SUFFIXES = (".json", ".jsonl")
_MAGIC = re.compile(r"[*?[]")
_ABSENT: Final = object()


# --- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A parsed endpoint, with what is needed to check its key once we know it is used."""

    config: EndpointConfig
    key_env: str  # "" = the endpoint needs no key
    simulated: bool
    node: Node
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
            raise self.node.error(
                "api_key_env", f"the environment variable {self.key_env} {problem}"
            )


def _key_problem(key: str, *, is_set: bool) -> str | None:
    if not is_set:
        return 'is not set (export it, or set api_key_env = "" for a server that needs no key)'
    if not key:
        return "is set but empty"
    if key != key.strip() or not key.isprintable():
        return "holds a key with a trailing newline/whitespace or a control character; remove it"
    return None


def parse_endpoints(node: Node, env: Mapping[str, str]) -> dict[str, EndpointSpec]:
    """Every ``[endpoints.NAME]`` table, in file order; at least one is required."""
    if not node.data:
        raise node.error(None, "expected at least one [endpoints.NAME] table, found none")
    specs = {}
    for name in node.data:
        if not _ENDPOINT_NAME.match(name):
            expected = "a name of letters, digits, '_', '-' or '.' (at most 64)"
            raise node.error(name, f"expected {expected}, found {show(name)}")
        specs[name] = parse_endpoint(node.table(name), name, env)
    return specs


def parse_endpoint(node: Node, name: str, env: Mapping[str, str]) -> EndpointSpec:
    node.only(_ENDPOINT_KEYS)
    kind = node.choice("kind", ENDPOINT_KINDS, "openai")
    simulated = kind == "simulator"
    model = (
        node.string("model", "sim-1", empty=False) if simulated else node.required_string("model")
    )
    if node.has("anthropic_version") and kind != "anthropic":
        raise node.error("anthropic_version", f'expected no such key for kind = "{kind}"')
    key_env = _key_env(node, kind)
    values = {
        "kind": "openai" if simulated else kind,
        "base_url": _base_url(node, kind, env),
        "api_key": Secret(env.get(key_env, "") if key_env else ""),
        **({"price": FREE} if simulated else {}),  # the simulator bills nothing
        **_limits(node),
    }
    try:
        config = EndpointConfig(name=name, model=model, **values)
    except ConfigError as exc:  # already checked above; kept as a safety net
        raise node.error(None, str(exc)) from None
    key_set = bool(key_env) and key_env in env
    return EndpointSpec(
        config=config, key_env=key_env, simulated=simulated, node=node, key_set=key_set
    )


def _limits(node: Node) -> dict[str, Any]:
    values: dict[str, Any] = {
        "rpm": node.number("rpm", _ABSENT, strict=True),
        "tpm": node.number("tpm", _ABSENT, strict=True),
        "max_in_flight": node.integer("max_in_flight", _ABSENT, minimum=1),
        "timeout_s": node.number("timeout_s", _ABSENT, strict=True),
        "connect_timeout_s": node.number("connect_timeout_s", _ABSENT, strict=True),
        "supports_n": node.boolean("supports_n", _ABSENT),
        "default_max_tokens": node.integer("default_max_tokens", _ABSENT, minimum=1),
        "anthropic_version": node.string("anthropic_version", _ABSENT, empty=False),
        "price": _price(node) if node.has("price") else _ABSENT,
        "retry": _retry(node.table("retry")) if node.has("retry") else _ABSENT,
    }
    return present(values)


def _base_url(node: Node, kind: str, env: Mapping[str, str]) -> str:
    if kind == "simulator":
        if node.has("base_url"):
            raise node.error(
                "base_url",
                "expected no base_url for a simulator endpoint (it is "
                "filled in when the simulator starts)",
            )
        return SIMULATOR_URL
    url = node.string("base_url", None, empty=False)
    origin = ""
    if url is None:
        from_env = env.get("OPENAI_BASE_URL", "").strip() if kind == "openai" else ""
        origin = " (from $OPENAI_BASE_URL)" if from_env else ""
        url = from_env or _DEFAULT_URL[kind]
    if not url.startswith(("http://", "https://")):
        raise node.error(
            "base_url", f"expected an http:// or https:// URL, found {show(url)}{origin}"
        )
    return url


def _key_env(node: Node, kind: str) -> str:
    name = node.string("api_key_env", _DEFAULT_KEY_ENV.get(kind, ""))
    if name and not _ENV_NAME.match(name):
        # Never echo it: a string that is not a variable name may be the key itself.
        raise node.error(
            "api_key_env",
            "expected the name of the environment variable holding the key (not the key "
            'itself), or "" for no key, found a string that is not a variable name',
        )
    return name


_PRICE_KEYS: Final = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "batch_input_per_mtok",
    "batch_output_per_mtok",
)


def _price(endpoint: Node) -> Price:
    """``price = "free"`` or ``price = { input_per_mtok = ..., output_per_mtok = ..., ... }``."""
    raw = endpoint.data["price"]
    if raw == "free":
        return FREE
    if not isinstance(raw, dict):
        endpoint.fail(
            "price", '"free" or a table { input_per_mtok = ..., output_per_mtok = ... }', raw
        )
    node = endpoint.table("price")
    node.only(_PRICE_KEYS)
    rate = {key: node.number(key, None) for key in _PRICE_KEYS}
    return Price(
        input_per_mtok=rate["input_per_mtok"] or 0.0,
        output_per_mtok=rate["output_per_mtok"] or 0.0,
        cached_input_per_mtok=rate["cached_input_per_mtok"],
        batch_input_per_mtok=rate["batch_input_per_mtok"],
        batch_output_per_mtok=rate["batch_output_per_mtok"],
        source="config",
    )


def _retry(node: Node) -> RetryPolicy:
    node.only(("max_attempts", "base_s", "cap_s", "retry_after_cap_s"))
    values = present(
        {
            "max_attempts": node.integer("max_attempts", _ABSENT, minimum=1),
            "base_s": node.number("base_s", _ABSENT),
            "cap_s": node.number("cap_s", _ABSENT),
            "retry_after_cap_s": node.number("retry_after_cap_s", _ABSENT),
        }
    )
    base_s = values.get("base_s", RetryPolicy().base_s)
    if values.get("cap_s", RetryPolicy().cap_s) < base_s:
        node.fail("cap_s", f"a number >= base_s ({base_s:g})", node.data["cap_s"])
    return RetryPolicy(**values)


# --- budgets ------------------------------------------------------------------------------------


def parse_caps(node: Node) -> Caps | None:
    """``budget_usd``/``budget_tokens`` of a table; None when neither is given."""
    usd = node.number("budget_usd", None)
    tokens = node.integer("budget_tokens", None, minimum=0)
    return None if usd is None and tokens is None else Caps(usd=usd, tokens=tokens)


# --- simulator ----------------------------------------------------------------------------------


def parse_simulator(node: Node, *, base: Path, seed: int, check_files: bool) -> SimConfig:
    """``[simulator]``: an in-process simulator on 127.0.0.1 and a free port."""
    node.only(_SIMULATOR_KEYS)
    values = present(
        {
            "rpm": node.number("rpm", _ABSENT, strict=True),
            "tpm": node.number("tpm", _ABSENT, strict=True),
            "latency_ms": node.number("latency_ms", _ABSENT),
            "latency_sigma": node.number("latency_sigma", _ABSENT),
            "burst_s": node.number("burst_s", _ABSENT, strict=True),
        }
    )
    return SimConfig(
        seed=node.integer("seed", seed),
        faults=_faults(node),
        task_paths=_tasks(node, base, check_files),
        **values,
    )


def _faults(node: Node) -> FaultSpec:
    try:
        return FaultSpec.parse(node.string("faults", ""))
    except ValueError as exc:
        raise node.error("faults", str(exc)) from None


def _tasks(node: Node, base: Path, check_files: bool) -> tuple[str, ...]:
    paths: list[str] = []
    for i, pattern in enumerate(node.strings("tasks")):
        key = f"tasks[{i}]"
        found = expand(base, pattern) if has_magic(pattern) else [resolve(base, pattern)]
        if check_files and not found:
            raise node.error(key, f"no files match {show(str(resolve(base, pattern)))}")
        for path in found:
            if path.suffix.lower() not in _TASK_SUFFIXES:
                node.fail(key, "a .json (BBH) or .jsonl task file", str(path))
            if check_files:
                check_file(node, key, path)
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


def check_file(node: Node, key: str, path: Path) -> None:
    if path.is_dir():
        raise node.error(key, f"expected a file, found a directory: {path}")
    if not path.is_file():
        raise node.error(key, f"no such file: {path}")


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the absent ones, so the dataclasses' own defaults apply."""
    return {k: v for k, v in values.items() if v is not _ABSENT}
