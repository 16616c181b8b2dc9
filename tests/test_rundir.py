"""The run directory's lock: one process at a time, a dead holder's lock taken over."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline._log import EVENT_ATTR
from pipeline.config._load import RunConfig, load_config
from pipeline.errors import ConfigError
from pipeline.rundir._layout import LOCK_NAME, RunLock, prepare

CONFIG = """\
[endpoints.openai]
model = "gpt-4o-mini"

[[jobs]]
data = "builtin:arithmetic"
dev_size = 4
test_size = 4
"""


@pytest.fixture
def lock(tmp_path: Path) -> Iterator[RunLock]:
    held = RunLock.acquire(tmp_path / "run")
    yield held
    held.release()


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = (r for r in caplog.records if EVENT_ATTR in r.__dict__)
    return [{**r.__dict__[EVENT_ATTR], "level": r.levelname} for r in records]


def config(tmp_path: Path) -> RunConfig:
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path, env={"OPENAI_API_KEY": "sk-test"})


def test_a_second_acquisition_is_refused_naming_the_holder(lock: RunLock) -> None:
    record = (lock.path / LOCK_NAME).read_bytes()
    with pytest.raises(ConfigError) as refused:
        RunLock.acquire(lock.path)  # another open file description: flock conflicts
    message = str(refused.value)
    assert message.startswith(f"{lock.path} is in use by gpo run (pid {os.getpid()} ")
    assert f"on host {socket.gethostname()}, since " in message
    assert message.endswith("wait for it to finish or stop it")
    assert (lock.path / LOCK_NAME).read_bytes() == record  # the refused one wrote nothing


def test_a_released_lock_can_be_acquired_again_without_a_note(
    lock: RunLock, caplog: pytest.LogCaptureFixture
) -> None:
    lock.release()
    assert (lock.path / LOCK_NAME).read_bytes() == b""
    caplog.set_level(logging.DEBUG, logger="gpo")
    with RunLock.acquire(lock.path) as again:
        assert again.took_over is None
        assert orjson.loads((lock.path / LOCK_NAME).read_bytes())["pid"] == os.getpid()
    assert (lock.path / LOCK_NAME).read_bytes() == b""  # released on leaving the block
    assert events(caplog) == []


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    script = (
        "import os, sys; from pathlib import Path; from pipeline.rundir._layout import RunLock; "
        "RunLock.acquire(Path(sys.argv[1])); os._exit(0)"  # dies holding it: no release
    )
    child = subprocess.run([sys.executable, "-c", script, str(run_dir)], check=True, timeout=60)
    left = orjson.loads((run_dir / LOCK_NAME).read_bytes())
    caplog.set_level(logging.DEBUG, logger="gpo")
    with RunLock.acquire(run_dir) as lock:
        assert lock.took_over is not None
        assert lock.took_over.pid == left["pid"] != os.getpid()
        assert lock.took_over.host == socket.gethostname()
        assert orjson.loads((run_dir / LOCK_NAME).read_bytes())["pid"] == os.getpid()
    assert child.returncode == 0
    assert events(caplog) == [
        {
            "event": "run_dir_lock_taken_over",
            "run_dir": str(run_dir),
            "left_by_pid": left["pid"],
            "left_by_host": left["host"],
            "since": left["started_at"],
            "level": "WARNING",
        }
    ]


def test_a_new_run_directory_is_prepared_under_its_lock(tmp_path: Path, lock: RunLock) -> None:
    rundir = prepare(lock.path, config(tmp_path))
    assert not rundir.resumed
    assert sorted(p.name for p in lock.path.iterdir()) == [
        "config.toml",
        "digest.json",
        LOCK_NAME,
        "run.json",
    ]


def test_a_directory_that_is_not_a_run_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not a gpo run"):
        RunLock.acquire(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
