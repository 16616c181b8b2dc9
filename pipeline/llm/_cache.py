"""The persistent response cache: paid answers are kept, so a re-run replays them for free.

Keys are SHA-256 digests of the canonical request (model, messages, sampling parameters) plus a
sample index, so each of the ``n`` samples of a temperature > 0 request is cached on its own.
SQLite (standard library) runs in a worker thread behind a one-slot limiter: the event loop never
blocks on disk. The cache holds answers only; what was spent lives in the ledger
(:mod:`pipeline.llm._ledger`): losing the cache costs money, never the record of money. A cache
file found damaged when opened is moved aside (``cache.sqlite.corrupt-TIMESTAMP``) and a new one
started; a read or write that fails later raises :class:`~pipeline.errors.StorageError`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import orjson

from pipeline._log import get_logger
from pipeline.errors import StorageError
from pipeline.llm._groupcommit import GroupRunner

_CHUNK = 500  # SQLite's default limit on bound parameters is 999
log = get_logger("gpo.cache")


class ResponseCache(Protocol):
    async def get_many(self, keys: list[str]) -> dict[str, bytes]: ...

    async def put_many(self, items: Mapping[str, bytes]) -> None: ...


def request_digest(identity: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a request's canonical JSON (keys sorted)."""
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sample_key(digest: str, index: int) -> str:
    """The cache key of sample ``index`` of the request with ``digest``."""
    return f"{digest}:{index}"


def cache_key(identity: Mapping[str, Any], index: int) -> str:
    """The cache key of sample ``index`` of the request ``identity``."""
    return sample_key(request_digest(identity), index)


class NoCache:
    """Caches nothing: every request goes to the endpoint."""

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {}

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        return None


class MemoryCache:
    """An in-process cache (tests, or runs that need no persistence)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {k: self._data[k] for k in keys if k in self._data}

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        self._data.update(items)


class KeyFilter:
    """A Bloom filter of the keys on disk: a lookup it rules out needs no trip to SQLite.

    "No" is certain, "maybe" is checked against the file. 16 bits a key at the sized count,
    6 probes: about 0.1 % false positives, degrading gracefully if the cache outgrows it.
    """

    _PROBES = 6

    def __init__(self, expected_keys: int) -> None:
        self._bits = max(1 << 23, 16 * expected_keys)
        self._array = bytearray(self._bits // 8 + 1)

    def add(self, key: str) -> None:
        for bit in self._positions(key):
            self._array[bit >> 3] |= 1 << (bit & 7)

    def may_contain(self, key: str) -> bool:
        return all(self._array[bit >> 3] & (1 << (bit & 7)) for bit in self._positions(key))

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(h1 + i * h2) % self._bits for i in range(self._PROBES)]


class SqliteCache:
    """A cache file on disk; open it with :func:`open_sqlite_cache`.

    A write returns once committed (WAL, one transaction per group of concurrent writes), so a
    process killed after a call returned never pays for that call again. Lookups of keys that
    were never written are answered in memory by a :class:`KeyFilter`.
    """

    def __init__(
        self, connection: sqlite3.Connection, keys: KeyFilter | None = None, *, path: Path
    ) -> None:
        self._db = connection
        self._keys = keys
        self.path = path
        self.moved_aside: Path | None = None
        """Where a damaged file found at open was moved (None when it was sound)."""
        lock = anyio.CapacityLimiter(1)
        self._reads: GroupRunner[str, dict[str, bytes]] = GroupRunner(self._get, lock)
        self._writes: GroupRunner[tuple[str, bytes], None] = GroupRunner(self._put, lock)
        self._lock = lock

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        if self._keys is not None:
            keys = [k for k in keys if self._keys.may_contain(k)]
        if not keys:
            return {}
        found = await self._reads.submit(keys)
        return {k: found[k] for k in keys if k in found}

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        if not items:
            return
        await self._writes.submit(list(items.items()))
        if self._keys is not None:
            for key in items:
                self._keys.add(key)

    async def flush(self) -> None:
        """Commit writes whose callers were cancelled before their group ran."""
        if self._writes.pending:
            await self._writes.submit([])

    async def count(self) -> int:
        return await anyio.to_thread.run_sync(self._count, limiter=self._lock)

    def _get(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        try:
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, value FROM responses WHERE key IN ({marks})"
                found.update((key, bytes(value)) for key, value in self._db.execute(sql, chunk))
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(self.path, f"reading the response cache failed: {exc}") from None
        return found

    def _put(self, rows: list[tuple[str, bytes]]) -> None:
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(self.path, f"writing the response cache failed: {exc}") from None

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


@asynccontextmanager
async def open_sqlite_cache(path: str | Path) -> AsyncIterator[SqliteCache]:
    """Open (creating if needed) the cache file at ``path``; pending writes are committed and
    the file closed on exit, even on cancellation. A damaged file is moved aside (warning
    ``cache_moved_aside``) and an empty cache started: its answers will be paid for again."""
    file = Path(path)
    db, moved = await anyio.to_thread.run_sync(_open_sound, file)
    try:
        keys = await anyio.to_thread.run_sync(_load_filter, db)
        cache = SqliteCache(db, keys, path=file)
        cache.moved_aside = moved
        try:
            yield cache
        finally:
            with anyio.CancelScope(shield=True):
                await cache.flush()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(db.close)


def _open_sound(path: Path) -> tuple[sqlite3.Connection, Path | None]:
    """A connection to a sound cache at ``path``, moving a damaged file aside first."""
    try:
        return _connect(path), None
    except _Damaged as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{path}{suffix}")
            if damaged.exists():
                damaged.replace(Path(f"{aside}{suffix}"))
        log.warning("cache_moved_aside", path=str(path), moved_to=str(aside), error=str(exc))
        return _connect(path), aside


def _load_filter(db: sqlite3.Connection) -> KeyFilter:
    count = int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    keys = KeyFilter(expected_keys=2 * count)
    for (key,) in db.execute("SELECT key FROM responses"):
        keys.add(key)
    return keys


class _Damaged(Exception):
    """The file is not a sound SQLite database."""


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _connect(path: Path) -> sqlite3.Connection:
    """Open and check the file; :class:`_Damaged` when it is damaged, ``StorageError`` when it
    cannot be opened or read."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise _Damaged(f"integrity check: {verdict}")
        db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB)")
    except BaseException as exc:
        if db is not None:
            db.close()  # a file that cannot be used must not leak its connection
        if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode in _CORRUPT_CODES:
            raise _Damaged(str(exc)) from None
        if isinstance(exc, sqlite3.Error | OSError):
            raise StorageError(path, f"cannot open the response cache: {exc}") from None
        raise
    return db
