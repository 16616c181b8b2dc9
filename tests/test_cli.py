"""End-to-end tests of the ``gpo`` command line, as subprocesses against ``gpo sim``.

The simulator runs as a separate process and counts every HTTP request that reaches it, so these
tests measure what a run really sends: a run killed with SIGKILL and resumed sends no more than the
calls that had not completed; bad input exits 2 before any request; ``gpo estimate`` predicts the
task requests a run makes. The simulator answers deterministically per request (seeded, and the
optimizer's sampling requests carry a seed), so runs of the same config give the same results.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import (
    BUDGET_S,
    KEY_ENV,
    LONG_BUDGET_S,
    LONG_PROCESS_S,
    MAX_IN_FLIGHT,
    PROCESS_S,
    TEST_KEY,
    background_gpo,
    config_text,
    free_port,
    gpo_env,
    journal_steps,
    read_json,
    run_gpo,
    running_sim,
    stop,
    wait_for,
)

# Every test runs gpo processes: a budget of their own (covering the module's fixtures, run in
# the setup of the first test that asks for them), see tests/cli_helpers.py.
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(BUDGET_S)]

PREFLIGHT = 2  # per endpoint and session, before anything is spent: GET /models, the route probe


@dataclass(frozen=True)
class Baseline:
    """Phase A: an uninterrupted run of ``config_text`` (3 jobs, dev 16, test 32, gpo)."""

    root: Path
    run_dir: Path
    results: dict[str, Any]
    requests: int


@pytest.fixture(scope="module")
def phase_a(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("phase_a")
    with running_sim(root / "sim.err") as sim:
        (root / "cfg.toml").write_text(config_text(sim.url))
        done = run_gpo(["run", "cfg.toml", "--run-dir", "A"], cwd=root)
    assert done.returncode == 0, done.stderr
    assert sim.requests is not None
    results = read_json(root / "A" / "results.json")
    assert results["status"] == "finished"
    assert [j["status"] for j in results["jobs"]] == ["finished"] * 3
    return Baseline(root=root, run_dir=root / "A", results=results, requests=sim.requests)


def committed_chat_requests(cache: Path) -> int:
    """Chat requests whose answers a run directory's cache holds: one key per sample,
    ``DIGEST:INDEX``, all samples of one request sharing the digest (embeddings are stored per
    text, as JSON arrays)."""
    with contextlib.closing(sqlite3.connect(cache)) as db:
        rows = db.execute("SELECT key, value FROM responses").fetchall()
    return len({key.rpartition(":")[0] for key, value in rows if bytes(value).startswith(b"{")})


def total_steps(results: Mapping[str, Any]) -> int:
    return sum(int(job["steps"]) for job in results["jobs"])


def assert_same_jobs(
    results: Mapping[str, Any], baseline: Mapping[str, Any], *, killed: bool = False
) -> None:
    """Everything but timings: prompts, scores, trajectories, step records, per-job cost. After
    a kill the cost may be higher, never lower: the ledger counts the requests that were in
    flight at their worst case (they may have been billed)."""
    assert results["status"] == "finished"
    for job, expected in zip(results["jobs"], baseline["jobs"], strict=True):
        if killed:
            assert job["cost_usd"] >= expected["cost_usd"] - 1e-9, job["name"]
            job, expected = {**job, "cost_usd": 0}, {**expected, "cost_usd": 0}
        assert job == expected, job["name"]
    cost, expected_cost = results["totals"]["cost_usd"], baseline["totals"]["cost_usd"]
    if killed:
        assert cost >= expected_cost - 1e-9
    else:
        assert math.isclose(cost, expected_cost, rel_tol=0, abs_tol=1e-9)


# --- 1. SIGKILL, then resume --------------------------------------------------------------------


def test_sigkill_then_resume_sends_only_the_missing_calls(
    phase_a: Baseline, tmp_path: Path
) -> None:
    port = free_port()  # the same URL in both phases: it is part of the run's config digest
    (tmp_path / "cfg.toml").write_text(config_text(f"http://127.0.0.1:{port}/v1"))
    run_dir = tmp_path / "B"
    args = ["run", "cfg.toml", "--run-dir", "B"]

    with (
        running_sim(tmp_path / "sim-b1.err", port=port) as b1,
        background_gpo(args, cwd=tmp_path) as process,
    ):
        wait_for(lambda: journal_steps(run_dir) >= 4, process)
        assert stop(process, signal.SIGKILL) == -signal.SIGKILL
    steps_b1 = journal_steps(run_dir)
    committed_b1 = committed_chat_requests(run_dir / "cache.sqlite")
    assert 4 <= steps_b1 < total_steps(phase_a.results), "killed before the run ended"
    assert not (run_dir / "results.json").exists()

    with running_sim(tmp_path / "sim-b2.err", port=port) as b2:
        done = run_gpo(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    results = read_json(run_dir / "results.json")
    assert_same_jobs(results, phase_a.results, killed=True)
    assert b1.requests is not None
    assert b2.requests is not None
    calls_a, calls_b1, calls_b2 = (
        n - PREFLIGHT for n in (phase_a.requests, b1.requests, b2.requests)
    )
    print(
        f"requests: A={phase_a.requests} B1={b1.requests} B2={b2.requests} "
        f"(steps journaled before the kill: {steps_b1}, chat requests committed: {committed_b1})"
    )
    # A call completes when its answer is committed to the cache: B2 repeats none of those.
    assert calls_b2 <= calls_a - committed_b1
    # What B2 repeats is what was in flight at the kill: at most max_in_flight requests (an
    # answer that arrived is committed to the cache before its slot is released).
    assert calls_b1 + calls_b2 <= calls_a + MAX_IN_FLIGHT
    assert calls_b2 < calls_a
    assert calls_b1 > 0


# --- 2. SIGINT ----------------------------------------------------------------------------------


def test_sigint_exits_130_and_the_run_resumes(phase_a: Baseline, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "cfg.toml").write_text(config_text(f"http://127.0.0.1:{port}/v1"))
    run_dir = tmp_path / "I"
    args = ["run", "cfg.toml", "--run-dir", "I"]

    with (
        running_sim(tmp_path / "sim-1.err", port=port) as first,
        background_gpo(args, cwd=tmp_path) as process,
    ):
        wait_for(lambda: journal_steps(run_dir) >= 3, process)
        process.send_signal(signal.SIGINT)
        assert process.wait(PROCESS_S) == 130
    assert "Traceback" not in (tmp_path / "bg.err").read_text()
    interrupted = read_json(run_dir / "results.json")
    assert interrupted["status"] == "interrupted"
    assert journal_steps(run_dir) < total_steps(phase_a.results)

    with running_sim(tmp_path / "sim-2.err", port=port) as second:
        done = run_gpo(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_jobs(read_json(run_dir / "results.json"), phase_a.results)
    assert first.requests is not None
    assert second.requests is not None
    print(f"SIGINT requests: A={phase_a.requests} I1={first.requests} I2={second.requests}")
    # A graceful stop lets the calls in flight finish and commits them: none is made twice
    # (the two sessions together send one preflight more than phase A).
    assert first.requests + second.requests == phase_a.requests + PREFLIGHT


# --- 3. budget cap ------------------------------------------------------------------------------


def test_budget_cap_exits_3_within_the_cap_with_best_prompts(tmp_path: Path) -> None:
    cap = 0.01  # about a sixth of what the whole run costs at this price
    with running_sim(tmp_path / "sim.err") as sim:
        (tmp_path / "cfg.toml").write_text(config_text(sim.url))
        done = run_gpo(
            ["run", "cfg.toml", "--run-dir", "C", "--budget-usd", str(cap)], cwd=tmp_path
        )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    results = read_json(tmp_path / "C" / "results.json")
    assert results["status"] == "budget_exhausted"
    assert results["budget"]["cap_usd"] == cap
    assert 0 < results["totals"]["cost_usd"] <= cap
    statuses = [job["status"] for job in results["jobs"]]
    assert "budget_exhausted" in statuses
    assert set(statuses) <= {"budget_exhausted", "finished"}
    for job in results["jobs"]:
        assert job["best_prompt"], job["name"]
        tried = {entry["prompt"] for entry in job["trajectory"]} | {job["initial_prompt"]}
        assert job["best_prompt"] in tried, job["name"]


# --- 4. bad input -------------------------------------------------------------------------------


def small_config(url: str, **kwargs: Any) -> str:
    return config_text(url, jobs=("arithmetic",), dev_size=4, test_size=4, **kwargs)


def edited(old: str, new: str, **kwargs: Any) -> Callable[[str], str]:
    def make(url: str) -> str:
        text = small_config(url, **kwargs)
        assert old in text
        return text.replace(old, new, 1)

    return make


@dataclass(frozen=True)
class BadInput:
    id: str
    needles: tuple[str, ...]  # each must appear in the message
    make: Callable[[str], str] = small_config  # the config text, given the endpoint URL
    args: tuple[str, ...] = ()
    config: str = "cfg.toml"
    key: str | None = TEST_KEY
    files: Mapping[str, str] = field(default_factory=dict)
    sim: bool = False  # the endpoint is a simulator counting requests (else a closed port)
    resume_changed: bool = False  # run the config first, then again with candidates = 4
    requests: int = 0  # HTTP requests that may reach the simulator


BAD_INPUTS = (
    BadInput(
        "bad_toml",
        ("cfg.toml", "line 12", "invalid TOML"),
        edited("[optimizer]", "[optimizer"),
    ),
    BadInput("unknown_top_level_key", ("cfg.toml", "unknown key runs"), edited("[run]", "[runs]")),
    BadInput(
        "unknown_endpoint_key",
        ("cfg.toml", "endpoints.sim.rmp", "did you mean rpm"),
        lambda url: small_config(url, endpoint="rmp = 600"),
    ),
    BadInput(
        "string_for_rpm",
        ("cfg.toml", "endpoints.sim.rpm", '"fast"'),
        lambda url: small_config(url, endpoint='rpm = "fast"'),
    ),
    BadInput(
        "bool_for_int",
        ("cfg.toml", "run.seed", "integer", "true"),
        edited("seed = 1", "seed = true"),
    ),
    BadInput(
        "missing_data_file",
        ("cfg.toml", "jobs[0].data", "no such file", "missing.jsonl"),
        edited('"builtin:arithmetic"', '"missing.jsonl"'),
    ),
    BadInput(
        "empty_data_file",
        ("empty.jsonl", "no examples"),
        edited('"builtin:arithmetic"', '"empty.jsonl"'),
        files={"empty.jsonl": ""},
    ),
    BadInput(
        "bad_json_line",
        ("bad.jsonl", "line 2", "invalid JSON"),
        edited('"builtin:arithmetic"', '"bad.jsonl"'),
        files={"bad.jsonl": '{"input": "1 + 1", "target": "2"}\n{"input": oops}\n'},
    ),
    BadInput(
        "unknown_metric",
        ("cfg.toml", "jobs[0].metric", '"fuzzy"'),
        edited("dev_size = 4", 'dev_size = 4\nmetric = "fuzzy"'),
    ),
    BadInput(
        "unknown_preset",
        ("cfg.toml", "optimizer.preset", '"gpx"'),
        edited('preset = "gpo"', 'preset = "gpx"'),
    ),
    BadInput(
        "unknown_knob",
        ("cfg.toml", "optimizer.candidate", "did you mean candidates"),
        lambda url: small_config(url, optimizer="candidate = 4\n"),
    ),
    BadInput(
        "missing_api_key", ("cfg.toml", "endpoints.sim.api_key_env", KEY_ENV), key=None, sim=True
    ),
    BadInput(
        "empty_api_key",
        ("cfg.toml", f"the environment variable {KEY_ENV} is set but empty"),
        key="",
        sim=True,
    ),
    BadInput(
        "api_key_with_a_newline",
        (
            "cfg.toml",
            f"the environment variable {KEY_ENV} holds a key with a trailing newline/whitespace "
            "or a control character; remove it",
        ),
        key=TEST_KEY + "\n",
        sim=True,
    ),
    BadInput(
        "unknown_endpoint_reference",
        ("cfg.toml", "jobs[0].task_endpoint", '"nope"'),
        edited("dev_size = 4", 'dev_size = 4\ntask_endpoint = "nope"'),
    ),
    BadInput(
        "duplicate_job_names",
        ("cfg.toml", "jobs[1]", "unique job name", '"arithmetic"'),
        lambda url: config_text(url, jobs=("arithmetic", "arithmetic"), dev_size=4, test_size=4),
    ),
    BadInput(
        "negative_dev_size",
        ("cfg.toml", "jobs[0].dev_size", "-3"),
        edited("dev_size = 4", "dev_size = -3"),
    ),
    BadInput(
        "data_smaller_than_splits",
        (
            "cfg.toml",
            'job "five": needs 3 exemplars + 4 dev + 4 test = 11 examples, found 5',
            "small_splits = true",
        ),
        edited('"builtin:arithmetic"', '"five.jsonl"'),
        files={
            "five.jsonl": "".join(
                f'{{"input": "{i} + 1", "target": "{i + 1}"}}\n' for i in range(5)
            )
        },
        sim=True,
    ),
    BadInput("missing_config_file", ("missing.toml", "cannot read"), config="missing.toml"),
    BadInput("unreachable_endpoint", ("endpoint 'sim'", "cannot connect")),
    BadInput(  # the 401 to GET /models stops the preflight before the route probe
        "unauthorized", ("endpoint 'sim'", "401"), key="sk-invalid", sim=True, requests=1
    ),
    BadInput(  # GET /models, then the chat and the embeddings route probes: 404 each
        "base_url_without_v1",
        (
            "endpoint 'sim' is not usable",
            "/chat/completions (HTTP 404); check base_url (it usually ends in /v1)",
        ),
        lambda url: small_config(url.removesuffix("/v1")),
        sim=True,
        requests=3,
    ),
    BadInput("negative_budget", ("--budget-usd", "-1"), args=("--budget-usd", "-1"), sim=True),
    BadInput(
        "resume_with_changed_config",
        ("run", "different configuration", "optimizer.candidates: 8 -> 4"),
        sim=True,
        resume_changed=True,
    ),
)


@dataclass(frozen=True)
class Outcome:
    done: subprocess.CompletedProcess[str] | None = None
    requests: int | None = None
    run_dir: Path | None = None
    before: Mapping[str, bytes] | None = None  # resume_changed: the run dir's files before
    error: BaseException | None = None


def run_bad_input(case: BadInput, root: Path) -> Outcome:
    """The case in its own directory, against its own simulator (nothing else talks to it) or
    a closed local port (input refused before any connection is tried exits 2 either way, but
    an attempt would say "cannot connect")."""
    try:
        for name, text in case.files.items():
            (root / name).write_text(text)
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        command = ["run", case.config, "--run-dir", "run", *case.args]
        before = None
        if case.resume_changed:
            (root / "cfg.toml").write_text(small_config(url))
            with running_sim(root / "sim-first.err", port=port):
                first = run_gpo(command, cwd=root)
            assert first.returncode == 0, first.stderr
            before = {p.name: p.read_bytes() for p in (root / "run").iterdir()}
            (root / "cfg.toml").write_text(small_config(url, optimizer="candidates = 4\n"))
        else:
            (root / "cfg.toml").write_text(case.make(url))
        if not case.sim:
            done = run_gpo(command, cwd=root, env=gpo_env(case.key))
            return Outcome(done=done, run_dir=root / "run")
        with running_sim(root / "sim.err", port=port) as sim:
            done = run_gpo(command, cwd=root, env=gpo_env(case.key))
        return Outcome(done=done, requests=sim.requests, run_dir=root / "run", before=before)
    except BaseException as exc:  # reported by the case's own test
        return Outcome(error=exc)


@pytest.fixture(scope="module")
def bad_input_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case, four at a time (each is a few subprocesses that mostly wait)."""
    roots = {case.id: tmp_path_factory.mktemp(case.id) for case in BAD_INPUTS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(run_bad_input, c, roots[c.id]) for c in BAD_INPUTS}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.id for case in BAD_INPUTS])
def test_bad_input_exits_2_naming_it_and_spends_nothing(
    case: BadInput, bad_input_outcomes: dict[str, Outcome]
) -> None:
    outcome = bad_input_outcomes[case.id]
    if outcome.error is not None:
        raise outcome.error
    assert outcome.done is not None
    assert outcome.run_dir is not None
    err = outcome.done.stderr
    assert outcome.done.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines, "no message"
    assert lines[0].startswith("error: "), err
    assert err.count("error:") == 1, err
    for needle in case.needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    output = err + outcome.done.stdout
    assert "Traceback" not in output
    assert TEST_KEY not in output
    assert "sk-invalid" not in output
    # Nothing spent: no chat request reached the simulator (the 401 case's one request is the
    # preflight's GET /models, refused before anything else; a wrong base_url's are the
    # preflight's, all 404), nothing journaled, no results.
    if case.sim:
        assert outcome.requests == case.requests
    if outcome.before is None:
        assert not (outcome.run_dir / "results.json").exists()
        assert not (outcome.run_dir / "journal.jsonl").exists()
    else:  # the refused resume left the run directory as it was
        after = {p.name: p.read_bytes() for p in outcome.run_dir.iterdir()}
        for name in ("results.json", "journal.jsonl", "digest.json", "config.toml"):
            assert after[name] == outcome.before[name], name


@pytest.mark.parametrize("case_id", ["empty_api_key", "api_key_with_a_newline"])
def test_an_unusable_api_key_is_one_line_that_never_shows_the_key(
    case_id: str, bad_input_outcomes: dict[str, Outcome]
) -> None:
    done = bad_input_outcomes[case_id].done
    assert done is not None
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "sk-test" not in done.stderr + done.stdout


def test_a_fixed_endpoint_url_runs_after_a_failed_preflight(tmp_path: Path) -> None:
    """An unreachable endpoint exits 2 before the run starts; fixing its URL then runs, in the
    same run directory (nothing had been started there, so there is nothing to mix)."""
    (tmp_path / "cfg.toml").write_text(small_config(f"http://127.0.0.1:{free_port()}/v1"))
    failed = run_gpo(["run", "cfg.toml", "--run-dir", "run"], cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr
    with running_sim(tmp_path / "sim.err") as sim:
        (tmp_path / "cfg.toml").write_text(small_config(sim.url))
        done = run_gpo(["run", "cfg.toml", "--run-dir", "run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_json(tmp_path / "run" / "results.json")["status"] == "finished"


# --- 5. estimate --------------------------------------------------------------------------------


def two_endpoint_config(task_url: str, opt_url: str) -> str:
    """Task calls go to one simulator, optimizer and embedding calls to another."""
    endpoints = "".join(
        f"""
[endpoints.{name}]
kind = "openai"
model = "sim-1"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
max_in_flight = {MAX_IN_FLIGHT}
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.60 }}
"""
        for name, url in (("task", task_url), ("opt", opt_url))
    )
    jobs = "".join(
        f'\n[[jobs]]\ndata = "builtin:{name}"\ndev_size = 16\ntest_size = 32\n'
        for name in ("arithmetic", "object_counting")
    )
    return f"""\
[run]
seed = 1
{endpoints}
[optimizer]
preset = "gpo"
task_endpoint = "task"
optimizer_endpoint = "opt"
embedding_endpoint = "opt"
{jobs}"""


_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<requests>[\d,]+)\s+(?P<worst>[\d,]+)\s", re.M)


def test_estimate_predicts_the_task_requests_of_a_run(tmp_path: Path) -> None:
    """With these seeds one generated candidate duplicates another (arithmetic, last step), so
    the run makes 16 task requests fewer than the estimate (1680 of 1696)."""
    with (
        running_sim(tmp_path / "task.err") as task_sim,
        running_sim(tmp_path / "opt.err") as opt_sim,
    ):
        (tmp_path / "cfg.toml").write_text(two_endpoint_config(task_sim.url, opt_sim.url))
        # No key needed: estimating calls no endpoint.
        est = run_gpo(["estimate", "cfg.toml"], cwd=tmp_path, env=gpo_env(key=None))
        done = run_gpo(["run", "cfg.toml", "--run-dir", "E"], cwd=tmp_path)
    assert est.returncode == 0, est.stderr
    assert done.returncode == 0, done.stderr
    assert "requests" in est.stdout
    assert "tokens in" in est.stdout
    assert re.search(r"cost: \$\d+\.\d+ expected, \$\d+\.\d+ worst case", est.stdout), est.stdout
    rows = {m["name"]: int(m["requests"].replace(",", "")) for m in _ROW.finditer(est.stdout)}
    assert set(rows) == {"task", "opt"}, est.stdout
    assert task_sim.requests is not None

    results = read_json(tmp_path / "E" / "results.json")
    actual = task_sim.requests - PREFLIGHT
    assert actual == results["endpoints"]["task"]["requests"]
    # The estimate counts every candidate as new; a run scores a duplicate candidate (of one in
    # the same step or of a prompt the job already evaluated) only once, and the test split once
    # when the best prompt is the initial one. That accounts for every task request.
    predicted, scored = 0, 0
    for job in results["jobs"]:
        dev, test = 16, 32
        predicted += dev * (1 + job["steps"] * 8) + 2 * test
        new = sum(c["new"] for r in job["step_records"] for c in r["candidates"])
        scored += dev * (1 + new) + test * (1 if job["best_prompt"] == job["initial_prompt"] else 2)
    assert rows["task"] == predicted
    assert actual == scored
    assert actual <= rows["task"] <= actual * 1.10
    print(f"estimate: {rows['task']} task requests; actual: {actual}")


# --- 6. report and demo -------------------------------------------------------------------------


def test_report_rewrites_report_html(phase_a: Baseline) -> None:
    report = phase_a.run_dir / "report.html"
    written = report.read_text()
    report.unlink()
    done = run_gpo(["report", "A"], cwd=phase_a.root)
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout
    text = report.read_text()
    assert "<html" in text.lower()
    assert len(text) > len(written) // 2
    for job in phase_a.results["jobs"]:
        assert job["name"] in text


@pytest.mark.timeout(LONG_BUDGET_S)
def test_demo_improves_six_prompts(tmp_path: Path) -> None:
    done = run_gpo(["demo", "--run-dir", "tmp/demo"], cwd=tmp_path, timeout=LONG_PROCESS_S)
    assert done.returncode == 0, done.stderr
    results = read_json(tmp_path / "tmp" / "demo" / "results.json")
    jobs = results["jobs"]
    assert [job["status"] for job in jobs] == ["finished"] * 6
    initial = sum(job["initial_test_score"] for job in jobs) / len(jobs)
    best = sum(job["best_test_score"] for job in jobs) / len(jobs)
    assert best > initial
    assert (tmp_path / "tmp" / "demo" / "report.html").exists()


# --- 7. help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", "run", "estimate", "report", "demo", "sim"])
def test_help_shows_usage_and_examples(command: str, tmp_path: Path) -> None:
    args = [command, "--help"] if command else ["--help"]
    done = run_gpo(args, cwd=tmp_path, env=gpo_env(key=None))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: gpo {command}".rstrip())
    assert "example" in done.stdout
    assert "gpo " + (f"{command} " if command else "") in done.stdout.split("example", 1)[1]


# --- 8. one process per run directory -----------------------------------------------------------


def lock_holder(run_dir: Path) -> int | None:
    """The pid a run directory's lock file names (None: none, or not yet written)."""
    try:
        return int(read_json(run_dir / "lock")["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def test_a_second_run_on_a_busy_run_directory_exits_2_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "L"
    journal = run_dir / "journal.jsonl"
    args = ["run", "cfg.toml", "--run-dir", "L"]
    slow = ("--seed", "3", "--latency-ms", "300", "--latency-sigma", "0")
    with running_sim(tmp_path / "sim.err", args=slow) as sim:
        (tmp_path / "cfg.toml").write_text(config_text(sim.url))
        with background_gpo(args, cwd=tmp_path) as first:
            wait_for(lambda: lock_holder(run_dir) == first.pid, first)
            second = run_gpo(args, cwd=tmp_path)
            # The first run has 48 s of work at least (2,573 requests, 16 at a time, 300 ms
            # each): had the second waited for the lock, it would have ended after the first.
            assert first.poll() is None, "the second run waited for the first"
            wait_for(lambda: journal.exists() and b"run_started" in journal.read_bytes(), first)
            first.send_signal(signal.SIGINT)
            assert first.wait(PROCESS_S) == 130
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith(f"error: L is in use by gpo run (pid {first.pid} on host ")
    assert second.stderr.rstrip().endswith("wait for it to finish or stop it")
    assert second.stderr.count("\n") == 1, second.stderr
    # The second journaled, spent and released nothing; the first stopped cleanly and released
    # the lock (its record emptied).
    assert journal.read_bytes().count(b'"event":"run_started"') == 1
    assert read_json(run_dir / "results.json")["status"] == "interrupted"
    assert (run_dir / "lock").read_bytes() == b""
