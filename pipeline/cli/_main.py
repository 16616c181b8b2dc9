"""The ``gpo`` command line: the composition root for people at a terminal.

Exit codes: 0 finished, 1 anything else, 2 bad input (nothing spent), 3 stopped by a budget cap,
4 storage fault (the run directory could not be written; resumable), 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from pipeline.cli import _logs as logs
from pipeline.cli._exit import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_BUDGET,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
)
from pipeline.errors import BudgetExhausted, ConfigError, StorageError

_EPILOG = """examples:
  gpo demo                            offline demo on the built-in simulator
  gpo estimate examples/bbh.toml      what a run will cost, before spending anything
  gpo run examples/bbh.toml           run it (again: resume it)
  gpo compare examples/bbh.toml --presets gpo,baseline --seeds 3
                                      is optimizing worth it? presets side by side
  gpo report runs/bbh                 rewrite a run's report.html
  gpo sim --port 8000 --rpm 600       serve the simulator for other tools

exit codes: 0 finished, 1 a job failed or another error, 2 bad input (nothing spent),
3 stopped by a budget cap, 4 storage fault (resumable once fixed), 130 interrupted (resumable)
"""


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli._commands import add_parsers
    from pipeline.cli._demo import add_parser as add_demo_parser
    from pipeline.sim.cli import add_parser as add_sim_parser

    parser = argparse.ArgumentParser(
        prog="gpo",
        description="Asynchronous GPO prompt optimization against LLM APIs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="JSON log lines on stderr")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parsers(sub)
    add_demo_parser(sub)
    add_sim_parser(sub)
    return parser


def tune_gc(young: int = 50_000) -> None:
    """Set this process's garbage collector for thousands of jobs held at once (the library
    never touches it; a host decides). What is alive now (modules, classes, tables) is frozen out
    of every collection; the young generation is collected every ``young`` allocations instead
    of 700, so a request's short-lived objects die young rather than reach the old generation,
    whose collections walk every live object."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_gc()
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logs.configure(json=args.json, level=level)
    handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.handler
    try:
        return anyio.run(handler, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BudgetExhausted as exc:
        print(f"stopped by the budget: {exc}", file=sys.stderr)
        return EXIT_BUDGET
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit does not fail again on
    the pipe its reader closed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
