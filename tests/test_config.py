"""The run configuration (TOML): validation messages, defaults, paths, jobs, digests, examples."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config._load import (
    SIMULATOR_URL,
    RunConfig,
    build_jobs,
    config_digest,
    diff_digests,
    load_config,
    with_simulator_url,
)
from pipeline.errors import ConfigError
from pipeline.llm._budget import Budget
from pipeline.llm._gateway import open_gateway
from pipeline.runner._run import optimize
from pipeline.sim.server import open_simulator
from pipeline.sim.tasks import builtin_tasks
from pipeline.tasks._data import Example
from stages.strategy import strategy

SECRET = "sk-test-Secret-Value-0123456789"
ANTHROPIC_SECRET = "sk-ant-test-Secret-Value-987654"
ENV = {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = "dev_size = 4\ntest_size = 4"  # splits that fit data.jsonl's 12 examples


def doc(*, endpoint: str = "", optimizer: str = "", job: str = "", extra: str = "") -> str:
    """A valid config (one OpenAI endpoint, one job on data.jsonl) with lines added."""
    return (
        f'{extra}\n[endpoints.openai]\nmodel = "gpt-4o-mini"\n{endpoint}\n'
        f'[optimizer]\n{optimizer}\n[[jobs]]\ndata = "data.jsonl"\n{job}\n'
    )


def write_data(path: Path, n: int = 12, answer: str = "yes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"input": f"Question {i}?", "target": answer}) for i in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> RunConfig:
    write_data(tmp_path / "data.jsonl")
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=ENV if env is None else env)


# --- malformed configs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    expected: tuple[str, ...]
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))


SIM_ONLY = '[endpoints.sim]\nkind = "simulator"\n[[jobs]]\ndata = "builtin:arithmetic"\n'
TWO_ENDPOINTS = '[endpoints.b]\nmodel = "gpt-4o"\n'
BAD = [
    Bad(
        "toml",
        doc(optimizer="candidates = = 3"),
        ("line 6: invalid TOML: Invalid value (column 14)",),
    ),
    Bad("top-level key", doc(extra="[runn]\nseed = 1"), ("unknown key runn (did you mean run?)",)),
    Bad("run key", doc(extra="[run]\nsede = 1"), ("unknown key run.sede (did you mean seed?)",)),
    Bad("endpoint key", doc(endpoint="rmp = 5"), ("unknown key endpoints.openai.rmp", "rpm?")),
    Bad(
        "knob typo",
        doc(optimizer="candidate = 4"),
        ("unknown key optimizer.candidate (did you mean candidates?)",),
    ),
    Bad("job key", doc(job="dev = 4"), ("unknown key jobs[0].dev",)),
    Bad("simulator key", doc(extra="[simulator]\nlatency = 5"), ("unknown key simulator.latency",)),
    Bad(
        "price key",
        doc(endpoint="price = { input = 1.0 }"),
        ("unknown key endpoints.openai.price.input",),
    ),
    Bad(
        "job strategy knob",
        doc(job="strategy = { candidatez = 2 }"),
        ("unknown key jobs[0].strategy.candidatez (did you mean candidates?)",),
    ),
    Bad(
        "string for number",
        doc(endpoint='rpm = "fast"'),
        ('endpoints.openai.rpm: expected a number > 0, found "fast"',),
    ),
    Bad(
        "bool for integer",
        doc(endpoint="max_in_flight = true"),
        ("endpoints.openai.max_in_flight: expected an integer >= 1, found true",),
    ),
    Bad(
        "bool seed", doc(extra="[run]\nseed = true"), ("run.seed: expected an integer, found true",)
    ),
    Bad(
        "bool knob",
        doc(optimizer="scorer_temperature = true"),
        ("optimizer.scorer_temperature: expected a number",),
    ),
    Bad(
        "missing dataset",
        doc().replace("data.jsonl", "missing.jsonl"),
        ("jobs[0].data: no such file: ", "missing.jsonl"),
    ),
    Bad(
        "empty glob",
        doc().replace('data = "data.jsonl"', 'glob = "nothing/*.json"'),
        ("jobs[0].glob: no files match", "nothing/*.json"),
    ),
    Bad(
        "glob with data",
        doc(job='glob = "*.jsonl"'),
        ("jobs[0].data: expected no data or name with glob",),
    ),
    Bad(
        "no data",
        doc().replace('data = "data.jsonl"', 'name = "x"'),
        ("jobs[0]: expected a data or a glob key, found neither",),
    ),
    Bad(
        "unknown builtin",
        doc().replace("data.jsonl", "builtin:sudoku"),
        (
            "jobs[0].data: expected a file or builtin:NAME with NAME one of arithmetic",
            '"builtin:sudoku"',
        ),
    ),
    Bad(
        "unknown metric",
        doc(job='metric = "f1"'),
        ("jobs[0].metric: expected one of auto, exact, choice", 'found "f1"'),
    ),
    Bad("bad format", doc(job='format = "xml"'), ("jobs[0].format: expected one of auto, bbh",)),
    Bad(
        "bad placement",
        doc(job='placement = "middle"'),
        ('jobs[0].placement: expected one of after, before, system, found "middle"',),
    ),
    Bad(
        "negative dev_size",
        doc(job="dev_size = -5"),
        ("jobs[0].dev_size: expected an integer >= 1, found -5",),
    ),
    Bad(
        "negative test_size",
        doc(job="test_size = -1"),
        ("jobs[0].test_size: expected an integer >= 0, found -1",),
    ),
    Bad(
        "unknown preset",
        doc(optimizer='preset = "gradient"'),
        ('optimizer.preset: expected one of gpo, opro, ape, apo, pe2, baseline, found "gradient"',),
    ),
    Bad(
        "bad knob value",
        doc(optimizer="candidates = 0"),
        ("optimizer.candidates: expected an integer >= 1, found 0",),
    ),
    Bad(
        "bad knob choice",
        doc(optimizer='schedule = "sawtooth"'),
        ('optimizer.schedule: expected one of none, fixed, linear, cosine, found "sawtooth"',),
    ),
    Bad(
        "inconsistent knobs",
        doc(optimizer="budget_start = 5\nbudget_end = 20"),
        ("optimizer.budget_end: expected at most budget_start (5), found 20",),
    ),
    Bad(
        "missing API key",
        doc(),
        ("endpoints.openai.api_key_env: the environment variable OPENAI_API_KEY is not set",),
        env={"ANTHROPIC_API_KEY": ANTHROPIC_SECRET},
    ),
    Bad(
        "empty API key",
        doc(),
        ("endpoints.openai.api_key_env: the environment variable OPENAI_API_KEY is set but empty",),
        env={**ENV, "OPENAI_API_KEY": ""},
    ),
    *(
        Bad(
            f"API key with {what}",
            doc(),
            (
                "endpoints.openai.api_key_env: the environment variable OPENAI_API_KEY holds a "
                "key with a trailing newline/whitespace or a control character; remove it",
            ),
            env={**ENV, "OPENAI_API_KEY": key},
        )
        for what, key in (
            ("a trailing newline", SECRET + "\n"),
            ("a trailing CRLF", SECRET + "\r\n"),
            ("a leading space", " " + SECRET),
            ("only whitespace", "  "),
            ("a tab inside", SECRET[:8] + "\t" + SECRET[8:]),
            ("an escape character", SECRET + "\x1b"),
            ("a zero-width space", SECRET + "\u200b"),
        )
    ),
    Bad(
        "key instead of variable name",
        doc(endpoint=f'api_key_env = "{SECRET}"'),
        ("endpoints.openai.api_key_env: expected the name of the environment variable",),
    ),
    Bad(
        "unknown endpoint in job",
        doc(job='task_endpoint = "gpt"'),
        ('jobs[0].task_endpoint: expected the name of an endpoint (openai), found "gpt"',),
    ),
    Bad(
        "unknown endpoint in optimizer",
        doc(optimizer='optimizer_endpoint = "claude"'),
        (
            "optimizer.optimizer_endpoint: expected the name of an endpoint (openai), "
            'found "claude"',
        ),
    ),
    Bad(
        "ambiguous task endpoint",
        doc(extra=TWO_ENDPOINTS),
        ("jobs[0].task_endpoint: expected the name of an endpoint (b, openai)",),
    ),
    Bad(
        "anthropic embeddings",
        doc(extra='[endpoints.claude]\nkind = "anthropic"\nmodel = "claude-haiku-4-5"')
        + 'task_endpoint = "openai"\nembedding_endpoint = "claude"',
        ("jobs[0].embedding_endpoint: expected an endpoint that serves embeddings", "anthropic"),
    ),
    Bad(
        "duplicate job names",
        doc() + '[[jobs]]\ndata = "data.jsonl"\n',
        ('jobs[1]: expected a unique job name, found "data" again (first in jobs[0])',),
    ),
    Bad("no jobs", '[endpoints.openai]\nmodel = "m"\n', ("expected at least one [[jobs]] table",)),
    Bad("no endpoints", '[[jobs]]\ndata = "data.jsonl"\n', ("endpoints: expected at least one",)),
    Bad(
        "jobs not tables",
        "jobs = 3\n" + doc().split("[[jobs]]")[0],
        ("jobs: expected an array of tables ([[jobs]]), found 3",),
    ),
    Bad(
        "endpoint not a table",
        '[endpoints]\nopenai = "gpt-4o"\n[[jobs]]\ndata = "data.jsonl"\n',
        ('endpoints.openai: expected a table, found "gpt-4o"',),
    ),
    Bad(
        "bad price",
        doc(endpoint="price = { input_per_mtok = -1, output_per_mtok = 0.6 }"),
        ("endpoints.openai.price.input_per_mtok: expected a number >= 0, found -1",),
    ),
    Bad(
        "bad retry",
        doc(endpoint="retry = { base_s = 2.0, cap_s = 1.0 }"),
        ("endpoints.openai.retry.cap_s: expected a number >= base_s (2), found 1.0",),
    ),
    Bad(
        "bad kind",
        doc(endpoint='kind = "azure"'),
        ('endpoints.openai.kind: expected one of openai, anthropic, simulator, found "azure"',),
    ),
    Bad(
        "missing model",
        '[endpoints.openai]\nrpm = 5\n[[jobs]]\ndata = "data.jsonl"\n',
        ("endpoints.openai.model: expected a non-empty string, found nothing",),
    ),
    Bad(
        "bad base_url",
        doc(endpoint='base_url = "localhost:8000"'),
        ('endpoints.openai.base_url: expected an http:// or https:// URL, found "localhost:8000"',),
    ),
    Bad(
        "bad OPENAI_BASE_URL",
        doc(),
        ("endpoints.openai.base_url: expected an http", "(from $OPENAI_BASE_URL)"),
        env={**ENV, "OPENAI_BASE_URL": "api.example.com"},
    ),
    Bad(
        "bad faults",
        SIM_ONLY + '[simulator]\nfaults = "429=2"',
        ("simulator.faults: fault spec item '429=2'",),
    ),
    Bad(
        "missing simulator task",
        SIM_ONLY + '[simulator]\ntasks = ["nope.json"]',
        ("simulator.tasks[0]: no such file: ", "nope.json"),
    ),
    Bad(
        "simulator base_url",
        SIM_ONLY.replace('"simulator"', '"simulator"\nbase_url = "http://x/v1"'),
        ("endpoints.sim.base_url: expected no base_url for a simulator endpoint",),
    ),
    Bad(
        "negative budget",
        doc(extra="[run]\nbudget_usd = -1"),
        ("run.budget_usd: expected a number >= 0, found -1",),
    ),
    Bad(
        "bool budget",
        doc(job="budget_tokens = false"),
        ("jobs[0].budget_tokens: expected an integer >= 0, found false",),
    ),
    Bad(
        "string small_splits",
        doc(job='small_splits = "yes"'),
        ('jobs[0].small_splits: expected true or false, found "yes"',),
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_a_malformed_config_raises_one_message_naming_file_and_key(
    tmp_path: Path, case: Bad
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, case.text, env=case.env)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'run.toml'}: ")
    for part in case.expected:
        assert part in message
    assert SECRET not in message
    assert ANTHROPIC_SECRET not in message
    assert caught.value.__cause__ is None or isinstance(caught.value.__cause__, ConfigError)


def test_there_are_at_least_twenty_malformed_cases() -> None:
    assert len(BAD) >= 20


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the config file"):
        load_config(tmp_path / "nope.toml", env=ENV)


def test_an_invalid_utf8_config_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(b"[run]\nseed = 1\n# \xff\n")
    with pytest.raises(ConfigError, match=r"run\.toml: line 3: expected UTF-8 text"):
        load_config(path, env=ENV)


# --- endpoints and keys -----------------------------------------------------------------------


def test_openai_defaults_come_from_the_environment(tmp_path: Path) -> None:
    env = {**ENV, "OPENAI_BASE_URL": "https://proxy.example/v1"}
    endpoint = load(tmp_path, doc(), env=env).endpoint("openai")
    assert endpoint.kind == "openai"
    assert endpoint.base_url == "https://proxy.example/v1"
    assert endpoint.api_key.reveal() == SECRET


def test_openai_base_url_defaults_to_the_public_api(tmp_path: Path) -> None:
    endpoint = load(tmp_path, doc()).endpoint("openai")
    assert endpoint.base_url == "https://api.openai.com/v1"


def test_anthropic_defaults(tmp_path: Path) -> None:
    text = doc(endpoint='kind = "anthropic"', optimizer="")
    endpoint = load(tmp_path, text).endpoint("openai")
    assert endpoint.kind == "anthropic"
    assert endpoint.base_url == "https://api.anthropic.com/v1"
    assert endpoint.api_key.reveal() == ANTHROPIC_SECRET


def test_a_named_key_variable_is_read(tmp_path: Path) -> None:
    text = doc(endpoint='api_key_env = "MY_KEY"')
    endpoint = load(tmp_path, text, env={"MY_KEY": "k-123"}).endpoint("openai")
    assert endpoint.api_key.reveal() == "k-123"


def test_an_empty_key_variable_means_no_key(tmp_path: Path) -> None:
    text = doc(endpoint='base_url = "http://localhost:8000/v1"\napi_key_env = ""')
    endpoint = load(tmp_path, text, env={}).endpoint("openai")
    assert not endpoint.api_key


def test_an_unused_endpoint_needs_no_key(tmp_path: Path) -> None:
    text = doc(extra='[endpoints.claude]\nkind = "anthropic"\nmodel = "claude-haiku-4-5"')
    config = load(tmp_path, text + 'task_endpoint = "openai"', env={"OPENAI_API_KEY": "k"})
    assert not config.endpoint("claude").api_key


def test_keys_may_be_left_unchecked(tmp_path: Path) -> None:
    write_data(tmp_path / "data.jsonl")
    (tmp_path / "run.toml").write_text(doc(), encoding="utf-8")
    config = load_config(tmp_path / "run.toml", env={}, require_keys=False)
    assert not config.endpoint("openai").api_key


def test_the_key_never_shows_in_reprs_or_digests(tmp_path: Path) -> None:
    config = load(tmp_path, doc())
    assert SECRET not in repr(config)
    assert SECRET not in json.dumps(config_digest(config))


def test_endpoint_settings_reach_the_endpoint(tmp_path: Path) -> None:
    lines = [
        "rpm = 500",
        "tpm = 200000",
        "max_in_flight = 8",
        "timeout_s = 30",
        "supports_n = false",
        "default_max_tokens = 256",
        "price = { input_per_mtok = 1, output_per_mtok = 2 }",
        "retry = { max_attempts = 3, base_s = 0.1, cap_s = 1 }",
    ]
    endpoint = load(tmp_path, doc(endpoint="\n".join(lines))).endpoint("openai")
    assert (endpoint.rpm, endpoint.tpm, endpoint.max_in_flight) == (500, 200000, 8)
    assert (endpoint.timeout_s, endpoint.supports_n, endpoint.default_max_tokens) == (
        30,
        False,
        256,
    )
    price = endpoint.effective_price
    assert price is not None
    assert (price.input_per_mtok, price.output_per_mtok) == (1, 2)
    assert (endpoint.retry.max_attempts, endpoint.retry.cap_s) == (3, 1.0)


# --- simulator --------------------------------------------------------------------------------


def test_simulator_endpoints_get_a_placeholder_until_the_simulator_listens(tmp_path: Path) -> None:
    text = SIM_ONLY + '[endpoints.openai]\nmodel = "m"\napi_key_env = ""\n'
    config = load(tmp_path, text + '[optimizer]\ntask_endpoint = "sim"\n', env={})
    assert config.simulated == frozenset({"sim"})
    assert config.endpoint("sim").base_url == SIMULATOR_URL
    assert config.endpoint("sim").model == "sim-1"
    started = with_simulator_url(config, "http://127.0.0.1:5555/v1")
    assert started.endpoint("sim").base_url == "http://127.0.0.1:5555/v1"
    assert started.endpoint("openai").base_url == "https://api.openai.com/v1"


def test_the_simulator_defaults_to_the_run_seed(tmp_path: Path) -> None:
    config = load(tmp_path, "[run]\nseed = 7\n" + SIM_ONLY, env={})
    assert config.simulator is not None
    assert (config.simulator.seed, config.simulator.host, config.simulator.port) == (
        7,
        "127.0.0.1",
        0,
    )


def test_no_simulator_without_simulator_endpoints(tmp_path: Path) -> None:
    config = load(tmp_path, doc(extra="[simulator]\nlatency_ms = 5"))
    assert config.simulator is None
    assert config.simulated == frozenset()


def test_simulator_settings_and_task_globs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_data(tmp_path / "tasks" / f"{name}.jsonl")
    text = SIM_ONLY + (
        '[simulator]\nseed = 3\nrpm = 600\nlatency_ms = 10\nfaults = "429=0.5"\n'
        'tasks = ["tasks/*.jsonl"]\n'
    )
    sim = load(tmp_path, text, env={}).simulator
    assert sim is not None
    assert (sim.seed, sim.rpm, sim.latency_ms, sim.faults.http_429) == (3, 600, 10, 0.5)
    assert sim.task_paths == tuple(str(tmp_path / "tasks" / f"{n}.jsonl") for n in ("a", "b"))


# --- paths, jobs, knobs -----------------------------------------------------------------------


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    write_data(tmp_path / "shared" / "task.jsonl")
    conf = tmp_path / "configs" / "run.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[run]\ndir = "../runs/x"\n[endpoints.openai]\nmodel = "m"\n'
        '[[jobs]]\ndata = "../shared/task.jsonl"\n',
        encoding="utf-8",
    )
    config = load_config(conf, env=ENV)
    assert config.jobs[0].data == str(tmp_path / "shared" / "task.jsonl")
    assert config.jobs[0].name == "task"
    assert config.run_dir == tmp_path / "runs" / "x"


def test_a_glob_gives_one_job_per_file_with_the_other_keys(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        write_data(tmp_path / "bbh" / f"{name}.json")
    text = doc(job='[[jobs]]\nglob = "bbh/*.json"\ndev_size = 5\nmetric = "exact"')
    jobs = load(tmp_path, text).jobs
    assert [j.name for j in jobs] == ["data", "a", "b", "c"]
    assert all((j.dev_size, j.metric) == (5, "exact") for j in jobs[1:])
    assert jobs[1].data == str(tmp_path / "bbh" / "a.json")


def test_builtin_data_needs_no_file(tmp_path: Path) -> None:
    config = load(tmp_path, SIM_ONLY, env={})
    (job,) = build_jobs(config)
    assert job.name == "arithmetic"
    assert job.examples == next(t.examples for t in builtin_tasks() if t.name == "arithmetic")


def test_job_defaults_and_references(tmp_path: Path) -> None:
    text = doc(extra=TWO_ENDPOINTS, optimizer='task_endpoint = "b"\noptimizer_endpoint = "openai"')
    (job,) = load(tmp_path, text).jobs
    assert (job.task_endpoint, job.optimizer_endpoint, job.embedding_endpoint) == (
        "b",
        "openai",
        None,
    )
    assert (job.dev_size, job.test_size, job.placement, job.metric) == (48, 144, "after", "auto")
    assert job.initial_prompt == "Let's think step by step."
    assert job.budget is None
    assert job.strategy is None


def test_the_optimizer_endpoint_defaults_to_the_job_task_endpoint(tmp_path: Path) -> None:
    (job,) = load(tmp_path, doc(extra=TWO_ENDPOINTS, job='task_endpoint = "b"')).jobs
    assert (job.task_endpoint, job.optimizer_endpoint) == ("b", "b")


def test_knobs_reach_the_strategy(tmp_path: Path) -> None:
    optimizer = 'preset = "opro"\ncandidates = 4\nepochs = 1\nscorer_max_tokens = 64'
    config = load(tmp_path, doc(optimizer=optimizer, extra="[run]\nseed = 5\ncall_workers = 9"))
    assert config.settings.strategy == strategy("opro", candidates=4, epochs=1)
    assert (config.settings.seed, config.settings.scorer_max_tokens) == (5, 64)
    assert (config.settings.call_workers, config.settings.max_active_jobs) == (9, 64)
    assert config.preset == "opro"


def test_a_job_may_have_its_own_preset_and_knobs(tmp_path: Path) -> None:
    text = doc(optimizer="candidates = 4", job='preset = "ape"\nstrategy = { epochs = 1 }')
    (job,) = load(tmp_path, text).jobs
    assert job.strategy == strategy("ape", candidates=4, epochs=1)


def test_caps_per_run_and_per_job(tmp_path: Path) -> None:
    text = doc(extra="[run]\nbudget_usd = 5\nbudget_tokens = 1000", job="budget_usd = 0.5")
    config = load(tmp_path, text)
    assert (config.budget.usd, config.budget.tokens) == (5.0, 1000)
    assert config.jobs[0].budget is not None
    assert (config.jobs[0].budget.usd, config.jobs[0].budget.tokens) == (0.5, None)


def test_build_jobs_loads_the_data(tmp_path: Path) -> None:
    text = doc(job=f'metric = "yes_no"\nplacement = "system"\n{SMALL}')
    (job,) = build_jobs(load(tmp_path, text))
    assert job.examples[0] == Example("Question 0?", "yes")
    assert (job.metric, job.placement, job.task_endpoint) == ("yes_no", "system", "openai")


def test_build_jobs_picks_the_metric_from_the_data_on_auto(tmp_path: Path) -> None:
    (job,) = build_jobs(load(tmp_path, doc(job=SMALL)))
    assert job.metric is None


def test_build_jobs_refuses_a_job_with_fewer_examples_than_its_splits(tmp_path: Path) -> None:
    config = load(tmp_path, doc(job="dev_size = 6\ntest_size = 4"))  # 12 examples, 3 + 6 + 4 asked
    with pytest.raises(ConfigError) as caught:
        build_jobs(config)
    assert str(caught.value) == (
        f'{tmp_path / "run.toml"}: job "data": needs 3 exemplars + 6 dev + 4 test = 13 examples, '
        "found 12 (set smaller dev_size/test_size, or small_splits = true to use what there is)"
    )


def test_the_exemplars_counted_are_the_jobs_strategys(tmp_path: Path) -> None:
    text = doc(job="dev_size = 6\ntest_size = 4\nstrategy = { exemplars = 2 }")
    (job,) = build_jobs(load(tmp_path, text))
    assert len(job.examples) == 12


def test_small_splits_true_builds_the_job_on_what_there_is(tmp_path: Path) -> None:
    (spec,) = load(tmp_path, doc(job="small_splits = true")).jobs
    assert spec.small_splits
    (job,) = build_jobs(load(tmp_path, doc(job="small_splits = true")))
    assert job.small_splits
    assert (job.dev_size, job.test_size, len(job.examples)) == (48, 144, 12)


def test_build_jobs_propagates_data_errors_naming_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, doc())
    (tmp_path / "data.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.jsonl: line 1: invalid JSON"):
        build_jobs(config)


# --- digests ----------------------------------------------------------------------------------


def test_the_digest_is_stable_and_json(tmp_path: Path) -> None:
    first = config_digest(load(tmp_path, doc()))
    second = config_digest(load(tmp_path, doc()))
    assert first == second
    assert json.loads(json.dumps(first)) == first
    assert diff_digests(first, second) == []


def test_diff_names_changed_knobs_and_settings(tmp_path: Path) -> None:
    old = config_digest(load(tmp_path, doc(optimizer="candidates = 8")))
    new = config_digest(load(tmp_path, doc(optimizer="candidates = 4", job='metric = "exact"')))
    assert diff_digests(old, new) == [
        "optimizer.candidates: 8 -> 4",
        'jobs[data].metric: "auto" -> "exact"',
    ]


def test_a_run_of_an_older_gpo_resumes_when_new_knobs_keep_their_defaults(
    tmp_path: Path,
) -> None:
    """A knob added by a newer gpo is absent from an older run's digest: at its default it
    changes nothing, so the run resumes; set otherwise, the change is named."""
    new = config_digest(load(tmp_path, doc()))
    old = json.loads(json.dumps(new))
    for key in ("evaluation", "racing_rounds", "racing_z"):
        del old["optimizer"][key]
    assert diff_digests(old, new) == []
    racing = config_digest(load(tmp_path, doc(optimizer='evaluation = "racing"')))
    assert diff_digests(old, racing) == ['optimizer.evaluation: added ("racing")']


def test_diff_notices_changed_data_content(tmp_path: Path) -> None:
    old = config_digest(load(tmp_path, doc()))
    write_data(tmp_path / "data.jsonl", answer="no")
    new = config_digest(load_config(tmp_path / "run.toml", env=ENV))
    assert diff_digests(old, new) == ["jobs[data].data: file content changed"]


def test_diff_names_added_and_removed_jobs(tmp_path: Path) -> None:
    old = config_digest(load(tmp_path, doc()))
    new = config_digest(load(tmp_path, SIM_ONLY, env={}))
    lines = diff_digests(old, new)
    assert "jobs[data]: removed" in lines
    assert "jobs[arithmetic]: added" in lines
    assert "simulator: added" in lines


def test_budgets_limits_and_prices_are_not_differences(tmp_path: Path) -> None:
    old = config_digest(load(tmp_path, doc()))
    endpoint = (
        "rpm = 10\ntimeout_s = 5\nprice = { input_per_mtok = 9 }\nretry = { max_attempts = 2 }"
    )
    text = doc(
        endpoint=endpoint, job="budget_usd = 9", extra="[run]\nbudget_usd = 50\ncall_workers = 3"
    )
    assert diff_digests(old, config_digest(load(tmp_path, text))) == []


# --- examples ---------------------------------------------------------------------------------

EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.toml"))
FAKE_DATA = [
    "shared/data/bbh/boolean_expressions.json",
    "shared/data/bbh/navigate.json",
    "shared/data/bbh/web_of_lies.json",
    "shared/data/bbh/date_understanding.json",
    "shared/data/bbh/movie_recommendation.json",
    "shared/data/gsm8k/test.jsonl",
    "repo/examples/my_task.csv",
]


def fake_tree(root: Path) -> Path:
    """The examples in ``root/repo/examples`` next to a fake ``root/shared/data``."""
    shutil.copytree(EXAMPLES, root / "repo" / "examples")
    for name in FAKE_DATA:
        write_data(root / name)
    return root / "repo" / "examples"


def test_the_examples_are_all_there() -> None:
    assert set(EXAMPLE_FILES) >= {
        "anthropic.toml",
        "bbh.toml",
        "gsm8k.toml",
        "local_vllm.toml",
        "openai.toml",
        "sim_bbh.toml",
        "sim_demo.toml",
    }


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_example_loads_next_to_its_data(tmp_path: Path, name: str) -> None:
    config = load_config(fake_tree(tmp_path) / name, env=ENV)
    assert config.jobs
    assert config.run_dir is not None
    assert config.run_dir.parent == tmp_path / "repo" / "runs"
    config_digest(config)


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_example_parses_without_its_data(name: str) -> None:
    load_config(EXAMPLES / name, env=ENV, check_files=False)


def test_the_bbh_examples_find_the_shared_data_when_present() -> None:
    if not (EXAMPLES.parent.parent / "shared" / "data" / "bbh").is_dir():
        pytest.skip("the shared BBH data is not next to this checkout")
    assert len(load_config(EXAMPLES / "bbh.toml", env=ENV).jobs) >= 2
    assert load_config(EXAMPLES / "sim_bbh.toml", env={}).simulator is not None


def test_the_sim_demo_is_offline() -> None:
    config = load_config(EXAMPLES / "sim_demo.toml", env={})
    assert config.simulated == {e.name for e in config.endpoints}
    assert len(config.jobs) == 6
    assert all(
        j.data.startswith("builtin:") and (j.dev_size, j.test_size) == (32, 64) for j in config.jobs
    )


async def test_a_loaded_config_runs_on_the_simulator(tmp_path: Path) -> None:
    text = (
        "[run]\nbudget_usd = 1\n" + SIM_ONLY + "dev_size = 4\ntest_size = 4\n"
        "[optimizer]\ncandidates = 2\nepochs = 1\nbatch_size = 4\n"
    )
    config = load(tmp_path, text, env={})
    assert config.simulator is not None
    async with open_simulator(config.simulator) as sim:
        config = with_simulator_url(config, sim.base_url)
        async with open_gateway(config.endpoints, budget=Budget(config.budget)) as gateway:
            result = await optimize(gateway, build_jobs(config), config.settings)
    assert [j.status for j in result.jobs] == ["finished"]


def test_racing_is_a_knob_of_the_run_and_of_a_job(tmp_path: Path) -> None:
    optimizer = 'evaluation = "racing"\nracing_z = 2.5'
    job = 'preset = "apo"\nstrategy = { racing_rounds = 3 }'
    config = load(tmp_path, doc(optimizer=optimizer, job=job))
    assert config.settings.strategy == strategy("gpo", evaluation="racing", racing_z=2.5)
    (spec,) = config.jobs
    assert spec.strategy == strategy("apo", evaluation="racing", racing_z=2.5, racing_rounds=3)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('evaluation = "fast"', "optimizer.evaluation"),
        ("racing_rounds = 1", "optimizer.racing_rounds"),
        ("racing_z = 0", "optimizer.racing_z"),
    ],
)
def test_bad_racing_knobs_are_named(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load(tmp_path, doc(optimizer=line))
