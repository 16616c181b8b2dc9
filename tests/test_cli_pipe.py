"""``gpo ... | head``: a reader that leaves early ends the command quietly, as Unix tools do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess


def test_a_closed_stdout_ends_the_command_without_a_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "config", "schema"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, what a shell reports for `git log | head`
