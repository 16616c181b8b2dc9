"""The Redis connection of a coordination backend, and what every shared piece does when Redis
goes away.

:func:`open_redis` connects and checks the server at once (``ConfigError``, one line, when it
cannot be reached or the ``redis`` package is missing: the CLI exits 2 before anything is spent).
:func:`retrying` runs one Redis exchange; while the server is unreachable (restarting, a network
blip) it tries again with backoff for up to ``patience_s``, so a run pauses and goes on, then
raises :class:`CoordinationError` (a :class:`~pipeline.errors.StorageError`: the run stops
cleanly, as on a full disk, and resumes later). Every script gpo runs is atomic and every
reservation is written before its request leaves, so a lost connection loses no spend: an
exchange that failed either happened in full or not at all, and a reservation whose settlement
was lost stays counted in full.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from pipeline._log import get_logger
from pipeline.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger("gpo.coord")
T = TypeVar("T")

PATIENCE_S = 30.0
"""How long a shared piece waits for Redis to come back before the run stops cleanly."""
CONNECTIONS = 128
"""A process's connections to Redis; more concurrent commands wait for one (a gateway has
hundreds of requests in flight, each with a few commands, and each command holds a connection
for a round trip)."""


class CoordinationError(StorageError):
    """Redis was unreachable for longer than the patience: the run stops cleanly (nothing spent
    is lost; reservations in flight stay counted in full) and can be resumed."""


def redacted(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def endpoint_key(base_url: str, model: str, api_key: str | None) -> str:
    """What names an endpoint in Redis: its base URL, model and a hash of its key (never the
    key itself), so that processes using one account share one limit."""
    key_hash = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
    ident = f"{base_url.rstrip('/')}|{model}|{key_hash}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _connection_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError, BusyLoadingError, OSError)


async def retrying(
    exchange: Callable[[], Awaitable[T]],
    *,
    url: str,
    what: str,
    patience_s: float = PATIENCE_S,
) -> T:
    """``exchange()``, tried again while Redis is unreachable, for up to ``patience_s``."""
    errors = _connection_errors()
    deadline = anyio.current_time() + patience_s
    delay = 0.05
    while True:
        try:
            return await exchange()
        except errors as exc:
            left = deadline - anyio.current_time()
            if left <= 0:
                raise CoordinationError(redacted(url), f"{what}: {exc}") from None
            log.warning("redis_unreachable", what=what, error=str(exc), retry_in_s=delay)
            await anyio.sleep(min(delay, left))
            delay = min(2.0, delay * 2) * random.uniform(0.8, 1.2)


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    """A client of the Redis at ``url``, checked with a PING; closed on exit. Its pool blocks
    when all its connections are busy (redis-py's default pool fails past 100 instead)."""
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
    except ImportError:
        raise ConfigError(
            "coordination over Redis needs the redis package: pip install 'gpo[redis]'"
        ) from None
    try:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=CONNECTIONS,
            timeout=PATIENCE_S,
            socket_connect_timeout=5,
            socket_timeout=30,
        )
        client = Redis.from_pool(pool)  # owns the pool: closing the client closes it
    except ValueError as exc:
        raise ConfigError(f"coordination URL {redacted(url)!r} is not valid: {exc}") from None
    try:
        try:
            await client.ping()
        except _connection_errors() as exc:
            raise ConfigError(f"cannot reach Redis at {redacted(url)}: {exc}") from None
        yield client
    finally:
        await client.aclose()
