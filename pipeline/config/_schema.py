"""The run configuration file, declared: one frozen :class:`msgspec.Struct` per TOML table.

msgspec checks every key, type and range of a parsed document against :class:`ConfigFile`
(messages: :mod:`pipeline.config._messages`); a table's ``__post_init__`` checks the rules
between its own keys. What no table can check (references between tables, files, API keys, the
knobs' consistency) is checked where the values are built (:mod:`pipeline.config._sections`,
:mod:`pipeline.config._jobs`). A key left out is ``UNSET``, so the library value's own default
applies. :func:`json_schema` is what ``gpo config schema`` prints, for editors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from pipeline.config._messages import Invalid, show
from pipeline.llm._endpoint import RetryPolicy
from pipeline.tasks._data import Format
from stages.messages import Placement
from stages.schedule import ScheduleKind
from stages.strategy import (
    MAX_TEMPERATURE,
    EvaluationMode,
    HistoryOrder,
    RelevanceBackend,
    Trajectory,
    Update,
)

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
Count = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
Temperature = Annotated[float, Meta(ge=0, le=MAX_TEMPERATURE)]
Text = Annotated[str, Meta(pattern=r"\S", extra={"expected": "a non-empty string"})]
Url = Annotated[str, Meta(pattern=r"^https?://", extra={"expected": "an http:// or https:// URL"})]
EnvName = Annotated[
    str,
    Meta(
        pattern=r"^(?:[A-Za-z_][A-Za-z0-9_]{0,63})?$",
        extra={
            "expected": "the name of the environment variable holding the key (not the key "
            'itself), or "" for no key',
            # Shown instead of the string found: it may be the key itself.
            "conceal": "a string that is not a variable name",
        },
    ),
]
EndpointName = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        extra={"expected": "a name of letters, digits, '_', '-' or '.' (at most 64)"},
    ),
]
EndpointKind = Literal["openai", "anthropic", "simulator"]
BatchMode = Literal["off", "eval", "all"]
BatchFallback = Literal["batch", "realtime"]
Tags = Annotated[
    tuple[Text, Text],
    Meta(
        extra={
            "expected": "two different non-empty tags without surrounding whitespace, e.g. "
            "<START>, <END>"
        }
    ),
]
Preset = Literal["gpo", "opro", "ape", "apo", "pe2", "baseline"]  # stages.strategy.PRESETS
MetricName = Literal[  # "auto" and pipeline.tasks._metrics.BUILTIN_METRICS
    "auto", "exact", "choice", "numeric", "yes_no", "true_false", "word_list", "contains"
]

_RETRY = RetryPolicy()
_TIMEOUT = (
    "Seconds: the least read timeout of a request (default 120, or 300 for a server on a "
    "loopback or private-network host). Each request waits min(max_timeout_s, max(timeout_s, "
    "3 x the p95 latency of the endpoint's last 64 requests)); a timed-out request counts as a "
    "latency of its wait."
)
_MAX_TIMEOUT = (
    "Seconds: the most read timeout of a request, however slow the endpoint gets (default 600, "
    "never below timeout_s). Equal to timeout_s: a fixed timeout."
)
_SUPPORTS_N = (
    "false: ask for one choice per request instead of n at once (Ollama, servers that ignore "
    "n). An endpoint that answers n with a 400 naming n (llama.cpp's server with fewer slots "
    "than n) is switched to this by itself, once."
)


class Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A TOML table: frozen, and a key it does not declare is an error."""


def given(table: msgspec.Struct, *names: str) -> dict[str, Any]:
    """The keys of ``table`` (all, or ``names``) that the file sets."""
    names = names or table.__struct_fields__
    return {n: getattr(table, n) for n in names if getattr(table, n) is not UNSET}


class RunTable(Table, frozen=True, kw_only=True):
    """``[run]``: the run directory (relative to the file), the seed, caps and concurrency."""

    dir: Text | UnsetType = UNSET
    seed: int = 0
    budget_usd: NonNegative | UnsetType = UNSET
    budget_tokens: NonNegativeInt | UnsetType = UNSET
    max_active_jobs: Count | UnsetType = UNSET
    call_workers: Count | UnsetType = UNSET
    coordination: Text | UnsetType = UNSET  # "local" or "redis://HOST:PORT/DB" (GPO_REDIS_URL)
    budget_scope: Text | UnsetType = UNSET  # the shared account the run's caps apply to


class SimulatorTable(Table, frozen=True, kw_only=True):
    """``[simulator]``: the in-process simulator that endpoints of kind "simulator" call."""

    seed: int | UnsetType = UNSET  # default: [run].seed
    rpm: Positive | UnsetType = UNSET
    tpm: Positive | UnsetType = UNSET
    latency_ms: NonNegative | UnsetType = UNSET
    latency_sigma: NonNegative | UnsetType = UNSET
    burst_s: Positive | UnsetType = UNSET
    faults: str = ""  # e.g. "429=0.02,500=0.01"
    batch_delay_s: NonNegative | UnsetType = UNSET  # a batch's time to complete (batch APIs)
    batch_expire_s: Positive | UnsetType = UNSET
    batch_fail_rate: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    batch_error_rate: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    tasks: tuple[Text, ...] = ()  # task files or globs, relative to the config file


class PriceTable(Table, frozen=True, kw_only=True):
    """An endpoint's price in USD per million tokens."""

    input_per_mtok: NonNegative = 0.0
    output_per_mtok: NonNegative = 0.0
    cached_input_per_mtok: NonNegative | UnsetType = UNSET
    batch_input_per_mtok: NonNegative | UnsetType = UNSET
    batch_output_per_mtok: NonNegative | UnsetType = UNSET


Pricing = Annotated[
    Literal["free"] | PriceTable,
    Meta(extra={"expected": '"free" or a table { input_per_mtok = ..., output_per_mtok = ... }'}),
]


class RetryTable(Table, frozen=True, kw_only=True):
    """An endpoint's retries: attempts, and capped exponential backoff in seconds."""

    max_attempts: Count | UnsetType = UNSET
    base_s: NonNegative | UnsetType = UNSET
    cap_s: NonNegative | UnsetType = UNSET
    retry_after_cap_s: NonNegative | UnsetType = UNSET

    def __post_init__(self) -> None:
        base = _RETRY.base_s if isinstance(self.base_s, UnsetType) else self.base_s
        cap = _RETRY.cap_s if isinstance(self.cap_s, UnsetType) else self.cap_s
        if cap < base and not isinstance(self.cap_s, UnsetType):
            raise Invalid("cap_s", f"expected a number >= base_s ({base:g}), found {show(cap)}")
        if cap < base:
            raise Invalid("base_s", f"expected a number <= cap_s ({cap:g}), found {show(base)}")


class EndpointTable(Table, frozen=True, kw_only=True):
    """``[endpoints.NAME]``: a model endpoint."""

    kind: EndpointKind = "openai"
    model: Text | UnsetType = UNSET  # required but for the simulator ("sim-1")
    base_url: Url | UnsetType = UNSET  # openai: $OPENAI_BASE_URL, else the public API
    api_key_env: EnvName | UnsetType = UNSET  # default OPENAI_API_KEY or ANTHROPIC_API_KEY
    rpm: Positive | UnsetType = UNSET
    tpm: Positive | UnsetType = UNSET
    max_in_flight: Count | UnsetType = UNSET
    timeout_s: Annotated[Positive, Meta(description=_TIMEOUT)] | UnsetType = UNSET
    max_timeout_s: Annotated[Positive, Meta(description=_MAX_TIMEOUT)] | UnsetType = UNSET
    connect_timeout_s: Positive | UnsetType = UNSET
    supports_n: Annotated[bool, Meta(description=_SUPPORTS_N)] | UnsetType = UNSET
    default_max_tokens: Count | UnsetType = UNSET
    price: Pricing | UnsetType = UNSET
    retry: RetryTable | UnsetType = UNSET
    anthropic_version: Text | UnsetType = UNSET
    batch: BatchMode | UnsetType = UNSET  # the provider's batch API: pipeline.BatchPolicy
    batch_size: Count | UnsetType = UNSET
    batch_linger_s: NonNegative | UnsetType = UNSET
    batch_poll_s: Positive | UnsetType = UNSET
    batch_max_poll_s: Positive | UnsetType = UNSET
    batch_retries: NonNegativeInt | UnsetType = UNSET
    batch_fallback: BatchFallback | UnsetType = UNSET
    batch_max_wait_s: Positive | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.kind != "simulator" and isinstance(self.model, UnsetType):
            raise Invalid(
                "model", "expected a non-empty string, found nothing (the key is required)"
            )
        if self.kind == "simulator" and not isinstance(self.base_url, UnsetType):
            message = "expected no base_url for a simulator endpoint (it is filled in when the "
            raise Invalid("base_url", message + "simulator starts)")
        if self.kind != "anthropic" and not isinstance(self.anthropic_version, UnsetType):
            raise Invalid("anthropic_version", f'expected no such key for kind = "{self.kind}"')
        low, high = self.timeout_s, self.max_timeout_s
        if not isinstance(low, UnsetType) and not isinstance(high, UnsetType) and high < low:
            message = f"expected a number >= timeout_s ({low:g}), found {show(high)}"
            raise Invalid("max_timeout_s", message)


class Knobs(Table, frozen=True, kw_only=True):
    """The strategy's knobs (see stages.strategy.Strategy); unset ones are the preset's."""

    trajectory: Trajectory | UnsetType = UNSET
    k: Count | UnsetType = UNSET
    history_order: HistoryOrder | UnsetType = UNSET
    reflection: bool | UnsetType = UNSET
    reflection_errors: Count | UnsetType = UNSET
    update: Update | UnsetType = UNSET
    schedule: ScheduleKind | UnsetType = UNSET
    budget_start: Count | UnsetType = UNSET
    budget_end: Count | UnsetType = UNSET
    warmup_steps: NonNegativeInt | UnsetType = UNSET
    candidates: Count | UnsetType = UNSET
    epochs: Count | UnsetType = UNSET
    batch_size: Count | UnsetType = UNSET
    optimizer_temperature: Temperature | UnsetType = UNSET
    scorer_temperature: Temperature | UnsetType = UNSET
    exemplars: NonNegativeInt | UnsetType = UNSET
    reject_over_budget: bool | UnsetType = UNSET
    max_reasks: NonNegativeInt | UnsetType = UNSET
    relevance_backend: RelevanceBackend | UnsetType = UNSET
    optimize: bool | UnsetType = UNSET
    output_tags: Tags | UnsetType = UNSET
    evaluation: EvaluationMode | UnsetType = UNSET
    racing_rounds: Annotated[int, Meta(ge=2)] | UnsetType = UNSET
    racing_z: Positive | UnsetType = UNSET


class OptimizerTable(Knobs, frozen=True, kw_only=True):
    """``[optimizer]``: the preset, its knobs, the jobs' default endpoints and max tokens."""

    preset: Preset = "gpo"
    task_endpoint: Text | UnsetType = UNSET
    optimizer_endpoint: Text | UnsetType = UNSET
    embedding_endpoint: Text | UnsetType = UNSET
    scorer_max_tokens: Count | UnsetType = UNSET
    optimizer_max_tokens: Count | UnsetType = UNSET


class JobTable(Table, frozen=True, kw_only=True):
    """``[[jobs]]``: a prompt to optimize on a data file, a built-in task, or a glob of files."""

    name: Text | UnsetType = UNSET  # default: the data file's stem
    data: Text | UnsetType = UNSET  # a file, or "builtin:NAME"
    glob: Text | UnsetType = UNSET  # instead of data: one job per file, named by its stem
    format: Format | UnsetType = UNSET
    input_field: Text | UnsetType = UNSET
    target_field: Text | UnsetType = UNSET
    metric: MetricName | UnsetType = UNSET
    initial_prompt: str | UnsetType = UNSET
    placement: Placement | UnsetType = UNSET
    dev_size: Count | UnsetType = UNSET
    test_size: NonNegativeInt | UnsetType = UNSET
    small_splits: bool | UnsetType = UNSET
    budget_usd: NonNegative | UnsetType = UNSET
    budget_tokens: NonNegativeInt | UnsetType = UNSET
    task_endpoint: Text | UnsetType = UNSET
    optimizer_endpoint: Text | UnsetType = UNSET
    embedding_endpoint: Text | UnsetType = UNSET
    preset: Preset | UnsetType = UNSET
    strategy: Knobs | UnsetType = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.glob, UnsetType) and isinstance(self.data, UnsetType):
            raise Invalid(None, "expected a data or a glob key, found neither")
        clash = {} if isinstance(self.glob, UnsetType) else given(self, "data", "name")
        if clash:
            key, value = next(iter(clash.items()))
            message = "expected no data or name with glob (each file is a job named after it)"
            raise Invalid(key, f"{message}, found {show(value)}")


class ConfigFile(Table, frozen=True, kw_only=True):
    """A gpo run configuration (``gpo run CONFIG``)."""

    run: RunTable = msgspec.field(default_factory=RunTable)
    simulator: SimulatorTable = msgspec.field(default_factory=SimulatorTable)
    endpoints: Annotated[dict[EndpointName, EndpointTable], Meta(min_length=1)]
    optimizer: OptimizerTable = msgspec.field(default_factory=OptimizerTable)
    jobs: Annotated[tuple[JobTable, ...], Meta(min_length=1)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors (``gpo config schema``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gpo run configuration",
        **msgspec.json.schema(ConfigFile),
    }
