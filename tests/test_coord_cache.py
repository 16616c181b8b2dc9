"""RedisCache and SharedFlights against a real redis-server (tests/redis_server.py).

Each "process" is a client of its own with a session of its own; the races count how many
callers sent the (simulated) paid request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread
import pytest

from pipeline.coord import open_redis
from pipeline.coord._cache import RedisCache, SharedFlights
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from redis.asyncio import Redis

ANSWER = b"\xff\xfeanswer\x00\x80"
SEND_S = 0.3  # long enough that every racer claims or waits while the first one sends


@dataclass
class Process:
    redis: Redis
    cache: RedisCache
    flights: SharedFlights


@asynccontextmanager
async def processes(url: str, n: int, *, lease_s: float = 30.0) -> AsyncIterator[list[Process]]:
    """``n`` clients, each with a cache and flights of its own (sessions p0, p1, ...)."""
    async with AsyncExitStack() as stack:
        procs = []
        for i in range(n):
            redis = await stack.enter_async_context(open_redis(url))
            flights = SharedFlights(redis, url=url, session=f"p{i}", lease_s=lease_s)
            procs.append(Process(redis, RedisCache(redis, url=url), flights))
        yield procs


async def call(redis: Redis, method: str, *args: Any) -> Any:
    """A raw command (redis-py types its replies as maybe-awaitable)."""
    return await cast(Awaitable[Any], getattr(redis, method)(*args))


async def test_bytes_round_trip_exactly_and_missing_keys_are_absent(redis_url: str) -> None:
    values = {
        "a": b"\xff\xfe\x00\x80",
        "empty": b"",
        "utf8": "réponse".encode(),
        "big": bytes(range(256)) * 400,
    }
    async with processes(redis_url, 2) as (writer, reader):
        await writer.cache.put_many(values)
        assert await reader.cache.get_many([*values, "missing"]) == values
        assert await reader.cache.get_many(["missing"]) == {}
        assert await reader.cache.get_many([]) == {}
        assert await call(reader.redis, "get", "gpo:cache:a") == b"\xff\xfe\x00\x80"
        assert await call(reader.redis, "pttl", "gpo:cache:a") == -1  # no expiry by default


async def test_ttl_is_optional(redis_url: str) -> None:
    async with processes(redis_url, 1) as (proc,):
        cache = RedisCache(proc.redis, url=redis_url, namespace="t", ttl_s=60)
        await cache.put_many({"k": b"v", "l": b"w"})
        assert await cache.get_many(["k", "l"]) == {"k": b"v", "l": b"w"}
        assert 0 < await call(proc.redis, "pttl", "t:k") <= 60_000


async def test_many_keys_are_read_in_chunks_of_a_thousand(
    redis_url: str, redis_server: RedisServer
) -> None:
    items = {f"key{i}": f"value{i}".encode() + b"\xff" for i in range(2990)}
    wanted = [*items, *(f"missing{i}" for i in range(10))]
    async with processes(redis_url, 1) as (proc,):
        await proc.cache.put_many(items)
        assert redis_server.command("CONFIG", "RESETSTAT").startswith("+OK")
        assert await proc.cache.get_many(wanted) == items
        stats = await call(proc.redis, "info", "commandstats")
        assert stats["cmdstat_mget"]["calls"] == 3


async def test_a_second_claim_fails_and_its_wait_returns_the_answer(redis_url: str) -> None:
    async with processes(redis_url, 2) as (owner, other):
        assert await owner.flights.claim("r")
        assert not await other.flights.claim("r")
        assert await owner.flights.claim("r")  # the owner's own claim again (a retried one)
        found: dict[str, bytes] = {}
        done = anyio.Event()

        async def waiter() -> None:
            found.update(await other.flights.wait("r", ["r:0"], other.cache, timeout_s=20))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.3)
            assert not done.is_set()  # still waiting while the owner holds the flight
            await owner.cache.put_many({"r:0": ANSWER})
            assert await owner.flights.release("r")
            with anyio.fail_after(5):
                await done.wait()
        assert found == {"r:0": ANSWER}
        assert await other.flights.claim("r")  # the flight ended


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("style", ["claim", "flight"])
async def test_only_one_of_racing_processes_sends(redis_url: str, n: int, style: str) -> None:
    sends = 0
    answers: list[bytes] = []
    go = anyio.Event()

    async def send(proc: Process) -> None:
        """The paid request: looks again first (a flight may have ended since the look)."""
        nonlocal sends
        if not await proc.cache.get_many(["r:0"]):
            sends += 1
            await anyio.sleep(SEND_S)
            await proc.cache.put_many({"r:0": ANSWER})

    async def owned(proc: Process) -> bool:
        if style == "flight":
            async with proc.flights.flight("r") as mine:
                if mine:
                    await send(proc)
                return mine
        if not await proc.flights.claim("r"):
            return False
        try:
            await send(proc)
        finally:
            await proc.flights.release("r")
        return True

    async def racer(proc: Process) -> None:
        await go.wait()
        while not (found := await proc.cache.get_many(["r:0"])):
            if not await owned(proc):
                found = await proc.flights.wait("r", ["r:0"], proc.cache, timeout_s=20)
                if found:
                    break
        answers.append(found["r:0"])

    async with processes(redis_url, n) as procs:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for proc in procs:
                    tg.start_soon(racer, proc)
                go.set()
    assert sends == 1
    assert answers == [ANSWER] * n


async def test_a_dead_owners_lease_expires_and_the_waiter_goes_on(redis_url: str) -> None:
    async with processes(redis_url, 2, lease_s=0.4) as (dead, other):
        start = anyio.current_time()
        assert await dead.flights.claim("r")  # then never renewed nor released
        assert not await other.flights.claim("r")
        with anyio.fail_after(10):
            found = await other.flights.wait("r", ["r:0"], other.cache, timeout_s=20)
        assert found == {}
        assert anyio.current_time() - start >= 0.35  # not before the lease ran out
        assert await other.flights.claim("r")


async def test_wait_gives_up_after_its_timeout(redis_url: str) -> None:
    async with processes(redis_url, 2) as (owner, other):
        await other.cache.put_many({"r:1": b"partial"})
        assert await owner.flights.claim("r")
        start = anyio.current_time()
        found = await other.flights.wait("r", ["r:0", "r:1"], other.cache, timeout_s=0.3)
        assert anyio.current_time() - start >= 0.29
        assert found == {"r:1": b"partial"}
        assert await call(owner.redis, "get", "gpo:flight:r") == b"p0"


async def test_renew_keeps_a_flight_past_its_lease(redis_url: str) -> None:
    async with processes(redis_url, 2, lease_s=0.8) as (owner, other):
        assert await owner.flights.claim("r")
        for _ in range(8):  # 1.6 s: twice the lease
            await anyio.sleep(0.2)
            assert await owner.flights.renew("r")
            assert not await other.flights.claim("r")
        assert not await other.flights.renew("r")  # a non-owner's renewal does nothing
        assert await call(owner.redis, "get", "gpo:flight:r") == b"p0"


async def test_release_by_a_non_owner_does_nothing(redis_url: str) -> None:
    async with processes(redis_url, 2) as (owner, other):
        assert await owner.flights.claim("r")
        assert not await other.flights.release("r")
        assert await call(owner.redis, "get", "gpo:flight:r") == b"p0"
        assert not await other.flights.claim("r")
        assert await owner.flights.release("r")
        assert await call(owner.redis, "exists", "gpo:flight:r") == 0
        assert not await owner.flights.release("r")


async def test_release_publishes_the_end(redis_url: str) -> None:
    async with processes(redis_url, 2) as (owner, listener):
        async with listener.redis.pubsub() as pubsub:
            await pubsub.subscribe(owner.flights.channel)
            assert await owner.flights.claim("r")
            assert await owner.flights.release("r")
            with anyio.fail_after(5):
                messages = [m async for m in _messages(pubsub, 2)]
        assert [m["type"] for m in messages] == ["subscribe", "message"]
        assert messages[1]["data"] == b"r"


async def _messages(pubsub: Any, count: int) -> AsyncIterator[dict[str, Any]]:
    async for message in pubsub.listen():
        yield message
        count -= 1
        if count == 0:
            return


async def test_flight_renews_while_held_and_releases_on_exit(redis_url: str) -> None:
    async with processes(redis_url, 2, lease_s=0.6) as (owner, other):
        async with owner.flights.flight("r") as mine:
            assert mine
            async with other.flights.flight("r") as theirs:
                assert not theirs
            await anyio.sleep(1.5)  # 2.5 leases
            assert not await other.flights.claim("r")
        assert await call(owner.redis, "exists", "gpo:flight:r") == 0


async def test_flight_releases_on_error_and_cancellation(redis_url: str) -> None:
    async with processes(redis_url, 1) as (proc,):

        async def fail() -> None:
            async with proc.flights.flight("r") as mine:
                assert mine
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):  # the error itself, not a group
            await fail()
        assert await call(proc.redis, "exists", "gpo:flight:r") == 0
        with anyio.move_on_after(0.2) as scope:
            async with proc.flights.flight("r") as mine:
                assert mine
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert await call(proc.redis, "exists", "gpo:flight:r") == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_redis_restart_loses_nothing_written(
    redis_url: str, redis_server: RedisServer, how: str
) -> None:
    items = {f"k{i}": bytes([i % 256]) * (i + 1) for i in range(100)}
    async with processes(redis_url, 2) as (writer, other):
        await writer.cache.put_many(items)
        assert await writer.flights.claim("r")
        await anyio.to_thread.run_sync(getattr(redis_server, how))
        await anyio.to_thread.run_sync(redis_server.start)
        assert await other.cache.get_many([*items, "missing"]) == items
        assert not await other.flights.claim("r")  # the flight and its lease survived too


async def test_many_concurrent_commands_wait_for_a_connection_instead_of_failing(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A gateway has hundreds of requests in flight, each with cache and flight commands: more
    # than a client's connections. They must queue for a connection, not fail with "Too many
    # connections" (what redis-py's default pool does past 100).
    async with processes(redis_url, 1) as (proc,):
        await proc.cache.put_many({"k": b"v"})
        found: list[dict[str, bytes]] = []

        async def look() -> None:
            found.append(await proc.cache.get_many(["k"]))

        with caplog.at_level(logging.WARNING, logger="gpo"):
            async with anyio.create_task_group() as tg:
                for _ in range(400):
                    tg.start_soon(look)
    assert found == [{"k": b"v"}] * 400
    assert "redis_unreachable" not in caplog.text
