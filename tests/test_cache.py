"""Response caches (memory and SQLite) and cache keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import StorageError
from pipeline.llm._cache import MemoryCache, cache_key, open_sqlite_cache

IDENTITY: dict[str, Any] = {
    "kind": "openai",
    "model": "m",
    "messages": [["user", "hi"]],
    "temperature": 1.0,
    "top_p": None,
    "max_tokens": 16,
    "seed": 7,
    "stop": [],
}


async def test_memory_cache_returns_only_stored_keys() -> None:
    cache = MemoryCache()
    await cache.put_many({"a": b"1", "b": b"2"})
    assert await cache.get_many(["a", "x", "b"]) == {"a": b"1", "b": b"2"}
    assert len(cache) == 2


async def test_sqlite_cache_round_trips_many_entries(tmp_path: Path) -> None:
    async with open_sqlite_cache(tmp_path / "cache.db") as cache:
        await cache.put_many({f"k{i}": bytes([i]) for i in range(50)})
        got = await cache.get_many([f"k{i}" for i in range(0, 60, 5)])
    assert got == {f"k{i}": bytes([i]) for i in range(0, 50, 5)}


async def test_sqlite_cache_handles_empty_requests(tmp_path: Path) -> None:
    async with open_sqlite_cache(tmp_path / "cache.db") as cache:
        await cache.put_many({})
        assert await cache.get_many([]) == {}
        assert await cache.count() == 0


async def test_sqlite_cache_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with open_sqlite_cache(path) as cache:
        await cache.put_many({"a": b"\x00binary\xff", "b": b"{}"})
    async with open_sqlite_cache(path) as cache:
        assert await cache.get_many(["a", "b"]) == {"a": b"\x00binary\xff", "b": b"{}"}
        assert await cache.count() == 2


async def test_sqlite_cache_put_replaces_an_existing_value(tmp_path: Path) -> None:
    async with open_sqlite_cache(tmp_path / "cache.db") as cache:
        await cache.put_many({"a": b"old"})
        await cache.put_many({"a": b"new"})
        assert await cache.get_many(["a"]) == {"a": b"new"}
        assert await cache.count() == 1


async def test_sqlite_cache_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "run" / "nested" / "cache.db"
    async with open_sqlite_cache(path) as cache:
        await cache.put_many({"a": b"1"})
    assert path.is_file()


async def test_a_corrupt_cache_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    junk = b"this is not an SQLite database, just some junk " * 100
    path.write_bytes(junk)
    async with open_sqlite_cache(path) as cache:
        assert cache.moved_aside is not None
        assert cache.moved_aside.name.startswith("cache.db.corrupt-")
        assert await cache.get_many(["k"]) == {}
        await cache.put_many({"k": b"v"})
    assert cache.moved_aside.read_bytes() == junk  # kept for inspection, never deleted
    async with open_sqlite_cache(path) as cache:
        assert cache.moved_aside is None
        assert await cache.get_many(["k"]) == {"k": b"v"}


async def test_a_truncated_cache_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with open_sqlite_cache(path) as cache:
        await cache.put_many({f"k{i}": b"x" * 500 for i in range(200)})
    checkpointed = sqlite3.connect(path)
    checkpointed.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpointed.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    async with open_sqlite_cache(path) as cache:
        assert cache.moved_aside is not None
        assert await cache.count() == 0


async def test_a_directory_as_cache_path_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open the response cache"):
        async with open_sqlite_cache(tmp_path):
            pass


def test_cache_key_differs_by_sample_index() -> None:
    keys = {cache_key(IDENTITY, i) for i in range(-3, 8)}
    assert len(keys) == 11


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "anthropic"),
        ("model", "m2"),
        ("messages", [["system", "hi"]]),
        ("messages", [["user", "hi!"]]),
        ("temperature", 0.0),
        ("top_p", 0.9),
        ("max_tokens", 17),
        ("seed", 8),
        ("seed", None),
        ("stop", ["\n"]),
    ],
)
def test_cache_key_differs_by_any_request_field(field: str, value: object) -> None:
    assert cache_key({**IDENTITY, field: value}, 0) != cache_key(IDENTITY, 0)


def test_cache_key_ignores_the_order_of_fields() -> None:
    reordered = dict(reversed(list(IDENTITY.items())))
    assert cache_key(reordered, 3) == cache_key(IDENTITY, 3)


def test_cache_key_is_a_stable_sha256_hex_digest_and_index() -> None:
    key = cache_key({"a": 1}, 0)
    digest, index = key.split(":")
    assert len(digest) == 64
    assert index == "0"
    assert key == cache_key({"a": 1}, 0)
    int(digest, 16)
