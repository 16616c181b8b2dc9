"""The ``run``, ``estimate``, ``report`` and ``config schema`` subcommands of ``gpo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli._run import open_session, run_session
from pipeline.config._load import build_jobs, json_schema, load_config
from pipeline.report._page import write_report
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
    run.set_defaults(handler=_run)
    est = sub.add_parser(
        "estimate",
        help="calls, tokens and dollars a run will use",
        description="Before spending anything: the calls, tokens and dollars "
        "a run will use (expected and worst case) and a wall-time lower bound.",
        epilog="example:\n  gpo estimate examples/bbh.toml",
        formatter_class=fmt,
    )
    est.add_argument("config", type=Path, help="the TOML configuration")
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


async def _run(args: argparse.Namespace) -> int:
    session = open_session(
        args.config, run_dir=args.run_dir, budget_usd=args.budget_usd, json=args.json
    )
    return await run_session(session)


async def _estimate(args: argparse.Namespace) -> int:
    config = load_config(args.config, require_keys=False)  # estimating needs no key
    result = estimate(
        build_jobs(config), config.settings, config.endpoints, simulated=config.simulated
    )
    print(render(result))
    return 0


async def _report(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))
    return 0


async def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
