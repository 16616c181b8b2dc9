"""The ``run``, ``worker``, ``compare``, ``estimate``, ``report`` and ``config schema``
subcommands of ``gpo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli._compare import parse_presets
from pipeline.cli._run import open_session, run_session
from pipeline.config._load import build_jobs, json_schema, load_config
from pipeline.errors import ConfigError
from pipeline.report._page import write_report
from pipeline.runner._compare import ComparePlan, expand_jobs
from pipeline.runner._estimate import estimate, render

_RUN_EXAMPLES = """examples:
  gpo run examples/sim_demo.toml                    run (or resume) in the config's run dir
  gpo run examples/bbh.toml --run-dir runs/bbh-1    choose the run directory
  gpo run examples/bbh.toml --budget-usd 2.50       cap the whole run at $2.50
  gpo --json run examples/bbh.toml                  JSON log lines on stderr

Running again on the same run directory resumes it: finished steps come from the journal,
interrupted ones from the response cache, and no paid call is made twice.
exit codes: 0 finished, 1 a job failed or another error, 2 bad input (nothing spent),
3 stopped by a budget cap (best-so-far saved), 4 storage fault (fix it, then run again to
resume), 130 interrupted (resumable)
"""

_WORKER_EXAMPLES = """examples:
  gpo worker redis://10.0.0.5:6379/0                join the open run
  gpo worker redis://10.0.0.5:6379/0 --run RUN_ID   join that run

Exit codes: 0 the run is done (or no job was left), 2 bad input (no run to join, Redis
unreachable, a config that does not load here), 4 Redis lost for longer than 30 s.
"""

_COMPARE_EXAMPLES = """examples:
  gpo compare examples/bbh.toml --presets gpo,ape,opro,baseline --seeds 3
  gpo estimate examples/bbh.toml --presets gpo,baseline --seeds 3   what it will cost

Runs every job of the config under each preset and seed as one run (one cache, one budget:
calls made alike are paid once), then compares each preset with the first: mean test accuracy,
best dev accuracy, the dev-test gap, cost, and per (job, seed) pair the mean test difference
with its standard error, wins/ties/losses and an exact sign test; it says when a difference is
within noise. Writes RUN_DIR/compare.json and a section of report.html; the run directory
defaults to the config's run directory with -compare appended. Running it again resumes it
(with the same --presets and --seeds). Exit codes as gpo run.
"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser(
        "run",
        help="optimize the prompts a config describes",
        description="Optimize the prompts a TOML config describes.",
        epilog=_RUN_EXAMPLES,
        formatter_class=fmt,
    )
    run.add_argument("config", type=Path, help="the TOML configuration")
    run.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: [run].dir, else runs/CONFIG_STEM)",
    )
    run.add_argument(
        "--budget-usd",
        type=float,
        default=None,
        help="cap the run's total spend in USD (overrides [run].budget_usd)",
    )
    run.add_argument(
        "--cancel-batches",
        action="store_true",
        help="on Ctrl-C, also cancel the provider batches still running (default: leave them "
        "running; the next run of the same run directory adopts their answers)",
    )
    run.add_argument(
        "--workers",
        type=_count,
        default=None,
        metavar="N",
        help="distribute the jobs over N local worker processes (and any `gpo worker` that "
        "joins); needs [run] coordination or GPO_REDIS_URL (see README: Beyond one process)",
    )
    run.add_argument(
        "--reclaim-s",
        type=_positive,
        default=30.0,
        metavar="S",
        help="with --workers: a job whose worker has not renewed it for S seconds is taken "
        "over by another worker (default 30)",
    )
    run.set_defaults(handler=_run)
    worker = sub.add_parser(
        "worker",
        help="work on a distributed run (gpo run --workers) from this machine",
        description="Join a distributed run published in Redis and work on its jobs until it "
        "is done. The run's config and data files must be at the same paths here.",
        epilog=_WORKER_EXAMPLES,
        formatter_class=fmt,
    )
    worker.add_argument("redis_url", help="the run's Redis, e.g. redis://host:6379/0")
    worker.add_argument(
        "--run", default=None, help="the run's id (default: the first run open for workers)"
    )
    worker.add_argument(
        "--reclaim-s",
        type=_positive,
        default=30.0,
        help="take over a job whose worker has not renewed it for this long (default 30)",
    )
    worker.add_argument("--name", default=None, help="this worker's name (default: host-pid)")
    worker.set_defaults(handler=_worker)
    compare = sub.add_parser(
        "compare",
        help="is optimizing worth it? the config's jobs under several presets and seeds",
        description="Run the config's jobs under each preset and seed, and compare the "
        "presets with the first one.",
        epilog=_COMPARE_EXAMPLES,
        formatter_class=fmt,
    )
    compare.add_argument("config", type=Path, help="the TOML configuration")
    _compare_options(compare, required=True)
    compare.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: the config's run directory, with -compare appended)",
    )
    compare.add_argument(
        "--budget-usd",
        type=float,
        default=None,
        help="cap the whole comparison's spend in USD (overrides [run].budget_usd)",
    )
    compare.set_defaults(handler=_compare)
    est = sub.add_parser(
        "estimate",
        help="calls, tokens and dollars a run will use",
        description="Before spending anything: the calls, tokens and dollars "
        "a run will use (expected and worst case) and a wall-time lower bound.",
        epilog="example:\n  gpo estimate examples/bbh.toml",
        formatter_class=fmt,
    )
    est.add_argument("config", type=Path, help="the TOML configuration")
    _compare_options(est, required=False)
    est.add_argument(
        "--batch-latency-min",
        type=_positive,
        default=30.0,
        help="for endpoints with batch on: the minutes a provider batch is assumed to take "
        "(default 30)",
    )
    est.set_defaults(handler=_estimate)
    rep = sub.add_parser(
        "report",
        help="(re)write a run directory's report.html",
        description="Write RUN_DIR/report.html from its results and journal.",
        epilog="example:\n  gpo report runs/bbh",
        formatter_class=fmt,
    )
    rep.add_argument("run_dir", type=Path, help="a run directory")
    rep.set_defaults(handler=_report)
    config = sub.add_parser(
        "config",
        help="the configuration file's JSON Schema",
        description="About the TOML configuration file.",
        formatter_class=fmt,
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    schema = actions.add_parser(
        "schema",
        help="print the JSON Schema of the configuration file",
        description="Print the JSON Schema of the TOML configuration file, for editors and "
        "tools that check TOML against a JSON Schema.",
        epilog="example:\n  gpo config schema > gpo.schema.json\n"
        "  and begin a config with the line:  #:schema ./gpo.schema.json",
        formatter_class=fmt,
    )
    schema.set_defaults(handler=_config_schema)


def _compare_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    what = "" if required else " (to estimate gpo compare)"
    parser.add_argument(
        "--presets",
        type=parse_presets,
        required=required,
        default=None,
        metavar="P1,P2,...",
        help="presets to compare, the first the reference (gpo, opro, ape, apo, pe2, "
        f"baseline){what}",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="seeds per job and preset: [run].seed, +1, ... (default 1)",
    )


async def _compare(args: argparse.Namespace) -> int:
    session = open_session(
        args.config,
        run_dir=args.run_dir,
        budget_usd=args.budget_usd,
        json=args.json,
        presets=args.presets,
        seeds=args.seeds,
    )
    return await run_session(session)


async def _run(args: argparse.Namespace) -> int:
    session = open_session(
        args.config, run_dir=args.run_dir, budget_usd=args.budget_usd, json=args.json
    )
    session.cancel_batches = args.cancel_batches
    session.workers = args.workers
    session.reclaim_s = args.reclaim_s
    return await run_session(session)


async def _worker(args: argparse.Namespace) -> int:
    from pipeline.dist._worker import work

    ended = await work(args.redis_url, run=args.run, reclaim_s=args.reclaim_s, name=args.name)
    print(f"worker done: {ended} jobs ended here", file=sys.stderr)
    return 0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, found {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text}")
    return value


async def _estimate(args: argparse.Namespace) -> int:
    config = load_config(args.config, require_keys=False)  # estimating needs no key
    jobs = build_jobs(config)
    if args.presets is None and args.seeds != 1:
        raise ConfigError("--seeds: only with --presets (the estimate of a comparison)")
    if args.presets is not None:
        plan = ComparePlan(args.presets, args.seeds, config.seed)
        jobs = expand_jobs(jobs, plan, config.settings)
    result = estimate(
        jobs,
        config.settings,
        config.endpoints,
        simulated=config.simulated,
        batch_latency_s=args.batch_latency_min * 60,
    )
    print(render(result))
    if args.presets is not None:
        print(
            f"\ncomparison: {len(config.jobs)} jobs x {len(args.presets)} presets x "
            f"{args.seeds} seeds = {len(jobs)} jobs; the initial prompt's scoring, alike for "
            "the presets of a job and seed, is counted once, as it is paid."
        )
    return 0


async def _report(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))
    return 0


async def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
