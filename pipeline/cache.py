"""The persistent response cache: paid answers are kept, so a re-run replays them for free.

Keys are SHA-256 digests of the canonical request (model, messages, sampling parameters) plus a
sample index, so each of the ``n`` samples of a temperature > 0 request is cached on its own.
SQLite (standard library) runs in a worker thread behind a one-slot limiter: the event loop never
blocks on disk.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import anyio
import anyio.to_thread
import orjson

from pipeline.errors import ConfigError

T = TypeVar("T")
U = TypeVar("U")
_CHUNK = 500  # SQLite's default limit on bound parameters is 999
_Write = tuple[Any, ...]  # ("r", key, value): a response; ("s", scope, pusd, tokens): spend
_ADD_SPEND = (
    "INSERT INTO spend (scope, pusd, tokens) VALUES (?, ?, ?) ON CONFLICT(scope) DO UPDATE "
    "SET pusd = pusd + excluded.pusd, tokens = tokens + excluded.tokens"
)


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


class _GroupRunner(Generic[T, U]):
    """Runs a blocking ``fn(batch)`` in a worker thread, one batch at a time.

    Everything submitted while a batch runs joins the next one, so under load many callers share
    one thread hop and one SQLite transaction (group commit), and each caller still returns only
    once its own items are done.
    """

    def __init__(self, fn: Callable[[list[T]], U], limiter: anyio.CapacityLimiter) -> None:
        self._fn = fn
        self._limiter = limiter
        self._open: _Batch[T, U] | None = None
        self._running = False
        self._runner_done = anyio.Event()

    @property
    def pending(self) -> bool:
        """Items wait in a batch that no running caller will carry (its callers were cancelled)."""
        return self._open is not None and not self._running

    async def submit(self, items: Sequence[T]) -> U:
        batch = self._open = self._open or _Batch()
        batch.items.extend(items)
        while not batch.done.is_set():
            if self._running:
                await self._runner_done.wait()
            else:
                await self._run_open_batch()
        if batch.error is not None:
            raise batch.error
        return cast(U, batch.result)

    async def _run_open_batch(self) -> None:
        batch, self._open = cast(_Batch[T, U], self._open), None
        self._running, self._runner_done = True, anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                batch.result = await anyio.to_thread.run_sync(
                    self._fn, batch.items, limiter=self._limiter
                )
        except Exception as exc:  # delivered to every caller of the batch
            batch.error = exc
        finally:
            self._running = False
            batch.done.set()
            self._runner_done.set()


@dataclass(slots=True)
class _Batch(Generic[T, U]):
    items: list[T] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: U | None = None
    error: Exception | None = None


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

    def __init__(self, connection: sqlite3.Connection, keys: KeyFilter | None = None) -> None:
        self._db = connection
        self._keys = keys
        lock = anyio.CapacityLimiter(1)
        self._reads: _GroupRunner[str, dict[str, bytes]] = _GroupRunner(self._get, lock)
        self._writes: _GroupRunner[_Write, None] = _GroupRunner(self._put, lock)
        self._lock = lock
        self._spend: dict[str, list[int]] = {}

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
        await self._writes.submit(self._take_spend() + [("r", k, v) for k, v in items.items()])
        if self._keys is not None:
            for key in items:
                self._keys.add(key)

    def note_spend(self, scopes: Sequence[str], pusd: int, tokens: int) -> None:
        """Record spend (a :class:`~pipeline.budget.Budget` ``on_spend`` hook); it is committed
        with the next write, which for a successful call is its own response's, before the call
        returns. :meth:`flush` commits it at once."""
        for scope in scopes:  # summed per scope until the next commit: a few rows per group
            total = self._spend.setdefault(scope, [0, 0])
            total[0] += pusd
            total[1] += tokens

    async def flush(self) -> None:
        """Commit recorded spend, and writes whose callers were cancelled, not yet committed."""
        if self._spend or self._writes.pending:
            await self._writes.submit(self._take_spend())

    async def load_spend(self) -> dict[str, tuple[int, int]]:
        """Scope -> (pico-dollars, tokens) spent by every run that used this file."""
        return await anyio.to_thread.run_sync(self._load_spend, limiter=self._lock)

    async def count(self) -> int:
        return await anyio.to_thread.run_sync(self._count, limiter=self._lock)

    def _take_spend(self) -> list[_Write]:
        taken, self._spend = self._spend, {}
        return [("s", scope, pusd, tokens) for scope, (pusd, tokens) in taken.items()]

    def _get(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), _CHUNK):
            chunk = unique[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT key, value FROM responses WHERE key IN ({marks})"
            found.update((key, bytes(value)) for key, value in self._db.execute(sql, chunk))
        return found

    def _put(self, items: Iterable[_Write]) -> None:
        rows = [i[1:] for i in items if i[0] == "r"]
        spend = [i[1:] for i in items if i[0] == "s"]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
            self._db.executemany(_ADD_SPEND, spend)

    def _load_spend(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute("SELECT scope, pusd, tokens FROM spend")
        return {scope: (int(pusd), int(tokens)) for scope, pusd, tokens in rows}

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


@asynccontextmanager
async def open_sqlite_cache(path: str | Path) -> AsyncIterator[SqliteCache]:
    """Open (creating if needed) the cache file at ``path``; recorded spend is committed and the
    file closed on exit, even on cancellation."""
    db = await anyio.to_thread.run_sync(_connect, Path(path))
    try:
        keys = await anyio.to_thread.run_sync(_load_filter, db)
        cache = SqliteCache(db, keys)
        try:
            yield cache
        finally:
            with anyio.CancelScope(shield=True):
                await cache.flush()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(db.close)


def _load_filter(db: sqlite3.Connection) -> KeyFilter:
    count = int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    keys = KeyFilter(expected_keys=2 * count)
    for (key,) in db.execute("SELECT key FROM responses"):
        keys.add(key)
    return keys


def _connect(path: Path) -> sqlite3.Connection:
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS spend "
            "(scope TEXT PRIMARY KEY, pusd INTEGER, tokens INTEGER)"
        )
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()  # a file that is not a cache must not leak its connection
        raise ConfigError(f"cannot open the response cache {path}: {exc}") from None
    return db
