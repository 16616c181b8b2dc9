"""B6 cap use: how much of a dollar cap a run spends before it stops (``gpo run`` in a fresh
process, the default settings: 128 call workers, 64 active jobs, 64 requests in flight).

The simulator (in-process, configured as in ``gpo demo``: 60,000 RPM, ~30 ms latency, a few injected
faults) is priced like gpt-4o-mini; 30 jobs on the built-in tasks cost about $1.3 uncapped. The
figure is spent / cap: a run must stop only when the next call's worst case does not fit with
nothing in flight, so it should be close to 1, and never above.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli._demo import DEMO_CONFIG

TASKS = ("arithmetic", "word_sorting", "boolean_expressions", "object_counting")
JOBS = 30

CONFIG_HEAD = "\n".join(
    line for line in DEMO_CONFIG.split("[[jobs]]")[0].splitlines() if "budget_usd" not in line
)
"""The demo's run, simulator, endpoint and optimizer tables, without its cap."""


def config_text(jobs: int = JOBS) -> str:
    tables = "".join(
        f'\n[[jobs]]\nname = "job{i}"\ndata = "builtin:{TASKS[i % len(TASKS)]}"\n'
        "dev_size = 24\ntest_size = 48\n"
        for i in range(jobs)
    )
    return CONFIG_HEAD + tables


def cap_use(cap_usd: float) -> dict[str, Any]:
    """Run the configuration under ``cap_usd``; what it spent and how it ended."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cfg.toml").write_text(config_text())
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "cfg.toml", "--run-dir", "r"]
        done = subprocess.run(
            [*cmd, "--budget-usd", str(cap_usd)],
            cwd=root,
            capture_output=True,
            timeout=900,
            check=False,
        )
        results = orjson.loads((root / "r" / "results.json").read_bytes())
    spent = float(results["budget"]["spent_usd"])
    return {"cap": cap_usd, "spent": spent, "use": spent / cap_usd, "exit": done.returncode}
