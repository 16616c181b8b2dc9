"""The run directory: everything a run leaves behind, and what makes it resumable.

::

    RUN_DIR/
      config.toml     the configuration as given (a snapshot)
      digest.json     what in it decides the results, to refuse a resume with another config
      run.json        run id and creation time
      journal.jsonl   the append-only event journal (see pipeline.rundir._journal)
      cache.sqlite    every paid response
      ledger.sqlite   every dollar spent, written ahead of each request
      logs.jsonl      structured logs, one JSON object per line
      results.json    the results (see pipeline.runner._results)
      report.html     the report, self-contained
      lock            who runs in it now: an advisory lock (flock) and its holder's pid and host

Running again on an existing directory resumes it; a changed configuration that would make the
journal meaningless is refused, naming the differences. One process at a time: a run holds the
directory's ``RunLock`` from before it writes anything until it ends, and a second process is
refused (ConfigError) before it writes or spends anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline._log import get_logger
from pipeline.config._load import RunConfig, config_digest, diff_digests
from pipeline.errors import ConfigError
from pipeline.runner._results import write_json

LOCK_NAME = "lock"
log = get_logger("gpo.rundir")


@dataclass(frozen=True, slots=True)
class RunDir:
    path: Path
    run_id: str
    resumed: bool

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def cache(self) -> Path:
        return self.path / "cache.sqlite"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def batches(self) -> Path:
        """The journal of provider batches (``pipeline.llm.batch``)."""
        return self.path / "batches.sqlite"

    @property
    def logs(self) -> Path:
        return self.path / "logs.jsonl"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The process that holds (or held) a run directory's lock."""

    pid: int
    host: str
    started_at: str

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}, since {self.started_at}"


class RunLock:
    """The exclusive lock of a run directory, held by one process for its run's lifetime.

    An advisory ``flock`` on ``RUN_DIR/lock``; the file also records the holder (pid, host, start
    time) for the message a second process gets. The kernel releases a flock when its holder dies,
    so a record whose lock is free was left by a process that ended without releasing it (SIGKILL,
    a crash): it is taken over with a warning, and named in ``took_over``. Releasing empties the
    record. Acquire with :meth:`acquire`, then :meth:`release` (or use it in a ``with``).
    """

    def __init__(self, path: Path, fd: int, took_over: LockHolder | None) -> None:
        self.path = path
        self.took_over = took_over
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> RunLock:
        """Create ``path`` if needed and lock it: ConfigError if another process holds it (or it
        is not a gpo run directory), before anything is written to it."""
        _refuse_foreign(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot create the run directory: {exc}") from None
        try:
            _lock(path, fd)
            previous = _read_holder(fd)
            _write_holder(path, fd, LockHolder(os.getpid(), socket.gethostname(), _now()))
        except BaseException:
            os.close(fd)
            raise
        if previous is not None:
            log.warning(
                "run_dir_lock_taken_over",
                run_dir=str(path),
                left_by_pid=previous.pid,
                left_by_host=previous.host,
                since=previous.started_at,
            )
        return cls(path, fd, previous)

    def release(self) -> None:
        """Empty the record and unlock; again: nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # the last descriptor of the open file: the flock goes with it

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _lock(path: Path, fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _busy_holder(fd)
        by = f"gpo run ({holder})" if holder is not None else "another gpo run"
        raise ConfigError(f"{path} is in use by {by}; wait for it to finish or stop it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot lock the run directory: {exc}") from None


def _busy_holder(fd: int, *, tries: int = 50, pause_s: float = 0.01) -> LockHolder | None:
    """The holder's record; it writes it just after locking, so it may take a moment."""
    for _ in range(tries):
        holder = _read_holder(fd)
        if holder is not None:
            return holder
        time.sleep(pause_s)
    return None


def _read_holder(fd: int) -> LockHolder | None:
    try:
        record = orjson.loads(os.pread(fd, 4096, 0))
        return LockHolder(
            pid=int(record["pid"]), host=str(record["host"]), started_at=str(record["started_at"])
        )
    except (OSError, ValueError, KeyError, TypeError):  # empty (released) or not a record
        return None


def _write_holder(path: Path, fd: int, holder: LockHolder) -> None:
    record = {"pid": holder.pid, "host": holder.host, "started_at": holder.started_at}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(record), 0)  # in place: a new file would not be the locked one
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the run directory: {exc}") from None


def _refuse_foreign(path: Path) -> None:
    """ConfigError if ``path`` holds files but no gpo run (its lock file alone is not one)."""
    try:
        foreign = (
            path.is_dir()
            and not (path / "run.json").exists()
            and any(entry.name != LOCK_NAME for entry in path.iterdir())
        )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the run directory: {exc}") from None
    if foreign:
        raise ConfigError(
            f"{path}: the run directory exists and is not a gpo run "
            "(no run.json); choose another --run-dir"
        )


def prepare(path: Path, config: RunConfig) -> RunDir:
    """Create ``path`` for ``config``, or reopen it to resume; ConfigError if it cannot be.

    Call it holding the directory's :class:`RunLock` (which creates the directory)."""
    digest = config_digest(config)
    meta = path / "run.json"
    if meta.exists():
        if not _started(path):
            # Earlier sessions stopped before the run started (a preflight failed): nothing was
            # journaled or spent, so there is nothing to mix and this configuration replaces theirs.
            try:
                shutil.copyfile(config.path, path / "config.toml")
            except OSError as exc:
                raise ConfigError(f"{path}: cannot write the run directory: {exc}") from None
            write_json(path / "digest.json", digest)
        return _reopen(path, digest)
    _refuse_foreign(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.path, path / "config.toml")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the run directory: {exc}") from None
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:4]
    write_json(path / "digest.json", digest)
    write_json(meta, {"run_id": run_id, "created_at": _now()})
    return RunDir(path=path, run_id=run_id, resumed=False)


def _reopen(path: Path, digest: dict[str, Any]) -> RunDir:
    try:
        meta = orjson.loads((path / "run.json").read_bytes())
        saved = orjson.loads((path / "digest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path}: the run directory is damaged ({exc}); choose another --run-dir"
        ) from None
    differences = diff_digests(saved, orjson.loads(orjson.dumps(digest)))
    if differences:
        listed = "\n  ".join(differences)
        raise ConfigError(
            f"{path}: this run was started with a different configuration; "
            f"resuming would mix results. Differences:\n  {listed}\n"
            "Use another --run-dir for the new configuration."
        )
    return RunDir(path=path, run_id=str(meta["run_id"]), resumed=True)


def _started(path: Path) -> bool:
    journal = path / "journal.jsonl"
    return journal.exists() and journal.stat().st_size > 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
