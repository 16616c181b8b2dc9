"""``gpo run`` with provider batches, stopped by Ctrl-C: batches keep running at the provider
(a resume adopts them) unless ``--cancel-batches`` asks to cancel them. The simulator runs as
its own process, as the provider would; its counters are read over ``GET /_sim/stats``."""

from __future__ import annotations

import signal
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli_helpers import background_gpo, config_text, running_sim, stop, wait_for

BATCH = 'batch = "eval"\nbatch_linger_s = 0.1\nbatch_poll_s = 0.1'
CANCEL_ROUTE = "/v1/batches/{batch_id}/cancel"


def sim_stats(url: str) -> dict[str, Any]:
    root = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_sim/stats", timeout=10) as reply:
        stats: dict[str, Any] = orjson.loads(reply.read())
    return stats


def batch_open(run_dir: Path) -> bool:
    path = run_dir / "batches.sqlite"
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(
                "SELECT count(*) FROM batches WHERE state = 'open' AND batch_id IS NOT NULL"
            ).fetchone()
    except sqlite3.Error:
        return False
    return bool(row[0])


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_leaves_batches_running_unless_asked_to_cancel_them(
    tmp_path: Path, cancel: bool
) -> None:
    slow = ("--seed", "3", "--batch-delay-s", "60")
    with running_sim(tmp_path / "sim.log", args=slow) as sim:
        config = tmp_path / "run.toml"
        config.write_text(config_text(sim.url, jobs=("arithmetic",), endpoint=BATCH))
        args = ["run", str(config), "--run-dir", str(tmp_path / "run")]
        args += ["--cancel-batches"] if cancel else []
        with background_gpo(args, cwd=tmp_path) as process:
            wait_for(lambda: batch_open(tmp_path / "run"), process)
            code = stop(process, signal.SIGINT)
        stats = sim_stats(sim.url)
    err = (tmp_path / "bg.err").read_text()
    assert code == 130, err
    assert stats["batches_created"] == 1
    cancels = stats["requests"].get(CANCEL_ROUTE, 0)
    if cancel:
        assert cancels == 1
        assert "batches_cancelled" in err
    else:
        assert cancels == 0
        assert "batches_left_running" in err
        assert batch_open(tmp_path / "run")  # journaled: the next run adopts it
