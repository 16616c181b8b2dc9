"""Helpers for the end-to-end tests of the ``gpo`` command line (``tests/test_cli.py``).

Everything runs as real subprocesses: ``gpo sim`` as a separate OpenAI-compatible server that
counts the HTTP requests reaching it (it logs ``sim_stopped requests=N`` on stderr when stopped
with SIGTERM, at ``-v``), and ``gpo run``/``estimate``/``report``/``demo`` against it. Every
process started here is stopped and waited for, whatever happens in the test.

Time limits. These tests mostly start Python processes and wait for them, which a busy machine
stretches many times over: at a load average of 12 on 2 cores, ``gpo --help`` took 6-10 s (1 s
idle), the 24 bad-input cases 104 s together (16 s idle) and ``gpo demo`` 142 s (28 s idle).
Every limit here is a hang detector, never a speed check: at least 5x what the wait took at that
load. The files of these tests mark them ``subprocess`` with a pytest-timeout budget of their
own (``BUDGET_S``, ``LONG_BUDGET_S`` for the two longest processes) above the waits they make;
in-process tests keep pyproject's 60 s unless they state their own.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

PROCESS_S = 300.0  # a gpo process to finish, or a condition to hold while one runs
STARTUP_S = 120.0  # the simulator to say it is listening
STOP_S = 60.0  # a signalled process to exit (then SIGKILL)
BUDGET_S = 600  # pytest-timeout of a test of a few gpo processes (and of its module's fixtures)
LONG_PROCESS_S = 800.0  # a process of about 30 s idle: gpo demo, the README's optimizer example
LONG_BUDGET_S = 900  # pytest-timeout of a test that runs one

KEY_ENV = "GPO_TEST_KEY"
TEST_KEY = "sk-test-cli"
MAX_IN_FLIGHT = 16

_GPO_SCRIPT = Path(sys.executable).with_name("gpo")
GPO: tuple[str, ...] = (
    (str(_GPO_SCRIPT),) if _GPO_SCRIPT.exists() else (sys.executable, "-m", "pipeline.cli")
)
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)/v1)")
_STOPPED = re.compile(r"sim_stopped\b.*\brequests=(\d+)")
_STEP = b'"event":"step"'


def free_port() -> int:
    """A TCP port that was free a moment ago (for a server that must keep its URL across
    restarts: a run directory refuses a resume whose endpoint URL changed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpo_env(key: str | None = TEST_KEY, **extra: str) -> dict[str, str]:
    """The environment of a ``gpo`` subprocess: ``GPO_TEST_KEY=key`` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "OPENAI_BASE_URL")}
    if key is not None:
        env[KEY_ENV] = key
    env.update(extra)
    return env


def run_gpo(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = PROCESS_S,
) -> subprocess.CompletedProcess[str]:
    """``gpo ARGS`` to completion (killed if it outlasts ``timeout``)."""
    return subprocess.run(
        [*GPO, *args],
        cwd=cwd,
        env=dict(env) if env is not None else gpo_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = STOP_S) -> int:
    """Send ``sig`` unless it has ended, wait (SIGKILL after ``timeout``); the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Sim:
    """A running ``gpo sim``; ``requests`` (every HTTP request it received, as it logged when it
    stopped) is set when its ``with`` block exits."""

    url: str
    port: int
    requests: int | None = None


@contextmanager
def running_sim(
    logs: Path,
    *,
    port: int = 0,
    args: Sequence[str] = ("--seed", "3", "--latency-ms", "20", "--latency-sigma", "0.3"),
) -> Iterator[Sim]:
    """``gpo -v sim`` on 127.0.0.1 until the block exits; its stderr goes to the file ``logs``."""
    command = [*GPO, "-v", "sim", "--port", str(port), *args]
    with logs.open("wb") as err:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, env=gpo_env(key=None)
        )
    assert process.stdout is not None
    try:
        line = _first_line(process.stdout, timeout=STARTUP_S)
        match = _LISTENING.fullmatch(line)
        assert match is not None, f"gpo sim said {line!r}; stderr: {_text(logs)}"
        sim = Sim(url=match.group(1), port=int(match.group(2)))
        yield sim
    finally:
        code = stop(process)
        process.stdout.close()
    assert code == 0, f"gpo sim exited {code}: {_text(logs)}"
    stopped = _STOPPED.findall(_text(logs))
    assert len(stopped) == 1, f"no sim_stopped line: {_text(logs)}"
    sim.requests = int(stopped[0])


def _first_line(stream: IO[bytes], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line from the simulator within {timeout}s"
    return stream.readline().decode().strip()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def background_gpo(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``gpo ARGS`` started in the background (output to ``cwd/bg.out``, ``cwd/bg.err``);
    killed and waited for when the block exits if still running."""
    with (cwd / "bg.out").open("wb") as out, (cwd / "bg.err").open("wb") as err:
        process = subprocess.Popen(
            [*GPO, *args],
            cwd=cwd,
            env=dict(env) if env is not None else gpo_env(),
            stdout=out,
            stderr=err,
        )
    try:
        yield process
    finally:
        stop(process, signal.SIGKILL)


def wait_for(
    condition: Callable[[], bool],
    process: subprocess.Popen[Any],
    *,
    timeout: float = PROCESS_S,
    poll_s: float = 0.01,
) -> None:
    """Poll until ``condition()`` holds; fail if ``process`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended first (exit {process.returncode})"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(poll_s)


def journal_steps(run_dir: Path) -> int:
    """How many ``step`` events a run directory's journal holds so far."""
    journal = run_dir / "journal.jsonl"
    return journal.read_bytes().count(_STEP) if journal.exists() else 0


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def config_text(
    url: str,
    *,
    jobs: Sequence[str] = ("arithmetic", "object_counting", "boolean_expressions"),
    dev_size: int = 16,
    test_size: int = 32,
    optimizer: str = "",
    endpoint: str = "",
) -> str:
    """A run config: one ``openai`` endpoint ``sim`` at ``url`` (key from ``GPO_TEST_KEY``,
    at most ``MAX_IN_FLIGHT`` requests in flight, priced), the gpo preset, built-in tasks."""
    job_tables = "".join(
        f'\n[[jobs]]\ndata = "builtin:{name}"\ndev_size = {dev_size}\ntest_size = {test_size}\n'
        for name in jobs
    )
    return f"""\
[run]
seed = 1

[endpoints.sim]
kind = "openai"
model = "sim-1"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
max_in_flight = {MAX_IN_FLIGHT}
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.60 }}
{endpoint}
[optimizer]
preset = "gpo"
embedding_endpoint = "sim"
{optimizer}{job_tables}"""
