"""``gpo compare``: the paired statistics, the expansion into jobs x presets x seeds, and a small
comparison on the in-process simulator (its table, compare.json, the report, resume checks)."""

from __future__ import annotations

import io
import itertools
import math
import re
import statistics
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli._compare import previous_job_requests
from pipeline.cli._main import build_parser
from pipeline.cli._run import open_session, run_session
from pipeline.errors import ConfigError
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import open_gateway
from pipeline.llm._pricing import FREE
from pipeline.runner._compare import (
    METHOD_KNOBS,
    ComparePlan,
    JobUsage,
    compare,
    compare_results,
    compared_strategy,
    expand_jobs,
)
from pipeline.runner._compare_stats import mean_and_se, paired, sign_test_p
from pipeline.runner._estimate import estimate
from pipeline.runner._jobs import Job, JobResult, OptimizerSettings, build_context
from pipeline.sim.server import SimConfig, open_simulator
from pipeline.sim.tasks import builtin_tasks
from stages.strategy import PRESETS, strategy
from tests.test_report import CHROMIUM
from tests.test_report import _chromium as chromium

# --- statistics ------------------------------------------------------------------------------


def brute_force_sign_p(wins: int, losses: int) -> float:
    """P(a split at least as uneven as wins:losses) by enumerating every sign sequence."""
    n = wins + losses
    extreme = max(wins, losses)
    uneven = sum(
        max(signs.count(1), n - signs.count(1)) >= extreme
        for signs in itertools.product((0, 1), repeat=n)
    )
    return min(1.0, uneven / (1 << n))


@pytest.mark.parametrize(("wins", "losses"), [(8, 1), (1, 8), (5, 5), (6, 0), (3, 2), (0, 1)])
def test_the_sign_test_is_exact_and_two_sided(wins: int, losses: int) -> None:
    assert sign_test_p(wins, losses) == pytest.approx(brute_force_sign_p(wins, losses))


def test_eight_wins_one_loss_is_the_binomial_tail() -> None:
    assert sign_test_p(8, 1) == pytest.approx(2 * (9 + 1) / 512)  # 2 (C(9,8) + C(9,9)) / 2^9


def test_ties_are_dropped_from_the_sign_test() -> None:
    stats = paired([5.0] * 8 + [-2.0] + [0.0] * 3)
    assert (stats.wins, stats.ties, stats.losses, stats.n) == (8, 3, 1, 12)
    assert stats.p_value == pytest.approx(brute_force_sign_p(8, 1))


def test_mean_and_standard_error_of_paired_differences() -> None:
    diffs = [1.0, 2.0, 3.0, 4.0, 10.0]
    mean, se = mean_and_se(diffs)
    assert mean == pytest.approx(statistics.fmean(diffs))
    assert se == pytest.approx(statistics.stdev(diffs) / math.sqrt(5))


def test_one_pair_has_no_standard_error_and_nothing_to_say() -> None:
    stats = paired([12.5])
    assert (stats.mean_diff, stats.se, stats.verdict) == (12.5, None, "too few pairs")
    assert paired([]).verdict == "too few pairs"


def test_a_consistent_difference_over_enough_pairs_is_better_or_worse() -> None:
    diffs = [9.0, 10.0, 11.0, 10.0, 9.5, 10.5, 12.0, 8.0]  # p = 2/256, |mean| >> 2 SE
    assert paired(diffs).verdict == "better"
    assert paired([-d for d in diffs]).verdict == "worse"


def test_too_few_pairs_for_the_sign_test_is_within_noise_however_large() -> None:
    stats = paired([10.0, 11.0, 9.0, 10.0, 10.5])  # |mean| >> 2 SE, but p = 2/32 >= 0.05
    assert stats.p_value == pytest.approx(1 / 16)
    assert stats.verdict == "within noise"


def test_a_difference_under_two_standard_errors_is_within_noise() -> None:
    diffs = [30.0, -20.0, 25.0, -15.0, 20.0, 1.0, 2.0, 3.0, 4.0]  # 7 wins 2 losses, mean 5.6
    stats = paired(diffs)
    mean, se = mean_and_se(diffs)
    assert mean is not None
    assert se is not None
    assert abs(mean) < 2 * se
    assert stats.verdict == "within noise"


# --- the plan and the expansion ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("presets", "seeds", "problem"),
    [
        (("gpo", "nope"), 1, "'nope'"),
        (("gpo", "gpo"), 1, "twice"),
        (("gpo",), 1, "at least two"),
        (("gpo", "ape"), 0, "--seeds"),
    ],
)
def test_a_bad_plan_is_a_config_error(presets: tuple[str, ...], seeds: int, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        ComparePlan(presets, seeds)


def small_job(name: str = "arithmetic", **kwargs: Any) -> Job:
    examples = next(t.examples for t in builtin_tasks() if t.name == name)
    return Job(name=name, examples=examples, task_endpoint="sim", dev_size=8, test_size=8, **kwargs)


def test_jobs_expand_seed_major_with_derived_names_and_seeds() -> None:
    plan = ComparePlan(("gpo", "baseline"), seeds=2, base_seed=7)
    jobs = expand_jobs([small_job("arithmetic"), small_job("word_sorting")], plan, SETTINGS)
    assert [(j.name, j.seed) for j in jobs] == [
        ("arithmetic@gpo#s1", 7),
        ("arithmetic@baseline#s1", 7),
        ("word_sorting@gpo#s1", 7),
        ("word_sorting@baseline#s1", 7),
        ("arithmetic@gpo#s2", 8),
        ("arithmetic@baseline#s2", 8),
        ("word_sorting@gpo#s2", 8),
        ("word_sorting@baseline#s2", 8),
    ]


SETTINGS = OptimizerSettings(strategy=strategy("gpo", candidates=2, epochs=1), seed=7)


def test_each_preset_keeps_its_method_and_the_run_s_effort() -> None:
    plan = ComparePlan(("gpo", "opro", "baseline"), seeds=1)
    own = small_job("word_sorting", strategy=strategy("pe2", candidates=3, exemplars=2))
    by_preset = {j.name: j.strategy for j in expand_jobs([small_job(), own], plan, SETTINGS)}
    opro = by_preset["arithmetic@opro#s1"]
    assert opro is not None
    assert {k: getattr(opro, k) for k in METHOD_KNOBS} == {
        k: getattr(PRESETS["opro"], k) for k in METHOD_KNOBS
    }
    assert (opro.candidates, opro.epochs) == (2, 1)
    baseline = by_preset["arithmetic@baseline#s1"]
    assert baseline is not None
    assert baseline.optimize is False
    mine = by_preset["word_sorting@gpo#s1"]
    assert mine == compared_strategy("gpo", strategy("pe2", candidates=3, exemplars=2))
    assert (mine.candidates, mine.exemplars, mine.schedule) == (3, 2, "cosine")


def test_the_presets_of_a_pair_share_splits_and_seeds_do_not() -> None:
    plan = ComparePlan(("gpo", "ape"), seeds=2)
    contexts = {
        j.name: build_context(j, i, SETTINGS)
        for i, j in enumerate(expand_jobs([small_job()], plan, SETTINGS))
    }
    gpo1, ape1 = contexts["arithmetic@gpo#s1"], contexts["arithmetic@ape#s1"]
    assert gpo1.splits == ape1.splits
    assert gpo1.seed == ape1.seed
    assert contexts["arithmetic@gpo#s2"].splits.test != gpo1.splits.test


def result(name: str, *, dev: float | None, test: float | None, cost: float = 0.0) -> JobResult:
    return JobResult(
        name=name,
        status="finished" if test is not None else "budget_exhausted",
        error=None,
        initial_prompt="p",
        best_prompt="p",
        initial_dev_score=dev,
        best_dev_score=dev,
        initial_test_score=test,
        best_test_score=test,
        steps=0,
        trajectory=(),
        step_records=(),
        cost_usd=cost,
    )


def test_the_comparison_pairs_each_job_and_seed_with_the_reference() -> None:
    plan = ComparePlan(("gpo", "baseline"), seeds=3)
    scores = {  # (job, seed): (gpo test, baseline test)
        ("a", 1): (80.0, 50.0),
        ("a", 2): (70.0, 70.0),
        ("a", 3): (None, 40.0),  # no test score: no pair
        ("b", 1): (60.0, 65.0),
        ("b", 2): (90.0, 40.0),
        ("b", 3): (75.0, 50.0),
    }
    results = []
    for (job, seed), (gpo_test, base_test) in scores.items():
        results.append(result(f"{job}@gpo#s{seed}", dev=90.0, test=gpo_test, cost=0.5))
        results.append(result(f"{job}@baseline#s{seed}", dev=55.0, test=base_test, cost=0.01))
    usage = {r.name: JobUsage(calls=10, tokens=100) for r in results}
    comparison = compare_results(plan, ["a", "b"], results, usage)
    gpo, base = comparison.presets
    assert (gpo.jobs, gpo.tested, base.tested) == (6, 5, 6)
    assert gpo.mean_test == pytest.approx(statistics.fmean([80, 70, 60, 90, 75]))
    assert gpo.dev_test_gap == pytest.approx(90 - statistics.fmean([80, 70, 60, 90, 75]))
    assert gpo.cost_usd == pytest.approx(3.0)
    assert (gpo.calls, gpo.tokens) == (60, 600)
    (pair,) = comparison.pairs
    diffs = [50 - 80, 70 - 70, 65 - 60, 40 - 90, 50 - 75]  # baseline minus gpo
    assert pair.stats.mean_diff == pytest.approx(statistics.fmean(diffs))
    assert (pair.stats.wins, pair.stats.ties, pair.stats.losses) == (1, 1, 3)
    unknown = compare_results(plan, ["a", "b"], results, usage, cost_known=False)
    assert unknown.presets[0].cost_usd is None  # never $0 for an unknown price


def test_requests_of_earlier_sessions_are_their_last_samples() -> None:
    events: list[dict[str, Any]] = [
        {"event": "run_started"},
        {"event": "stats", "job_requests": {"a@gpo#s1": 3}},
        {"event": "stats", "job_requests": {"a@gpo#s1": 5, "a@ape#s1": 1}},
        {"event": "run_started"},
        {"event": "stats", "job_requests": {"a@gpo#s1": 2}},
    ]
    assert previous_job_requests(events) == {"a@gpo#s1": 7, "a@ape#s1": 1}


# --- the library entry point -------------------------------------------------------------------


async def test_the_library_compares_presets_on_one_gateway() -> None:
    async with open_simulator(SimConfig(seed=1)) as sim:
        endpoint = EndpointConfig(name="sim", model="sim-1", base_url=sim.base_url, price=FREE)
        async with open_gateway([endpoint]) as gateway:
            comparison = await compare(
                gateway, [small_job()], presets=["ape", "baseline"], seeds=2, settings=SETTINGS
            )
            stats = gateway.statistics()["sim"]
    assert [row.preset for row in comparison.presets] == ["ape", "baseline"]
    assert all(row.tested == 2 for row in comparison.presets)
    assert comparison.pairs[0].stats.n == 2
    assert sum(row.calls for row in comparison.presets) == stats.requests  # all attributed
    # The baseline's calls (the initial prompt on dev and test, per seed) are ape's too: each
    # was paid once and answered from the cache (or the same flight) the other time.
    assert stats.cache_hits >= 2 * (8 + 8)


# --- gpo compare on the in-process simulator ---------------------------------------------------

CONFIG = """\
[run]
seed = 1
[simulator]
seed = 1
[endpoints.sim]
kind = "simulator"
model = "sim-1"
price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }
[optimizer]
epochs = 1
candidates = 2
[[jobs]]
data = "builtin:arithmetic"
dev_size = 8
test_size = 8
"""


async def run_compare(
    root: Path, presets: tuple[str, ...], seeds: int, run_dir: str = "cmp"
) -> tuple[int, str]:
    (root / "cfg.toml").write_text(CONFIG)
    session = open_session(
        root / "cfg.toml",
        run_dir=root / run_dir,
        budget_usd=None,
        json=False,
        presets=presets,
        seeds=seeds,
    )
    session.out = io.StringIO()
    code = await run_session(session)
    return code, session.out.getvalue()


@pytest.fixture
async def compared(tmp_path: Path) -> tuple[Path, int, str]:
    code, out = await run_compare(tmp_path, ("gpo", "baseline"), 2)
    return tmp_path, code, out


def test_gpo_compare_prints_the_presets_and_the_pairs(compared: tuple[Path, int, str]) -> None:
    _, code, out = compared
    assert code == 0
    assert "arithmetic@gpo#s1" in out
    assert "arithmetic@baseline#s2" in out
    header, _, gpo, baseline = out[out.index("preset ") :].splitlines()[:4]
    assert header.split() == ["preset", "jobs", "mean", "mean", "gap", "cost", "calls", "tokens"]
    assert gpo.split()[:2] == ["gpo", "2/2"]
    assert baseline.split()[:2] == ["baseline", "2/2"]
    assert "baseline vs gpo: " in out
    assert "too few" in out or "within noise" in out  # 2 pairs: never a verdict


def test_compare_json_has_its_documented_shape(compared: tuple[Path, int, str]) -> None:
    root, _, _ = compared
    document = orjson.loads((root / "cmp" / "compare.json").read_bytes())
    assert document["plan"] == {"presets": ["gpo", "baseline"], "seeds": [1, 2], "reference": "gpo"}
    assert (document["schema"], document["status"], document["cost_known"]) == (1, "finished", True)
    assert set(document["presets"][0]) == {
        "preset", "jobs", "finished", "tested", "mean_test", "mean_best_dev",
        "dev_test_gap", "cost_usd", "calls", "tokens",
    }  # fmt: skip
    (pair,) = document["pairs"]
    assert set(pair) == {
        "preset", "against", "n", "mean_diff", "se", "wins", "ties", "losses", "p_value",
        "verdict",
    }  # fmt: skip
    assert (pair["preset"], pair["against"], pair["n"]) == ("baseline", "gpo", 2)
    names = [j["name"] for j in document["jobs"]]
    assert names == [f"arithmetic@{p}#s{s}" for s in (1, 2) for p in ("gpo", "baseline")]
    results = orjson.loads((root / "cmp" / "results.json").read_bytes())
    spent = sum(j["cost_usd"] for j in document["jobs"])
    assert spent == pytest.approx(results["budget"]["spent_usd"])  # every dollar is a job's


def test_the_baseline_scores_the_initial_prompt_only(compared: tuple[Path, int, str]) -> None:
    root, _, _ = compared
    jobs = orjson.loads((root / "cmp" / "compare.json").read_bytes())["jobs"]
    for job in (j for j in jobs if j["preset"] == "baseline"):
        assert job["steps"] == 0
        assert job["best_test_score"] == job["initial_test_score"]


def test_the_report_has_a_comparison_section(compared: tuple[Path, int, str]) -> None:
    root, _, _ = compared
    page = (root / "cmp" / "report.html").read_text()
    assert '<h2 id="compare">Presets compared</h2>' in page
    assert "<title>gpo compare " in page
    assert page.index('id="compare"') < page.index('id="jobs"')


async def test_resuming_with_other_presets_is_refused_in_one_line(
    compared: tuple[Path, int, str],
) -> None:
    root, _, _ = compared
    with pytest.raises(ConfigError) as refused:
        await run_compare(root, ("gpo", "ape"), 2)
    message = str(refused.value)
    assert "\n" not in message
    assert "--presets gpo,baseline --seeds 2" in message
    assert "--presets gpo,ape" in message
    with pytest.raises(ConfigError, match="--seeds 2, not --presets gpo,baseline --seeds 3"):
        await run_compare(root, ("gpo", "baseline"), 3)


async def test_resuming_with_another_run_seed_names_the_seed(
    compared: tuple[Path, int, str],
) -> None:
    root, _, _ = compared
    (root / "cfg.toml").write_text(CONFIG.replace("seed = 1\n[simulator]", "seed = 5\n[simulator]"))
    with pytest.raises(ConfigError, match="seed: 1 -> 5"):
        open_session(
            root / "cfg.toml",
            run_dir=root / "cmp",
            budget_usd=None,
            json=False,
            presets=("gpo", "baseline"),
            seeds=2,
        )


async def test_resuming_a_finished_comparison_pays_nothing(
    compared: tuple[Path, int, str],
) -> None:
    root, _, _ = compared
    before = orjson.loads((root / "cmp" / "compare.json").read_bytes())
    code, _ = await run_compare(root, ("gpo", "baseline"), 2)
    after = orjson.loads((root / "cmp" / "compare.json").read_bytes())
    assert code == 0
    assert after["presets"] == before["presets"]  # the same calls, counted from the journal
    assert after["pairs"] == before["pairs"]


async def test_gpo_run_refuses_a_comparison_and_compare_a_run(
    compared: tuple[Path, int, str],
) -> None:
    root, _, _ = compared
    with pytest.raises(ConfigError, match="holds a comparison; resume it with gpo compare"):
        open_session(root / "cfg.toml", run_dir=root / "cmp", budget_usd=None, json=False)
    plain = open_session(root / "cfg.toml", run_dir=root / "plain", budget_usd=None, json=False)
    plain.out = io.StringIO()
    assert await run_session(plain) == 0
    with pytest.raises(ConfigError, match="holds a gpo run, not a comparison"):
        await run_compare(root, ("gpo", "baseline"), 2, run_dir="plain")


def test_the_default_run_directory_is_the_run_s_with_compare_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    session = open_session(
        Path("cfg.toml"),
        run_dir=None,
        budget_usd=None,
        json=False,
        presets=("gpo", "baseline"),
        seeds=1,
    )
    session.lock.release()
    assert session.rundir.path == Path("runs") / "cfg-compare"


# --- the estimate of a comparison ---------------------------------------------------------------


def test_the_estimate_counts_the_shared_initial_scoring_once() -> None:
    endpoints = [EndpointConfig(name="sim", model="sim-1", price=FREE)]
    jobs = [small_job()]

    def requests(presets: tuple[str, ...]) -> int:
        plan = ComparePlan(presets, seeds=2)
        return (
            estimate(expand_jobs(jobs, plan, SETTINGS), SETTINGS, endpoints)
            .endpoints["sim"]
            .requests
        )

    alone = estimate([small_job(seed=s) for s in (0, 1)], SETTINGS, endpoints)
    assert requests(("gpo", "baseline")) == alone.endpoints["sim"].requests
    assert requests(("baseline", "gpo")) == requests(("gpo", "baseline"))


async def test_gpo_estimate_covers_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cfg.toml").write_text(CONFIG)
    parser = build_parser()
    args = parser.parse_args(
        ["estimate", str(tmp_path / "cfg.toml"), "--presets", "gpo,ape,baseline", "--seeds", "3"]
    )
    assert await args.handler(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("9 jobs, ")
    assert "1 jobs x 3 presets x 3 seeds = 9 jobs" in out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_renders_the_comparison(compared: tuple[Path, int, str]) -> None:
    root, _, _ = compared
    dom = chromium("--dump-dom", (root / "cmp" / "report.html").as_uri()).stdout
    assert '<h2 id="compare">Presets compared</h2>' in dom
    assert re.search(r'<table class="summary pairs">.*<td class="l">baseline</td>', dom)
