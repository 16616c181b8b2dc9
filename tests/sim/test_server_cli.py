"""``python -m pipeline.sim.cli``: announces its address, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from pipeline.sim.cli import main_sim

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)/v1)")


async def test_subprocess_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline.sim.cli", "--port", "0", "--seed", "4"]
    with anyio.fail_after(50):  # 4 s at a load average of 12 on 2 cores
        async with await anyio.open_process(command, cwd=REPO, env=env) as process:
            assert process.stdout is not None
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 4096)
            match = LISTENING.fullmatch(line.decode())
            assert match is not None, line
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{match.group(1)}/models") as response,
            ):
                assert response.status == 200
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0


def test_bad_faults_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_sim(["--faults", "429=2"]) == 2
    captured = capsys.readouterr()
    assert "--faults" in captured.err
    assert "'429=2'" in captured.err
    assert captured.out == ""
