"""The batch journal: which provider batches a run created, written ahead of their creation.

Before a batch is created its intent is committed: a run-unique tag (which gpo also writes into
the batch's ``metadata``), the endpoint, and each request's ``custom_id`` with the cache keys its
answer fills. Right after creation the provider's batch id is committed. A batch is marked ended
once every result it has was read into the response cache. On resume, a batch still open is
polled again (by its id), or, if the session died between creating it and journaling its id,
found by its tag in the provider's list and adopted: **no batch is ever submitted twice**, and its
answers, already paid for (the ledger counts the reservations of a dead session in full), land in
the cache.

The journal is its own SQLite file (``batches.sqlite`` in a run directory), in WAL mode: a commit
survives a killed process, like the ledger's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import orjson

from pipeline.errors import StorageError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches (tag TEXT PRIMARY KEY, endpoint TEXT NOT NULL, "
    "since REAL NOT NULL, batch_id TEXT, state TEXT NOT NULL, items BLOB NOT NULL)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournaledBatch:
    """A batch as the journal knows it."""

    tag: str
    endpoint: str
    since: float
    """Unix seconds just before the batch was created (where to stop looking for it)."""
    items: Mapping[str, tuple[str, ...]]
    """``custom_id`` -> the cache keys its answer fills, in choice order."""
    batch_id: str | None = None


class BatchLog(Protocol):
    """Where batches are journaled (a file in a run directory, or memory for a library user)."""

    def unfinished(self) -> list[JournaledBatch]:
        """Batches created (or about to be) and not ended, as the journal was at open."""
        ...

    async def intent(self, batch: JournaledBatch) -> None: ...

    async def created(self, tag: str, batch_id: str) -> None: ...

    async def ended(self, tag: str, state: str = "ended") -> None:
        """``state``: "ended" (results read) or "abandoned" (never created)."""
        ...


class MemoryBatchLog:
    """A journal in memory: no crash safety (a library user without a run directory)."""

    def __init__(self) -> None:
        self.batches: dict[str, JournaledBatch] = {}
        self.states: dict[str, str] = {}

    def unfinished(self) -> list[JournaledBatch]:
        return [b for tag, b in self.batches.items() if self.states[tag] == "open"]

    async def intent(self, batch: JournaledBatch) -> None:
        self.batches[batch.tag] = batch
        self.states[batch.tag] = "open"

    async def created(self, tag: str, batch_id: str) -> None:
        old = self.batches[tag]
        self.batches[tag] = JournaledBatch(
            tag=tag, endpoint=old.endpoint, since=old.since, items=old.items, batch_id=batch_id
        )

    async def ended(self, tag: str, state: str = "ended") -> None:
        self.states[tag] = state


class SqliteBatchLog:
    """The journal file; open it with :func:`open_batch_log`. Each write is one commit."""

    def __init__(self, db: sqlite3.Connection, path: Path, unfinished: list[JournaledBatch]):
        self._db = db
        self.path = path
        self._unfinished = unfinished
        self._limiter = anyio.CapacityLimiter(1)

    def unfinished(self) -> list[JournaledBatch]:
        return list(self._unfinished)

    async def intent(self, batch: JournaledBatch) -> None:
        items = orjson.dumps({k: list(v) for k, v in batch.items.items()})
        row = (batch.tag, batch.endpoint, batch.since, batch.batch_id, "open", items)
        await self._write("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)", row)

    async def created(self, tag: str, batch_id: str) -> None:
        await self._write("UPDATE batches SET batch_id = ? WHERE tag = ?", (batch_id, tag))

    async def ended(self, tag: str, state: str = "ended") -> None:
        await self._write("UPDATE batches SET state = ? WHERE tag = ?", (state, tag))

    async def _write(self, sql: str, row: tuple[object, ...]) -> None:
        def run() -> None:
            try:
                with self._db:
                    self._db.execute(sql, row)
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(self.path, f"writing the batch journal failed: {exc}") from None

        await anyio.to_thread.run_sync(run, limiter=self._limiter)


@asynccontextmanager
async def open_batch_log(path: str | Path) -> AsyncIterator[SqliteBatchLog]:
    """Open (creating if needed) the batch journal at ``path``; ``StorageError`` if it cannot
    be read (never silently reset: it is the record of batches that may be running)."""
    file = Path(path)
    db, unfinished = await anyio.to_thread.run_sync(_connect, file)
    try:
        yield SqliteBatchLog(db, file, unfinished)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(db.close)


def _connect(path: Path) -> tuple[sqlite3.Connection, list[JournaledBatch]]:
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL: survives a killed process
        with db:
            db.execute(_SCHEMA)
        rows = db.execute(
            "SELECT tag, endpoint, since, batch_id, items FROM batches WHERE state = 'open' "
            "ORDER BY since"
        ).fetchall()
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise StorageError(path, f"cannot open the batch journal: {exc}") from None
    return db, [_batch(*row) for row in rows]


def _batch(
    tag: str, endpoint: str, since: float, batch_id: str | None, items: bytes
) -> JournaledBatch:
    keys = {str(k): tuple(v) for k, v in orjson.loads(items).items()}
    return JournaledBatch(tag=tag, endpoint=endpoint, since=since, items=keys, batch_id=batch_id)
