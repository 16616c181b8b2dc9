"""The run directory: everything a run leaves behind, and what makes it resumable.

::

    RUN_DIR/
      config.toml     the configuration as given (a snapshot)
      digest.json     what in it decides the results, to refuse a resume with another config
      run.json        run id and creation time
      journal.jsonl   the append-only event journal (see pipeline.journal)
      cache.sqlite    every paid response and every dollar spent
      logs.jsonl      structured logs, one JSON object per line
      results.json    the results (see pipeline.results)
      report.html     the report, self-contained

Running again on an existing directory resumes it; a changed configuration that would make the
journal meaningless is refused, naming the differences.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import RunConfig, config_digest, diff_digests
from pipeline.errors import ConfigError
from pipeline.results import write_json


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
    def logs(self) -> Path:
        return self.path / "logs.jsonl"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"


def prepare(path: Path, config: RunConfig) -> RunDir:
    """Create ``path`` for ``config``, or reopen it to resume; ConfigError if it cannot be."""
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
    try:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise ConfigError(
                f"{path}: the run directory exists and is not a gpo run "
                "(no run.json); choose another --run-dir"
            )
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
