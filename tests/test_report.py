"""report.html: self-contained, escaped, ranked by improvement, and readable in a browser."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.report._page import render_report, stats_samples, write_report
from pipeline.report._sections import word_diff
from pipeline.report._svg import score_chart

XSS = "<script>alert(1)</script>"
PHRASES = (
    "think step by step carefully check your work state the final answer as a single letter "
    "read the question twice list each object count them and verify the total before answering"
)
WORDS = PHRASES.split(" ")


# --- a fixture generator: a run directory as the engine writes it ----------------------------


def _prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _step_record(rng: random.Random, step: int, steps: int, base: float) -> dict[str, Any]:
    budget = int(10 + 40 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    candidates: list[dict[str, Any]] = []
    for _ in range(8):
        distance = max(1, int(rng.gauss(budget * 0.7, budget * 0.3)))
        candidates.append(
            {
                "prompt": _prompt(rng, 12),
                "score": round(min(100.0, max(0.0, rng.gauss(base, 6))), 1),
                "new": rng.random() > 0.1,
                "edit_distance": distance,
                "over_budget": distance > budget,
            }
        )
    best = max(candidates, key=lambda c: float(c["score"]))
    return {
        "step": step,
        "word_budget": budget,
        "shown": [],
        "reflection": None,
        "selected": best["prompt"],
        "selected_score": best["score"],
        "parse_failures": int(rng.random() < 0.2),
        "reasks": int(rng.random() < 0.1),
        "rejected_over_budget": sum(bool(c["over_budget"]) for c in candidates),
        "candidates": candidates,
    }


def make_job(name: str, gain: float, *, seed: int = 0, steps: int = 12) -> dict[str, Any]:
    """A job whose dev score drifts by ``gain`` points over ``steps`` steps."""
    rng = random.Random(seed)
    initial = "Let's think step by step."
    start = round(rng.uniform(30, 55), 1)
    records = [
        _step_record(rng, s, steps, start + gain * s / steps + rng.gauss(0, 2))
        for s in range(1, steps + 1)
    ]
    trajectory: list[dict[str, Any]] = [{"step": 0, "prompt": initial, "score": start}]
    trajectory += [
        {"step": r["step"], "prompt": r["selected"], "score": r["selected_score"]} for r in records
    ]
    best = max(trajectory, key=lambda e: float(e["score"]))
    return {
        "name": name,
        "status": "finished",
        "error": None,
        "initial_prompt": initial,
        "best_prompt": best["prompt"],
        "initial_dev_score": start,
        "best_dev_score": best["score"],
        "initial_test_score": round(start - 2, 1),
        "best_test_score": round(start - 2 + gain, 1),
        "steps": steps,
        "cost_usd": round(0.01 * steps * rng.uniform(0.8, 1.2), 4),
        "trajectory": trajectory,
        "step_records": records,
    }


def failed_job(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "failed",
        "error": "ConfigError: data/bad.json line 3: expected 'target', found nothing",
        "initial_prompt": "Let's think step by step.",
        "best_prompt": "Let's think step by step.",
        "initial_dev_score": None,
        "best_dev_score": None,
        "initial_test_score": None,
        "best_test_score": None,
        "steps": 0,
        "cost_usd": 0.0,
        "trajectory": [],
        "step_records": [],
    }


def three_jobs() -> list[dict[str, Any]]:
    regressed = make_job("snarks & <b>sarcasm</b>", -6.0, seed=2, steps=8)
    regressed["best_prompt"] = f"Decide which is sarcastic. {XSS} Answer (A) or (B)."
    return [regressed, failed_job("word_sorting"), make_job("navigate", 25.0, seed=1, steps=18)]


def _stats_lines(seconds: int) -> list[str]:
    lines = []
    for t in range(1, seconds + 1):
        sim = {"requests": 40 * t, "rate_limited": t // 7, "retries": t // 5, "cost_usd": 0.004 * t}
        opt = {"requests": 3 * t, "rate_limited": t // 20, "retries": t // 20, "cost_usd": 0.01 * t}
        event = {"event": "stats", "t": float(t), "spent_usd": 0.014 * t}
        lines.append(json.dumps({**event, "endpoints": {"task": sim, "optimizer": opt}}))
        lines.append(json.dumps({"event": "step_finished", "job": "navigate", "step": t}))
    return lines


def make_run(run_dir: Path, jobs: list[dict[str, Any]], *, seconds: int = 60) -> Path:
    """Write results.json and journal.jsonl (its last line cut short) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    endpoint = {
        "requests": 2400,
        "retries": {"rate_limited": 8, "server_error": 3},
        "rate_limited": 8,
        "failures": 0,
        "cache_hits": 12,
        "input_tokens": 812_000,
        "output_tokens": 95_000,
        "cost_usd": 0.24,
        "latency_p50_s": 0.061,
        "latency_p95_s": 0.21,
        "latency_p99_s": 0.48,
    }
    results = {
        "schema": 1,
        "run_id": "20261122-231500-ab12",
        "started_at": "2026-11-22T23:15:00Z",
        "finished_at": "2026-11-22T23:16:00Z",
        "status": "finished",
        "config_path": "examples/sim_demo.toml",
        "strategy": {"trajectory": "relevance", "k": 3, "update": "generation"},
        "budget": {"cap_usd": 5.0, "spent_usd": 0.84, "cap_tokens": None, "spent_tokens": 907_000},
        "jobs": jobs,
        "totals": {
            "calls": 2580,
            "cache_hits": 12,
            "retries": 11,
            "input_tokens": 812_000,
            "output_tokens": 95_000,
            "cost_usd": 0.84,
            "wall_s": 60.0,
        },
        "endpoints": {"task": endpoint, "optimizer": {**endpoint, "requests": 180}},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    journal = "\n".join(_stats_lines(seconds)) + '\n{"event": "stats", "t": 61.0, "endpoi'
    (run_dir / "journal.jsonl").write_text(journal)
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run", three_jobs())


# --- the page ----------------------------------------------------------------------------------


def test_the_report_is_self_contained(run_dir: Path) -> None:
    html = render_report(run_dir)
    for forbidden in ("http://", "https://", "//cdn", "<script src", "<link", "@import"):
        assert forbidden not in html


def test_every_job_name_appears_escaped(run_dir: Path) -> None:
    html = render_report(run_dir)
    for name in ("navigate", "word_sorting", "snarks &amp; &lt;b&gt;sarcasm&lt;/b&gt;"):
        assert name in html
    assert "<b>sarcasm</b>" not in html


def test_the_summary_lists_jobs_most_improved_first(run_dir: Path) -> None:
    html = render_report(run_dir)
    summary = html[html.index('<table class="summary">') :]
    summary = summary[: summary.index("</table>")]
    order = [summary.index(n) for n in ("navigate", "snarks", "word_sorting")]
    assert order == sorted(order)


def test_prompts_from_the_model_are_escaped(run_dir: Path) -> None:
    html = render_report(run_dir)
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_report_has_charts(run_dir: Path) -> None:
    html = render_report(run_dir)
    # per shown job: score curve and edit distances (2 jobs with steps); run: 3 endpoint charts
    assert html.count("<svg") == 2 * 2 + 3
    assert "<circle" in html
    assert "<path" in html


def test_long_prompts_are_cut_in_the_trajectory_but_whole_as_the_best(tmp_path: Path) -> None:
    job = make_job("long", 10.0, steps=3)
    long_prompt = "word " * 2000
    for entry in job["trajectory"]:
        entry["prompt"] = long_prompt
    job["best_prompt"] = long_prompt
    html = render_report(make_run(tmp_path, [job]))
    assert html.count(long_prompt.strip()) == 2  # the best prompt, and in its diff
    assert html.count("(+9,400 characters)") == 4


def test_a_truncated_journal_line_is_tolerated(run_dir: Path) -> None:
    assert (run_dir / "journal.jsonl").read_text().endswith('"endpoi')
    assert "Requests (cumulative)" in render_report(run_dir)


def test_a_missing_journal_still_renders(run_dir: Path) -> None:
    (run_dir / "journal.jsonl").unlink()
    assert "No stats samples" in render_report(run_dir)


def test_a_resumed_runs_sessions_are_joined_on_one_time_line(tmp_path: Path) -> None:
    def stats(t: float, requests: int) -> str:
        return json.dumps({"event": "stats", "t": t, "endpoints": {"sim": {"requests": requests}}})

    journal = tmp_path / "journal.jsonl"
    lines = ['{"event": "run_started", "t": 0}', stats(1, 10), stats(2, 20)]
    lines += ['{"event": "run_started", "t": 0}', stats(1, 5), "not json"]
    journal.write_text("\n".join(lines))
    samples = stats_samples(journal)
    assert [(t, eps["sim"]["requests"]) for t, eps in samples] == [(1, 10), (2, 20), (3, 25)]


def test_a_results_file_with_little_in_it_still_renders(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"jobs": [{"name": "bare"}, {}]}))
    html = render_report(tmp_path)
    assert "bare" in html
    assert "no dollar cap" in html


def test_a_run_without_jobs_renders(tmp_path: Path) -> None:
    make_run(tmp_path, [])
    assert "of 0 jobs" in render_report(tmp_path)


def test_a_missing_results_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"results\.json: not found"):
        render_report(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "not valid JSON"), ("[1, 2]", "expected an object"), ('{"a": 1}', "'jobs'")],
)
def test_invalid_results_are_config_errors(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(ConfigError, match=problem):
        render_report(tmp_path)


def test_write_report_replaces_report_html_atomically(run_dir: Path) -> None:
    (run_dir / "report.html").write_text("old")
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "journal.jsonl",
        "report.html",
        "results.json",
    ]


def test_word_diff_marks_insertions_and_deletions() -> None:
    diff = word_diff("Think step by step.", "Think slowly step by step <now>.")
    assert diff == ("Think <ins>slowly</ins> step by <del>step.</del> <ins>step &lt;now&gt;.</ins>")


@pytest.mark.timeout(300)  # 25 s at a load average of 12 on 2 cores
def test_a_thousand_jobs_render_quickly_and_compactly(tmp_path: Path) -> None:
    jobs = [make_job(f"task-{i:04d}", (i % 41) - 15.0, seed=i, steps=18) for i in range(1000)]
    run = make_run(tmp_path / "big", jobs, seconds=8 * 3600)
    started = time.process_time()  # CPU time: a busy machine stretches the wall time many-fold
    html = render_report(run)
    assert time.process_time() - started < 5.0  # 0.6-0.7 s
    assert len(html.encode()) < 5_000_000
    assert html.count("<details") == 50 + 1  # 50 jobs in detail plus the run settings
    assert "the other 950" in html
    assert all(f"task-{i:04d}" in html for i in range(1000))


# --- in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="gpo-chromium-")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    try:
        return subprocess.run(
            [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=50, check=False
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_parses_and_renders_the_report(run_dir: Path) -> None:
    page = write_report(run_dir).as_uri()
    dom = _chromium("--dump-dom", page).stdout
    for name in ("navigate", "word_sorting", "snarks"):
        assert re.search(rf"<b>{name}", dom), name
    png = run_dir / "report.png"
    _chromium(f"--screenshot={png}", "--window-size=1400,2000", page)
    assert png.exists()
    assert png.stat().st_size > 10_000


def test_a_job_shows_its_unread_outputs_and_dropped_optimizer_replies(tmp_path: Path) -> None:
    job = make_job("navigate", 10.0, steps=2)
    job |= {"outputs_judged": 400, "unextractable": 12}
    job["optimizer_replies"] = {"parse_failures": 4, "rejected_unchanged": 2}
    job["step_records"][0] |= {"rejected_unchanged": 2, "rejected_exemplar_copy": 1}
    html = render_report(make_run(tmp_path, [job]))
    assert "No answer read in 12 of 400 task outputs (3.0%)" in html
    assert "optimizer replies dropped: 4 without tags, 2 returning the current prompt." in html
    assert "<th>rejected</th>" in html
    assert '<span title="2 unchanged, 1 copying the meta-prompt">3</span>' in html


def test_a_job_without_counts_shows_no_reading_note(run_dir: Path) -> None:
    assert "No answer read" not in render_report(run_dir)


def test_a_step_shows_how_many_candidates_racing_stopped_and_charts_none_of_them(
    tmp_path: Path,
) -> None:
    job = make_job("navigate", 10.0, steps=2)
    dots = score_chart(job).count('r="2.6"')
    candidates = job["step_records"][0]["candidates"]
    candidates[0] |= {"new": True, "raced_out": True, "examples_scored": 12}
    candidates[1] |= {"new": True, "raced_out": True, "examples_scored": 24}
    html = render_report(make_run(tmp_path, [job]))
    new = sum(c["new"] is True for c in candidates)
    assert f"<td>8 ({new}, 2 raced out)</td>" in html
    assert score_chart(job).count('r="2.6"') == dots - 2  # partial scores are not charted
