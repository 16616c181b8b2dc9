"""The response cache and the single-flight that several gpo processes share over Redis.

:class:`RedisCache` is a :class:`~pipeline.llm._cache.ResponseCache`: one ``MGET`` a 1,000 keys
to read, ``MSET`` to write (``SET PX`` in a pipeline when a ``ttl_s`` is given; by default
answers never expire). A write returns once Redis acknowledged it; with the append-only file and
``appendfsync always`` (the durability gpo documents) that is on disk, so a process killed after
a write returned never pays again for that answer. Values are bytes: the client must not decode
responses (the one :func:`~pipeline.coord.open_redis` gives does not).

:class:`SharedFlights` carries single-flight (:class:`~pipeline.llm._singleflight.SingleFlight`,
within one process) across processes. A flight is the key ``{namespace}:{key}`` holding the
owner's session, with a lease (``PX``). A paid request goes::

    found = await cache.get_many(keys)
    while missing := [k for k in keys if k not in found]:
        if await flights.claim(key):      # or: async with flights.flight(key) as owned
            try:
                found |= await cache.get_many(missing)  # a flight may have ended since the look
                ...send what is still missing, then await cache.put_many(answers)
            finally:
                await flights.release(key)
        else:
            found |= await flights.wait(key, missing, cache, timeout_s=...)

A claim by the session that already owns the flight succeeds (and renews the lease): a claim
tried again after its reply was lost is not mistaken for another process's flight. Within one
process, :class:`~pipeline.llm._singleflight.SingleFlight` keeps one flight a key.

Waiting polls, chosen over pub/sub: ``GET`` of the flight with backoff from 20 ms to 500 ms, so a
waiter learns of the end at most half a second late (small beside a model's answer) for two cheap
commands a second over the client's pooled connections, where pub/sub would hold a connection a
waiter and have to subscribe again after a restart. :meth:`SharedFlights.release` still publishes
the key on ``{namespace}:released`` for whoever would rather listen.

A dead owner never releases: its lease expires (``lease_s``, 30 s by default, renewed every third
of it while the owner lives) and the waiters go on, claim and send themselves. The bound: only
the requests that were in flight in a process that died (or that lost Redis for longer than its
lease) can be paid twice, once by it and once by the process that takes over; an answer any
process wrote to the cache is never paid for again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio

from pipeline._log import get_logger
from pipeline.coord._conn import CoordinationError, retrying
from pipeline.llm._cache import ResponseCache

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = get_logger("gpo.coord")

CHUNK = 1000
"""Keys a ``MGET`` or ``MSET``: a large lookup is a few round trips, none of them huge."""
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5
POLL_GROWTH = 1.5

_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def _ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds, at least 1 (``PX 0`` is an error)."""
    return max(1, round(seconds * 1000))


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


class RedisCache:
    """Paid answers kept in Redis under ``{namespace}:{key}``, shared by every process."""

    def __init__(
        self,
        redis: Redis,
        *,
        url: str,
        namespace: str = "gpo:cache",
        ttl_s: float | None = None,
    ) -> None:
        self._redis = redis
        self._url = url
        self._prefix = f"{namespace}:"
        self._ttl_ms = None if ttl_s is None else _ms(ttl_s)

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The cached answers of ``keys``; keys never written are absent."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            found.update(await self._get_chunk(chunk))
        return found

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        """Keep ``items``; returns once Redis acknowledged every one."""
        for chunk in _chunks(list(items.items())):
            await self._put_chunk(dict(chunk))

    async def _get_chunk(self, keys: list[str]) -> dict[str, bytes]:
        names = [self._prefix + key for key in keys]
        values = await retrying(lambda: self._mget(names), url=self._url, what="cache")
        return {k: bytes(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def _put_chunk(self, items: dict[str, bytes]) -> None:
        mapping = {self._prefix + key: value for key, value in items.items()}
        await retrying(lambda: self._write(mapping), url=self._url, what="cache")

    async def _mget(self, names: list[str]) -> list[bytes | None]:
        return cast(list[bytes | None], await cast(Awaitable[Any], self._redis.mget(names)))

    async def _write(self, mapping: dict[str, bytes]) -> None:
        if self._ttl_ms is None:
            await cast(Awaitable[Any], self._redis.mset(mapping))
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, value in mapping.items():
                pipe.set(name, value, px=self._ttl_ms)
            await pipe.execute()


class SharedFlights:
    """Cross-process single-flight of paid requests: see the module's docstring.

    ``session`` names the owning process (it must differ between processes).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        url: str,
        session: str,
        namespace: str = "gpo:flight",
        lease_s: float = 30.0,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, not {lease_s}")
        self._redis = redis
        self._url = url
        self._prefix = f"{namespace}:"
        self.session = session
        self.lease_s = lease_s
        self.channel = f"{namespace}:released"
        """Where :meth:`release` publishes the key of each flight it ended."""
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, key: str) -> bool:
        """True when this session now owns the flight of ``key`` (and will send the request)."""
        return await self._run(self._claim, key, _ms(self.lease_s))

    async def renew(self, key: str) -> bool:
        """Extend the lease to ``lease_s`` from now; False (nothing done) when not the owner."""
        return await self._run(self._renew, key, _ms(self.lease_s))

    async def release(self, key: str) -> bool:
        """End the flight and publish its end; False (nothing done) when not the owner."""
        return await self._run(self._release, key, self.channel, key)

    async def wait(
        self, key: str, cache_keys: list[str], cache: ResponseCache, *, timeout_s: float
    ) -> dict[str, bytes]:
        """Wait until the flight of ``key`` now under way ends (released, lease expired or
        ``timeout_s`` passed), then what ``cache`` holds of ``cache_keys``: perhaps only part or
        nothing, whereupon the caller claims and sends itself."""
        owner = await self._owner(key)
        deadline = anyio.current_time() + timeout_s
        delay = POLL_FIRST_S
        while owner is not None and await self._owner(key) == owner:
            left = deadline - anyio.current_time()
            if left <= 0:
                log.info("flight_wait_timeout", key=key, owner=owner, timeout_s=timeout_s)
                break
            await anyio.sleep(min(delay, left))
            delay = min(POLL_MAX_S, delay * POLL_GROWTH)
        return await cache.get_many(cache_keys)

    @asynccontextmanager
    async def flight(self, key: str) -> AsyncIterator[bool]:
        """Claim ``key``; yield whether owned. While owned, the lease is renewed every third of
        it; the flight is released on exit, also on an error or cancellation."""
        if not await self.claim(key):
            yield False
            return
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, key)
                try:
                    yield True
                except Exception as exc:  # raised again below, not wrapped by the task group
                    error = exc
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.release(key)
        if error is not None:
            raise error

    async def _keep_alive(self, key: str) -> None:
        """Renew the lease of ``key`` every third of it until cancelled or lost (never raises:
        a lost lease costs at most the documented double payment, not the request)."""
        while True:
            await anyio.sleep(self.lease_s / 3)
            try:
                renewed = await self.renew(key)
            except CoordinationError as exc:
                log.warning("flight_renew_failed", key=key, error=str(exc))
                return
            if not renewed:
                log.warning("flight_lease_lost", key=key, session=self.session)
                return

    async def _owner(self, key: str) -> bytes | None:
        name = self._prefix + key
        return await retrying(lambda: self._get(name), url=self._url, what="single-flight")

    async def _get(self, name: str) -> bytes | None:
        return cast(bytes | None, await cast(Awaitable[Any], self._redis.get(name)))

    async def _run(self, script: AsyncScript, key: str, *args: str | int) -> bool:
        keys = [self._prefix + key]
        argv = [self.session, *args]

        async def call() -> bool:
            return bool(await script(keys=keys, args=argv))

        return await retrying(call, url=self._url, what="single-flight")
