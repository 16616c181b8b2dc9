"""SharedRate against a real redis-server: two clients stand for two processes sharing one
endpoint's buckets, pause and learned limits; a restart of Redis is ridden out.

Time bounds are generous (a busy 2-core machine): rates are checked over more than a second,
and nothing asserts a duration below about 100 ms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from redis.asyncio import Redis

from pipeline.coord._conn import open_redis
from pipeline.coord._limits import SharedRate
from tests.redis_server import RedisServer

KEY = "endpoint-under-test"


@asynccontextmanager
async def clients(url: str, count: int = 2) -> AsyncIterator[list[Redis]]:
    """``count`` separate Redis clients (separate connection pools, as separate processes)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_redis(url)) for _ in range(count)]


def shared(
    redis: Redis,
    url: str,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    burst_s: float = 1.0,
    max_pause_s: float = 120.0,
) -> SharedRate:
    return SharedRate(
        redis, url=url, key=KEY, rpm=rpm, tpm=tpm, burst_s=burst_s, max_pause_s=max_pause_s
    )


async def admitted_within(rates: list[SharedRate], seconds: float) -> tuple[list[int], float]:
    """How many single requests each of ``rates`` admits (two callers each) in ``seconds``, and
    the seconds that actually passed."""
    counts = [0] * len(rates)

    async def caller(index: int) -> None:
        while True:
            await rates[index].admit(1)
            counts[index] += 1

    start = time.monotonic()
    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:
            for index in range(len(rates)):
                tg.start_soon(caller, index)
                tg.start_soon(caller, index)
    return counts, time.monotonic() - start


async def timed(rate: SharedRate, tokens: int) -> float:
    start = time.monotonic()
    await rate.admit(tokens)
    return time.monotonic() - start


async def tokens_available(rate: SharedRate) -> float:
    available = (await rate.state()).tokens_available
    assert available is not None
    return available


# --- requests/min ----------------------------------------------------------------------------


async def test_two_processes_share_one_request_bucket(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        # 10/s; the server's bucket holds 10, ours 5
        rates = [shared(one, redis_url, rpm=600), shared(two, redis_url, rpm=600)]
        counts, elapsed = await admitted_within(rates, 1.5)
    allowed = 5 + 10 * elapsed + 1
    assert sum(counts) <= allowed
    assert sum(counts) >= 0.6 * allowed  # not starved: the refill is used
    assert min(counts) >= 2  # both processes get requests through


async def test_a_learned_lower_limit_is_followed_by_every_process(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        teacher, other = shared(one, redis_url, rpm=600), shared(two, redis_url, rpm=600)
        await teacher.learn(rpm=120, tpm=None)  # 2/s: server bucket 2, ours 1
        await other.learn(rpm=6000, tpm=None)  # a higher limit never raises the shared one
        assert (await other.state()).rpm == 120
        (count,), elapsed = await admitted_within([other], 1.5)
    assert 2 <= count <= 1 + 2 * elapsed + 1  # 600/min would have let ~20 through


async def test_the_effective_limit_is_the_lower_of_configured_and_learned(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        await shared(one, redis_url).learn(rpm=120, tpm=5000)
        strict = shared(two, redis_url, rpm=60)
        unconfigured = shared(two, redis_url)
        assert (await strict.state()).rpm == 60
        state = await unconfigured.state()
    assert (state.rpm, state.tpm) == (120, 5000)  # unlimited buckets become limited
    assert state.tokens_available == pytest.approx(5000 / 60 * 0.5)  # a new bucket starts full


async def test_unlimited_buckets_admit_at_once(redis_url: str) -> None:
    async with clients(redis_url, 1) as (one,):
        rate = shared(one, redis_url)
        start = time.monotonic()
        for _ in range(200):
            await rate.admit(10**6)
        state = await rate.state()
    assert time.monotonic() - start < 5
    assert (state.rpm, state.tpm, state.tokens_available) == (None, None, None)


# --- tokens/min ------------------------------------------------------------------------------


async def test_a_request_over_the_capacity_leaves_debt_and_the_next_waits(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        first = shared(one, redis_url, tpm=6000)  # 100/s; capacity 50
        second = shared(two, redis_url, tpm=6000)
        assert await timed(first, 150) < 0.5  # paid from the full bucket
        assert await tokens_available(second) < -80  # about -100, shared
        waited = await timed(second, 10)  # the debt and 10 more: 1.1 s
    assert 0.9 <= waited < 6


async def test_refund_and_tighten_move_the_shared_level(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        # 10/s and 10 s of burst: the server's bucket holds 100, ours 50, the margin is 50
        first = shared(one, redis_url, tpm=600, burst_s=10)
        second = shared(two, redis_url, tpm=600, burst_s=10)
        await first.admit(150)
        before = await tokens_available(second)
        await second.refund(60)
        assert await tokens_available(first) - before == pytest.approx(60, abs=10)
        await first.refund(1000)
        assert await tokens_available(second) == pytest.approx(50)  # up to the capacity
        await second.tighten_tokens(70)  # less the margin
        assert await tokens_available(first) == pytest.approx(20, abs=5)
        await second.tighten_tokens(1000)  # never raises the level
        assert await tokens_available(first) < 30


async def test_waiting_for_tokens_takes_no_request(redis_url: str) -> None:
    async with clients(redis_url, 1) as (one,):
        # requests: 1/s, capacity 5; tokens: 10/s, capacity 50
        rate = shared(one, redis_url, rpm=60, tpm=600, burst_s=10)
        await rate.admit(50)
        for _ in range(5):
            with anyio.move_on_after(0.05):  # gives up waiting 5 s for tokens
                await rate.admit(50)
        await rate.refund(50)
        # four requests are left: none was taken by the waits given up
        assert all([await timed(rate, 0) < 0.5 for _ in range(4)])


# --- pause -----------------------------------------------------------------------------------


async def test_a_pause_holds_every_process(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        pauser, other = shared(one, redis_url, rpm=6000), shared(two, redis_url)
        await pauser.pause(0.8)
        waited = await timed(other, 1)
    assert 0.6 <= waited < 5


async def test_a_shorter_pause_does_not_shorten_a_longer_one(redis_url: str) -> None:
    async with clients(redis_url) as (one, two):
        first, second = shared(one, redis_url), shared(two, redis_url, max_pause_s=2.0)
        await first.pause(3.0)
        await second.pause(0.2)
        assert (await second.state()).paused_for_s > 2.5
        await first.pause(0)  # nothing
        await second.pause(100)  # capped at 2 s: shorter than what runs, kept
        assert (await first.state()).paused_for_s > 2.5


async def test_a_pause_is_capped(redis_url: str) -> None:
    async with clients(redis_url, 1) as (one,):
        rate = shared(one, redis_url, max_pause_s=1.5)
        await rate.pause(600)
        assert 0.5 < (await rate.state()).paused_for_s <= 1.5


# --- Redis going away ------------------------------------------------------------------------


async def test_admit_rides_out_a_redis_restart(redis_server: RedisServer, redis_url: str) -> None:
    async with clients(redis_url, 1) as (one,):
        rate = shared(one, redis_url, rpm=600, tpm=6000)
        await rate.admit(10)
        redis_server.stop()  # the script cache goes with it

        async def restart_later() -> None:
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(redis_server.start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(restart_later)
            waited = await timed(rate, 10)
        assert waited >= 0.3  # it waited for the server
        assert (await rate.state()).tpm == 6000
