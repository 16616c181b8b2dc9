"""``gpo sim``: run the simulator as a server until SIGINT or SIGTERM.

The first line on stdout is exactly ``listening on http://HOST:PORT/v1``, so a parent process can
read the port it picked. ``python -m pipeline.sim.cli [options]`` runs the same thing standalone.
"""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from pipeline._log import get_logger
from pipeline.errors import ConfigError
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import Replier, SimConfig, load_brain, open_simulator

EXIT_OK = 0
EXIT_USAGE = 2

_HELP = "run the OpenAI-compatible simulator (rate limits, faults, seeded answers)"
_EXAMPLES = """examples:
  gpo sim --port 8000                              serve on http://127.0.0.1:8000/v1
  gpo sim --port 8000 --rpm 600 --latency-ms 50    with a rate limit and latency
  gpo sim --faults '429=0.05,reset=0.01'           with injected faults
  gpo sim --batch-delay-s 5 --batch-error-rate 0.1 batches done in 5 s, 10 % of requests erroring
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``sim`` subcommand, dispatching to :func:`serve`."""
    parser = subparsers.add_parser(
        "sim",
        help=_HELP,
        description=_HELP,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=serve)


def main_sim(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (without a subcommand) and serve; the exit code."""
    parser = argparse.ArgumentParser(
        prog="gpo sim",
        description=_HELP,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return anyio.run(serve, args)


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM: 0 after a clean stop, 2 for bad options or tasks."""
    try:
        config = _config(args)
        brain = load_brain(config)
    except (ValueError, OSError, ConfigError) as exc:
        print(f"gpo sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await _serve_until_signal(config, brain)
    except OSError as exc:
        print(f"gpo sim: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


async def _serve_until_signal(config: SimConfig, brain: Replier) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_simulator(config, brain=brain) as simulator:
            print(f"listening on {simulator.base_url}", flush=True)
            get_logger("gpo.sim").info("sim_listening", base_url=simulator.base_url)
            async for _ in signals:
                break


def _config(args: argparse.Namespace) -> SimConfig:
    try:
        faults = FaultSpec.parse(args.faults)
    except ValueError as exc:
        raise ValueError(f"--faults: {exc}") from None
    return SimConfig(
        host=args.host,
        port=args.port,
        rpm=args.rpm,
        tpm=args.tpm,
        latency_ms=args.latency_ms,
        latency_sigma=args.latency_sigma,
        seed=args.seed,
        faults=faults,
        task_paths=tuple(args.tasks),
        burst_s=args.burst_s,
        batch_delay_s=args.batch_delay_s,
        batch_expire_s=args.batch_expire_s,
        batch_fail_rate=args.batch_fail_rate,
        batch_error_rate=args.batch_error_rate,
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)")
    add("--rpm", type=float, default=None, help="requests per minute (default: unlimited)")
    add("--tpm", type=float, default=None, help="tokens per minute (default: unlimited)")
    add("--latency-ms", type=float, default=0.0, help="mean latency per call (default: 0)")
    add(
        "--latency-sigma",
        type=float,
        default=0.6,
        help="lognormal shape of the latency; 0 = constant (default: 0.6)",
    )
    add("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    add("--faults", default="", help="fault spec, e.g. '429=0.05,reset=0.01,quota'")
    add("--tasks", nargs="*", default=[], metavar="PATH", help="task files for the answers")
    add("--burst-s", type=float, default=1.0, help="bucket size in seconds of refill (default: 1)")
    _add_batch_arguments(parser)


def _add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the batch APIs (``SimConfig.batch_*``)."""
    add = parser.add_argument
    add(
        "--batch-delay-s",
        type=float,
        default=1.0,
        help="seconds from creating a batch to its completion (default: %(default)s)",
    )
    add(
        "--batch-expire-s",
        type=float,
        default=86_400.0,
        help="seconds after which an unfinished batch expires (default: %(default)s)",
    )
    add(
        "--batch-fail-rate",
        type=float,
        default=0.0,
        help="share of batches that fail validation (default: 0)",
    )
    add(
        "--batch-error-rate",
        type=float,
        default=0.0,
        help="share of batched requests that error with a 500 (default: 0)",
    )


if __name__ == "__main__":
    sys.exit(main_sim())
