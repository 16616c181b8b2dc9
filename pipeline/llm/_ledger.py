"""The spend ledger: every dollar a run may have spent, written ahead of the requests.

A reservation is committed to the ledger **before** its request is sent, and turned into real
spend when its answer is settled. After a crash, a reservation still open may have been sent and
billed, so it counts in full: the ledger can over-count what a killed session spent, never
under-count it, and a cap enforced against it holds across any number of kills and resumes.

The ledger is its own SQLite file (``ledger.sqlite`` in a run directory), apart from the
response cache: deleting or damaging the cache costs the answers, never the record of spend. A
ledger that cannot be read is a :class:`~pipeline.errors.StorageError` (never silently reset);
a write that fails raises it too, and the request it was for is not sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import orjson

from pipeline.errors import StorageError
from pipeline.llm._budget import Reservation
from pipeline.llm._groupcommit import GroupRunner

Spent = dict[str, tuple[int, int]]
"""Scope (``run``, ``job:NAME``, ``endpoint:NAME``) -> (pico-dollars, tokens)."""

_ADD = (
    "INSERT INTO spend (scope, pusd, tokens) VALUES (?, ?, ?) ON CONFLICT(scope) DO UPDATE "
    "SET pusd = pusd + excluded.pusd, tokens = tokens + excluded.tokens"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend (scope TEXT PRIMARY KEY, pusd INTEGER, tokens INTEGER)",
    "CREATE TABLE IF NOT EXISTS open (id INTEGER PRIMARY KEY, scopes TEXT, pusd INTEGER, "
    "tokens INTEGER)",
)


_Write = tuple[str, Reservation, int, int]  # ("open" | "settle", reservation, pusd, tokens)


class SqliteLedger:
    """The ledger file (a :class:`~pipeline.llm._budget.SpendLedger`); open it with
    :func:`open_sqlite_ledger`. Writes are group-committed."""

    def __init__(self, db: sqlite3.Connection, path: Path, spent: Spent) -> None:
        self._db = db
        self.path = path
        self.spent: Spent = spent
        """What every earlier session spent (their open reservations in full), at open."""
        self._limiter = anyio.CapacityLimiter(1)
        self._writes: GroupRunner[_Write, None] = GroupRunner(self._write, self._limiter)
        self._settled: list[_Write] = []

    async def opened(self, entry: Reservation) -> None:
        await self._writes.submit([*self._take(), ("open", entry, 0, 0)])

    def settled(self, entry: Reservation, pusd: int, tokens: int) -> None:
        self._settled.append(("settle", entry, pusd, tokens))

    async def flush(self) -> None:
        """Commit settlements not yet committed (and writes of cancelled callers)."""
        if self._settled or self._writes.pending:
            await self._writes.submit(self._take())

    async def totals(self) -> Spent:
        """Spend per scope as the file says now, open reservations counted in full."""
        return await anyio.to_thread.run_sync(_read_spent, self._db, self.path)

    def _take(self) -> list[_Write]:
        taken, self._settled = self._settled, []
        return taken

    def _write(self, items: list[_Write]) -> None:
        opened = [(r.id, _scopes(r), r.pusd, r.tokens) for k, r, _, _ in items if k == "open"]
        settled = [(r, p, t) for k, r, p, t in items if k == "settle"]
        spend = _sum_by_scope((r.scopes, p, t) for r, p, t in settled)
        try:
            with self._db:
                self._db.executemany("INSERT INTO open VALUES (?, ?, ?, ?)", opened)
                self._db.executemany(
                    "DELETE FROM open WHERE id = ?", [(r.id,) for r, _, _ in settled]
                )
                self._db.executemany(_ADD, spend)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(self.path, f"writing the spend ledger failed: {exc}") from None


@asynccontextmanager
async def open_sqlite_ledger(
    path: str | Path, *, legacy_cache: Path | None = None
) -> AsyncIterator[SqliteLedger]:
    """Open (creating if needed) the ledger at ``path``. Reservations left open by a session
    that did not close it (a crash or a kill) become spend, in full. ``legacy_cache``: a response
    cache of an older gpo that kept the spend itself; a new ledger starts from its record."""
    file = Path(path)
    db = await anyio.to_thread.run_sync(_connect, file, legacy_cache)
    try:
        ledger = SqliteLedger(db, file, await anyio.to_thread.run_sync(_read_spent, db, file))
        try:
            yield ledger
        finally:
            with anyio.CancelScope(shield=True):
                await ledger.flush()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(db.close)


def _connect(path: Path, legacy_cache: Path | None) -> sqlite3.Connection:
    db: sqlite3.Connection | None = None
    try:
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL: survives a killed process
        with db:
            for statement in _SCHEMA:
                db.execute(statement)
            if new and legacy_cache is not None:
                db.executemany(_ADD, _legacy_spend(legacy_cache))
            _close_open(db)
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise StorageError(path, f"cannot open the spend ledger: {exc}") from None
    return db


def _close_open(db: sqlite3.Connection) -> None:
    """Reservations a dead session left open may have been billed: count them in full."""
    rows = db.execute("SELECT scopes, pusd, tokens FROM open").fetchall()
    spend = _sum_by_scope((tuple(orjson.loads(s)), int(p), int(t)) for s, p, t in rows)
    db.executemany(_ADD, spend)
    db.execute("DELETE FROM open")


def _read_spent(db: sqlite3.Connection, path: Path) -> Spent:
    try:
        spent: Spent = {
            scope: (int(p), int(t))
            for scope, p, t in db.execute("SELECT scope, pusd, tokens FROM spend")
        }
        rows = db.execute("SELECT scopes, pusd, tokens FROM open").fetchall()
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(path, f"reading the spend ledger failed: {exc}") from None
    for scope, p, t in _sum_by_scope((tuple(orjson.loads(s)), int(p), int(t)) for s, p, t in rows):
        old = spent.get(scope, (0, 0))
        spent[scope] = (old[0] + p, old[1] + t)
    return spent


def _legacy_spend(cache: Path) -> list[tuple[str, int, int]]:
    """The ``spend`` table an older gpo kept in the response cache (empty if none)."""
    if not cache.exists():
        return []
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as old:
            rows = old.execute("SELECT scope, pusd, tokens FROM spend").fetchall()
    except sqlite3.Error:
        return []
    return [(str(s), int(p), int(t)) for s, p, t in rows]


def _scopes(reservation: Reservation) -> str:
    return orjson.dumps(reservation.scopes).decode()


def _sum_by_scope(
    amounts: Iterable[tuple[tuple[str, ...], int, int]],
) -> list[tuple[str, int, int]]:
    totals: dict[str, list[int]] = {}
    for scopes, pusd, tokens in amounts:
        for scope in scopes:
            total = totals.setdefault(scope, [0, 0])
            total[0] += pusd
            total[1] += tokens
    return [(scope, p, t) for scope, (p, t) in totals.items() if p or t]
