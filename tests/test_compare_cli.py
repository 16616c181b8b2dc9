"""``gpo compare`` as a process against ``gpo sim`` (which counts the requests reaching it): a
comparison stopped with SIGINT and resumed sends no request twice and ends as an uninterrupted
one does."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cli_helpers import (
    BUDGET_S,
    PROCESS_S,
    background_gpo,
    config_text,
    free_port,
    journal_steps,
    read_json,
    run_gpo,
    running_sim,
    wait_for,
)

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(BUDGET_S)]

PREFLIGHT = 2  # per endpoint and session: GET /models, the chat route probe
ARGS = ("--presets", "gpo,baseline", "--seeds", "2")
OPTIMIZER = "epochs = 2\ncandidates = 4\n"
STEPS = 2 * 2 * 3  # gpo jobs (1 job x 2 seeds) x epochs x steps per epoch (dev 24 / 8)


def compare_config(url: str) -> str:
    return config_text(url, jobs=("arithmetic",), dev_size=24, test_size=16, optimizer=OPTIMIZER)


def test_an_interrupted_comparison_resumes_without_paying_twice(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "cfg.toml").write_text(compare_config(f"http://127.0.0.1:{port}/v1"))
    with running_sim(tmp_path / "sim-a.err", port=port) as whole:
        done = run_gpo(["compare", "cfg.toml", *ARGS, "--run-dir", "A"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    uninterrupted = read_json(tmp_path / "A" / "compare.json")

    args = ["compare", "cfg.toml", *ARGS, "--run-dir", "I"]
    with (
        running_sim(tmp_path / "sim-1.err", port=port) as first,
        background_gpo(args, cwd=tmp_path) as process,
    ):
        wait_for(lambda: journal_steps(tmp_path / "I") >= 2, process)
        process.send_signal(signal.SIGINT)
        assert process.wait(PROCESS_S) == 130
    assert journal_steps(tmp_path / "I") < STEPS
    assert read_json(tmp_path / "I" / "compare.json")["status"] == "interrupted"

    with running_sim(tmp_path / "sim-2.err", port=port) as second:
        done = run_gpo(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    resumed = read_json(tmp_path / "I" / "compare.json")
    assert whole.requests is not None
    assert first.requests is not None
    assert second.requests is not None
    # Every answered call was cached and counted: the two sessions together send what the
    # uninterrupted comparison sent, plus the second session's preflight.
    assert first.requests + second.requests == whole.requests + PREFLIGHT
    calls = sum(row["calls"] for row in resumed["presets"])
    assert calls == sum(row["calls"] for row in uninterrupted["presets"])
    assert calls == whole.requests - PREFLIGHT
    assert resumed["pairs"] == uninterrupted["pairs"]
    scores = ("mean_test", "mean_best_dev", "dev_test_gap")
    for mine, theirs in zip(resumed["presets"], uninterrupted["presets"], strict=True):
        assert {k: mine[k] for k in scores} == {k: theirs[k] for k in scores}
    assert "Presets compared" in (tmp_path / "I" / "report.html").read_text()
