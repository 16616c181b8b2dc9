"""``gpo demo``: a real optimization run, offline, in well under a minute.

It starts the simulator in-process (a 60,000 RPM limit, ~30 ms heavy-tailed latency, a few
injected faults), optimizes six prompts on the built-in tasks concurrently with the ``gpo``
preset, shows live progress, and writes a run directory with results.json and report.html. It
is ``gpo run`` on the configuration below.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli._run import open_session, run_session

DEMO_CONFIG = """\
# The configuration `gpo demo` runs (see examples/ for more).
[run]
seed = 7
budget_usd = 1.00

[simulator]
seed = 7
rpm = 60000
latency_ms = 30
faults = "429=0.01,500=0.01,reset=0.002"

[endpoints.sim]
kind = "simulator"
price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }   # priced like gpt-4o-mini

[optimizer]
preset = "gpo"
task_endpoint = "sim"
embedding_endpoint = "sim"

[[jobs]]
data = "builtin:arithmetic"
dev_size = 24
test_size = 48

[[jobs]]
data = "builtin:word_sorting"
dev_size = 24
test_size = 48

[[jobs]]
data = "builtin:boolean_expressions"
dev_size = 24
test_size = 48

[[jobs]]
data = "builtin:object_counting"
dev_size = 24
test_size = 48

[[jobs]]
name = "arithmetic_terse"
data = "builtin:arithmetic"
initial_prompt = "Answer:"
dev_size = 24
test_size = 48

[[jobs]]
name = "counting_as_system"
data = "builtin:object_counting"
initial_prompt = "You count things."
placement = "system"
dev_size = 24
test_size = 48
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: six prompts optimized on the simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  gpo demo --run-dir runs/my-demo",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where to write the run (default: runs/demo-TIMESTAMP)",
    )
    p.set_defaults(handler=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    config = write_demo_config(run_dir)
    session = open_session(config, run_dir=run_dir, budget_usd=None, json=args.json)
    return await run_session(session)


def write_demo_config(run_dir: Path) -> Path:
    """The demo's configuration, next to its run directory."""
    path = run_dir.parent / f"{run_dir.name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(DEMO_CONFIG, encoding="utf-8")
    return path
