"""Logging: the library stays quiet in a host that configured nothing; the CLI shows and files it.

The library cases run in a fresh interpreter (a subprocess), as a host application would.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from pipeline._log import get_logger
from pipeline.cli import _logs as logs
from tests.cli_helpers import BUDGET_S, PROCESS_S, read_json, run_gpo

_EMBEDDED_RUN = """
import json, random, sys
import anyio
from pipeline import ChatRequest, EndpointConfig, open_gateway
from pipeline.llm._endpoint import RetryPolicy
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig, open_simulator

async def main() -> None:
    sim_config = SimConfig(seed=2, rpm=6000, faults=FaultSpec.parse("500=0.3"))
    async with open_simulator(sim_config) as sim:
        endpoint = EndpointConfig(
            name="sim", model="sim-1", base_url=sim.base_url,
            retry=RetryPolicy(max_attempts=8, base_s=0.01, cap_s=0.05),
        )
        async with open_gateway([endpoint], rng=random.Random(0)) as gateway:
            for i in range(20):
                await gateway.chat("sim", ChatRequest.of(f"What is {i} plus {i}?", seed=i))
            stats, limits = gateway.statistics()["sim"], gateway.limiter("sim").state()
    with open(sys.argv[1], "w") as out:
        json.dump({"retries": stats.retries_total, "rpm_learned": limits.rpm_learned}, out)

anyio.run(main)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_S,
        check=False,
    )


@pytest.mark.subprocess
@pytest.mark.timeout(BUDGET_S)
def test_an_embedded_run_writes_nothing_to_stdout_and_no_info_to_stderr(tmp_path: Path) -> None:
    done = _python(_EMBEDDED_RUN, str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    happened = read_json(tmp_path / "out.json")
    assert happened["retries"] > 0  # llm_retry events were logged (at INFO)
    assert happened["rpm_learned"]  # and rate_limit_learned
    assert done.stdout == ""
    for event in ("llm_retry", "rate_limit_learned", "sim_stopped"):
        assert event not in done.stderr


@pytest.mark.subprocess
@pytest.mark.timeout(BUDGET_S)
def test_a_library_warning_reaches_stderr_only_as_one_line() -> None:
    done = _python(
        """
        from pipeline._log import get_logger
        get_logger("gpo.test").warning("cache_moved_aside", path="a.sqlite", attempt=2)
        get_logger("gpo.test").info("not_shown")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == "cache_moved_aside path='a.sqlite' attempt=2\n"


# --- the command line: pipeline.cli._logs ----------------------------------------------


@pytest.fixture
def gpo_logger() -> Iterator[logging.Logger]:
    """The ``gpo`` logger, restored (handlers, level, structlog's configuration) afterwards."""
    logger = logging.getLogger("gpo")
    handlers, level = list(logger.handlers), logger.level
    try:
        yield logger
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def test_the_console_shows_the_chosen_level_on_its_stream(gpo_logger: logging.Logger) -> None:
    quiet, verbose = io.StringIO(), io.StringIO()
    logs.configure(level=logging.WARNING, stream=quiet)
    get_logger("gpo.gateway").info("llm_retry", endpoint="sim")
    logs.configure(level=logging.INFO, stream=verbose)  # -v
    get_logger("gpo.gateway").info("llm_retry", endpoint="sim")
    assert quiet.getvalue() == ""
    assert "llm_retry" in verbose.getvalue()
    assert "endpoint=sim" in verbose.getvalue()
    assert len(gpo_logger.handlers) == 1  # the second call replaced the first one's handler


def test_json_console_lines_are_json_objects(gpo_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure(json=True, level=logging.WARNING, stream=stream)
    get_logger("gpo.run").warning("run_interrupted", signal="SIGINT")
    event = orjson.loads(stream.getvalue())
    assert (event["event"], event["signal"], event["level"]) == (
        "run_interrupted",
        "SIGINT",
        "warning",
    )
    assert "timestamp" in event


def test_to_file_writes_every_info_event_with_its_context_then_detaches(
    gpo_logger: logging.Logger, tmp_path: Path
) -> None:
    stream, path = io.StringIO(), tmp_path / "logs.jsonl"
    logs.configure(level=logging.WARNING, stream=stream)
    handlers = list(gpo_logger.handlers)
    structlog.contextvars.bind_contextvars(run_id="run-1")
    with logs.to_file(path, json=False):
        get_logger("gpo.gateway").bind(job="j1").info("llm_retry", endpoint="sim")
        get_logger("gpo.gateway").debug("not_filed")
    get_logger("gpo.gateway").info("after_the_block")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["event"] for line in lines] == ["llm_retry"]
    assert lines[0]["run_id"] == "run-1"
    assert lines[0]["job"] == "j1"
    assert lines[0]["level"] == "info"
    assert stream.getvalue() == ""  # INFO stays off the console at WARNING
    assert gpo_logger.handlers == handlers
    assert gpo_logger.level == logging.WARNING


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_file_on_a_full_disk_is_given_up_with_one_warning(
    gpo_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(level=logging.WARNING, stream=io.StringIO())
    with logs.to_file(Path("/dev/full"), json=False):  # every write: "No space left on device"
        for attempt in range(3):
            get_logger("gpo.gateway").info("llm_retry", attempt=attempt)
    err = capsys.readouterr().err
    assert err.count("warning: log events are no longer written to /dev/full") == 1
    assert "Logging error" not in err
    assert "Traceback" not in err


@pytest.mark.subprocess
@pytest.mark.timeout(BUDGET_S)
def test_gpo_run_files_its_log_events_with_the_run_id(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(
        textwrap.dedent(
            """\
            [run]
            seed = 1
            [simulator]
            seed = 1
            faults = "500=0.05"
            [endpoints.sim]
            kind = "simulator"
            model = "sim-1"
            [optimizer]
            preset = "gpo"
            epochs = 1
            candidates = 2
            [[jobs]]
            data = "builtin:arithmetic"
            dev_size = 8
            test_size = 8
            """
        )
    )
    done = run_gpo(["run", "run.toml", "--run-dir", "rd"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = read_json(tmp_path / "rd" / "run.json")["run_id"]
    events = [
        orjson.loads(line) for line in (tmp_path / "rd" / "logs.jsonl").read_bytes().splitlines()
    ]
    assert any(event["event"] == "llm_retry" for event in events)
    assert all(event["run_id"] == run_id for event in events)
    assert "llm_retry" not in done.stderr + done.stdout
