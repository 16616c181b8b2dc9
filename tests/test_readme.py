"""The README's library example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import LONG_BUDGET_S, LONG_PROCESS_S

# The examples run as their own processes: a budget of their own, see tests/cli_helpers.py.
pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(LONG_BUDGET_S)]

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def run_block(index: int, cwd: Path) -> str:
    blocks = python_blocks()
    assert len(blocks) > index, "the README lacks that python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[index]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=LONG_PROCESS_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_optimizer_example_runs_and_improves_prompts(tmp_path: Path) -> None:
    out = run_block(0, tmp_path)
    assert "step 1/" in out
    finals = [line for line in out.splitlines() if " -> " in line]
    assert len(finals) == 4
    gains = [
        float(b.split()[0]) - float(a.split()[-1])
        for a, b in (line.split(" -> ")[:2] for line in finals)
    ]
    assert sum(gains) > 0


def test_gateway_example_runs(tmp_path: Path) -> None:
    out = run_block(1, tmp_path)
    assert "EndpointStatistics" in out
    assert (tmp_path / "cache.sqlite").exists()
