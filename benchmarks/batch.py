"""B8 provider batches: the demo's six jobs with the task model's evaluation calls in batches,
against the same jobs realtime, on the simulator's batch API (each run in a fresh ``gpo run``
process; the simulator runs in this process, as the provider would, outside gpo).

Figures: dollars spent in batch mode / dollars of the realtime run (both from results.json; the
optimizer's calls stay realtime), with the best prompts and scores compared job by job; then a
batch-mode run killed with SIGKILL three times while a batch is in flight (seen in its
``batches.sqlite``) and resumed until it finishes: batches and requests the simulator saw
submitted twice (its own count), and whether the results equal the uninterrupted batch run's.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from pipeline.cli._demo import DEMO_CONFIG
from pipeline.sim.config import SimConfig
from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import open_simulator

PRICE = (
    "price = { input_per_mtok = 0.15, output_per_mtok = 0.60, "
    "batch_input_per_mtok = 0.075, batch_output_per_mtok = 0.30 }"
)
BATCH_KEYS = 'batch = "eval"\nbatch_linger_s = 0.5\nbatch_poll_s = 0.2\nbatch_max_poll_s = 1.0'
KILLS = 3


def config_text(url: str, *, batch: bool) -> str:
    """The demo's configuration on an outside simulator at ``url`` (kind "openai"), priced
    like gpt-4o-mini with its batch rates; with ``batch``, evaluation goes into batches."""
    head, jobs = DEMO_CONFIG.split("[[jobs]]", 1)
    run = head.split("[simulator]")[0]
    endpoint = (
        f'[endpoints.sim]\nkind = "openai"\nmodel = "sim-1"\nbase_url = "{url}"\n'
        f'api_key_env = ""\n{PRICE}\n' + (BATCH_KEYS + "\n" if batch else "")
    )
    optimizer = "[optimizer]" + head.split("[optimizer]", 1)[1]
    return f"{run}\n{endpoint}\n{optimizer}[[jobs]]{jobs}"


def sim_config(batch_delay_s: float) -> SimConfig:
    """The demo's simulator (seed 7, 60,000 RPM, ~30 ms, a few faults) on a free port."""
    return SimConfig(
        seed=7,
        rpm=60_000,
        latency_ms=30,
        faults=FaultSpec.parse("429=0.01,500=0.01,reset=0.002"),
        batch_delay_s=batch_delay_s,
        port=0,
    )


def gpo_run(root: Path, config: str, run_dir: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", config, "--run-dir", run_dir]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def outcome(run_dir: Path) -> dict[str, Any]:
    """Spend and, per job, the best prompt and its dev and test scores."""
    results = orjson.loads((run_dir / "results.json").read_bytes())
    jobs = {
        j["name"]: (j["best_prompt"], j["best_dev_score"], j["best_test_score"])
        for j in results["jobs"]
    }
    return {"spent": results["budget"]["spent_usd"], "jobs": jobs, "totals": results["totals"]}


async def one_run(root: Path, name: str, *, batch: bool) -> dict[str, Any]:
    async with open_simulator(sim_config(0.5)) as sim:
        (root / f"{name}.toml").write_text(config_text(sim.base_url, batch=batch))
        proc = gpo_run(root, f"{name}.toml", name)
        code = await anyio.to_thread.run_sync(proc.wait)
        stats = sim.stats
    if code != 0:
        raise RuntimeError(f"gpo run {name} exited {code}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
    return {**outcome(root / name), "batches": stats.batches_created}


def batch_in_flight(run_dir: Path) -> bool:
    """A batch created (its id journaled) and not ended, per the run's batches.sqlite."""
    path = run_dir / "batches.sqlite"
    if not path.exists():
        return False
    with _readonly(path) as db:
        try:
            row = db.execute(
                "SELECT count(*) FROM batches WHERE state = 'open' AND batch_id IS NOT NULL"
            ).fetchone()
        except sqlite3.Error:
            return False
    return bool(row and row[0])


@contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    try:
        yield db
    finally:
        db.close()


async def killed_run(root: Path) -> dict[str, Any]:
    """A batch-mode run killed ``KILLS`` times while a batch is in flight, then finished."""
    async with open_simulator(sim_config(1.5)) as sim:
        (root / "killed.toml").write_text(config_text(sim.base_url, batch=True))
        kills = 0
        while True:
            proc = gpo_run(root, "killed.toml", "killed")
            if kills < KILLS:
                killed = await _kill_when_in_flight(proc, root / "killed")
                kills += killed
                if killed:
                    continue
            code = await anyio.to_thread.run_sync(proc.wait)
            if code == 0:
                break
            raise RuntimeError(f"gpo run exited {code}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        stats = sim.stats
    return {
        **outcome(root / "killed"),
        "kills": kills,
        "batches": stats.batches_created,
        "duplicated": stats.batches_duplicated,
        "requests_duplicated": stats.batch_requests_duplicated,
    }


async def _kill_when_in_flight(proc: subprocess.Popen[bytes], run_dir: Path) -> int:
    """SIGKILL ``proc`` once a batch of its run is in flight (1); 0 if it ended first."""
    while proc.poll() is None:
        if batch_in_flight(run_dir):
            await anyio.sleep(0.2)  # well inside the batch's 1.5 s
            os.kill(proc.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(proc.wait)
            return 1
        await anyio.sleep(0.05)
    return 0


async def b8() -> dict[str, Any]:
    """Realtime, batch (A B) and the killed batch run; the figures of the README's B8 rows."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        realtime = await one_run(root, "realtime", batch=False)
        batch = await one_run(root, "batch", batch=True)
        killed = await killed_run(root)
    return {
        "ratio": batch["spent"] / realtime["spent"],
        "realtime": realtime,
        "batch": batch,
        "identical": batch["jobs"] == realtime["jobs"],
        "killed": killed,
        "killed_identical": killed["jobs"] == batch["jobs"],
        "wall_s": time.monotonic() - started,
    }


if __name__ == "__main__":
    print(orjson.dumps(anyio.run(b8), option=orjson.OPT_INDENT_2).decode())
