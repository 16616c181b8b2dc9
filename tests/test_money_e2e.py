"""The money promise end to end: ``gpo run`` against ``gpo sim`` as separate processes.

The simulator logs, when it stops, the tokens its answers billed: the ground truth of what a run
spent, whatever the run itself recorded. These tests kill runs, delete caches and fill disks,
and compare that truth with the cap and with the run's own ledger.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
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
    stop,
    wait_for,
)

# Every test runs gpo processes: a budget of their own, see tests/cli_helpers.py.
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(BUDGET_S)]

PRICE_IN, PRICE_OUT = 0.15e-6, 0.60e-6  # config_text's price, per token
_BILLED = re.compile(r"billed_input_tokens=(\d+).*billed_output_tokens=(\d+)")


def billed_usd(sim_log: Path) -> float:
    """What the simulator's answers billed, from its ``sim_stopped`` line."""
    found = _BILLED.findall(sim_log.read_text())
    assert len(found) == 1, sim_log.read_text()
    tokens_in, tokens_out = (int(n) for n in found[0])
    return tokens_in * PRICE_IN + tokens_out * PRICE_OUT


def ledger_usd(run_dir: Path) -> float:
    """The run's own record: settled spend plus open reservations, in full."""
    with contextlib.closing(sqlite3.connect(run_dir / "ledger.sqlite")) as db:
        spent = db.execute("SELECT pusd FROM spend WHERE scope = 'run'").fetchone()
        opened = db.execute("SELECT scopes, pusd FROM open").fetchall()
    held = sum(int(p) for scopes, p in opened if '"run"' in scopes)
    return ((int(spent[0]) if spent else 0) + held) / 1e12


def until(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> bool:
    """Poll until ``condition()`` holds (True) or ``process`` ends (False); fail on time-out."""
    deadline = time.monotonic() + PROCESS_S
    while not condition():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)
    return True


def test_kill_and_resume_cycles_never_spend_past_the_cap_at_the_server(tmp_path: Path) -> None:
    cap = 0.04
    port = free_port()  # one URL for every session: it is part of the run's config digest
    (tmp_path / "cfg.toml").write_text(config_text(f"http://127.0.0.1:{port}/v1"))
    run_dir = tmp_path / "K"
    args = ["run", "cfg.toml", "--run-dir", "K", "--budget-usd", str(cap)]
    truth = 0.0
    for cycle in range(3):
        log = tmp_path / f"sim-{cycle}.err"
        before = journal_steps(run_dir)
        with running_sim(log, port=port), background_gpo(args, cwd=tmp_path) as process:
            # killed after two more steps; a session may also end by itself at the cap (exit 3)
            if until(lambda: journal_steps(run_dir) >= before + 2, process):  # noqa: B023
                assert stop(process, signal.SIGKILL) == -signal.SIGKILL
            else:
                assert process.returncode == 3, (tmp_path / "bg.err").read_text()
        truth += billed_usd(log)
        assert truth <= ledger_usd(run_dir) + 1e-9, "the ledger under-counts after a kill"
        if cycle == 1:  # losing the cache costs answers, never the record of spend
            for name in ("cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm"):
                (run_dir / name).unlink(missing_ok=True)
    log = tmp_path / "sim-last.err"
    with running_sim(log, port=port):
        done = run_gpo(args, cwd=tmp_path)
    truth += billed_usd(log)
    assert done.returncode in (0, 3), done.stderr
    assert "Traceback" not in done.stderr
    results = read_json(run_dir / "results.json")
    print(f"billed at the server ${truth:.6f}, ledger ${results['budget']['spent_usd']:.6f}")
    assert truth <= cap
    assert truth <= results["budget"]["spent_usd"] + 1e-9 <= cap + 1e-9


# --- a full disk ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root, as CI and the dev machines are)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; the file, to delete to free the space."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def test_a_full_disk_stops_the_run_cleanly_and_it_resumes_once_freed(tmp_path: Path) -> None:
    disk = small_filesystem(tmp_path / "disk")
    with disk as mount:
        port = free_port()
        (tmp_path / "cfg.toml").write_text(config_text(f"http://127.0.0.1:{port}/v1"))
        run_dir = mount / "run"
        args = ["run", "cfg.toml", "--run-dir", str(run_dir)]
        log = tmp_path / "sim-1.err"
        with running_sim(log, port=port), background_gpo(args, cwd=tmp_path) as process:
            wait_for(lambda: journal_steps(run_dir) >= 2, process)
            filler = fill(mount)
            code = process.wait(timeout=PROCESS_S)
        stderr = (tmp_path / "bg.err").read_text()
        assert code == 4, stderr
        assert "Traceback" not in stderr
        assert "Logging error" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr
        assert str(run_dir) in errors[0]
        assert not (run_dir / "results.json").exists()
        assert billed_usd(log) <= ledger_usd(run_dir) + 1e-9, "spend was lost from the ledger"

        os.unlink(filler)
        with running_sim(tmp_path / "sim-2.err", port=port):
            done = run_gpo(args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        results = read_json(run_dir / "results.json")
        assert [job["status"] for job in results["jobs"]] == ["finished"] * 3
