"""SharedAccounts against a real redis-server: separate clients and sessions stand for separate
processes sharing budget accounts. Spend never exceeds a cap across them, a dead session's open
reservations are charged in full exactly once, and a restart of Redis loses nothing.

No assertion depends on tight timing (a busy 2-core machine): waits poll with generous bounds,
and the only liveness margins are a 0.2 s heartbeat against a 1 s time-to-live.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from redis.asyncio import Redis

from pipeline.coord._budget import (
    LIVE,
    AccountTotals,
    Hold,
    Refusal,
    SharedAccounts,
    caps_key,
)
from pipeline.coord._conn import open_redis
from tests.redis_server import RedisServer

RUN = "run:r1"


@asynccontextmanager
async def session(
    url: str, name: str, *, heartbeat_s: float = 2.0, ttl_s: float = 10.0
) -> AsyncIterator[SharedAccounts]:
    """A started session with a client of its own (a process of its own), closed on exit."""
    async with open_redis(url) as redis, anyio.create_task_group() as tg:
        accounts = SharedAccounts(
            redis, url=url, session=name, heartbeat_s=heartbeat_s, ttl_s=ttl_s
        )
        await accounts.start(tg)
        try:
            yield accounts
        finally:
            await accounts.close()


@asynccontextmanager
async def sessions(
    url: str, *names: str, heartbeat_s: float = 2.0, ttl_s: float = 10.0
) -> AsyncIterator[list[SharedAccounts]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(session(url, n, heartbeat_s=heartbeat_s, ttl_s=ttl_s))
            for n in names
        ]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll ``check`` until it holds (failing after ``timeout_s``)."""
    with anyio.fail_after(timeout_s):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)


def totals(sp: int, st: int, rp: int, rt: int) -> AccountTotals:
    return AccountTotals(spent_pusd=sp, spent_tokens=st, reserved_pusd=rp, reserved_tokens=rt)


# --- one cap, two processes ------------------------------------------------------------------


async def test_two_sessions_reserving_at_once_never_pass_the_cap(redis_url: str) -> None:
    cap = Hold(RUN, 1000, None)
    async with sessions(redis_url, "a", "b") as (a, b):
        results: dict[tuple[str, str], Refusal | None] = {}

        async def one(accounts: SharedAccounts, rid: str) -> None:
            results[(accounts.session, rid)] = await accounts.reserve(rid, [cap], 300, 10)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, a, f"a{i}")
                tg.start_soon(one, b, f"b{i}")
        granted = [key for key, refusal in results.items() if refusal is None]
        assert len(granted) == 3
        refusals = [r for r in results.values() if r is not None]
        assert refusals == [Refusal(RUN, others_open=True)] * 7
        assert await a.spent(RUN) == totals(0, 0, 900, 30)

        for name, rid in granted:  # settled for less: room comes back
            (a if name == "a" else b).settle_soon(rid, 100, 4)
        await a.flush()
        await b.flush()
        assert await b.spent(RUN) == totals(300, 12, 0, 0)
        assert await b.reserve("b9", [cap], 700, 1) is None  # exactly up to the cap
        assert await a.reserve("a9", [cap], 1, 0) == Refusal(RUN, others_open=True)
        b.settle_soon("b9", 700, 1)
        await b.flush()
        assert await a.reserve("a9", [cap], 1, 0) == Refusal(RUN, others_open=False)
        assert await a.spent(RUN) == totals(1000, 13, 0, 0)


async def test_a_refusal_holds_nothing_and_names_the_first_refusing_account(
    redis_url: str,
) -> None:
    holds = [Hold(RUN, None, None), Hold("job:r1:j", 100, None), Hold("team:t", None, 50)]
    async with sessions(redis_url, "a") as (a,):
        assert await a.reserve("1", holds, 80, 40) is None
        assert await a.reserve("2", holds, 30, 5) == Refusal("job:r1:j", others_open=True)
        assert await a.reserve("3", holds, 10, 20) == Refusal("team:t", others_open=True)
        for account in ("run:r1", "job:r1:j", "team:t"):
            assert await a.spent(account) == totals(0, 0, 80, 40)
        a.settle_soon("1", 100, 40)
        await a.flush()
        assert await a.reserve("4", holds, 1, 0) == Refusal("job:r1:j", others_open=False)
        assert await a.reserve("5", holds[::2], 1, 10) is None  # without the job it fits
        assert await a.reserve("6", holds[::2], 0, 1) == Refusal("team:t", others_open=True)
        assert await a.spent("job:r1:j") == totals(100, 40, 0, 0)
        assert await a.spent("team:t") == totals(100, 40, 1, 10)


async def test_the_tightest_cap_of_the_live_sessions_holds(redis_url: str) -> None:
    async with sessions(redis_url, "a") as (a,):
        assert await a.reserve("1", [Hold(RUN, 1000, None)], 400, 0) is None
        async with sessions(redis_url, "b") as (b,):
            refused = await b.reserve("1", [Hold(RUN, 500, None)], 200, 0)
            assert refused == Refusal(RUN, others_open=True)
            refused = await a.reserve("2", [Hold(RUN, 1000, None)], 200, 0)
            assert refused == Refusal(RUN, others_open=True)  # b's cap binds a too
            assert await a.reserve("3", [Hold(RUN, 1000, None)], 100, 0) is None
        assert await a.reserve("2", [Hold(RUN, 1000, None)], 200, 0) is None  # b has gone
        assert await a.spent(RUN) == totals(0, 0, 700, 0)


async def test_amounts_beyond_a_doubles_precision_are_exact(redis_url: str) -> None:
    big = 10**17  # 100,000 USD in pico-dollars: doubles step by 16 there
    cap = [Hold(RUN, big + 1, None)]
    async with sessions(redis_url, "a") as (a,):
        assert await a.reserve("1", cap, big, 0) is None
        assert await a.reserve("2", cap, 2, 0) == Refusal(RUN, others_open=True)
        assert await a.reserve("3", cap, 1, 0) is None
        a.settle_soon("1", big, 0)
        a.settle_soon("3", 1, 0)
        await a.flush()
        assert await a.spent(RUN) == totals(big + 1, 0, 0, 0)
        assert await a.reserve("4", cap, 1, 0) == Refusal(RUN, others_open=False)


# --- many random reservations from four processes --------------------------------------------

CAP_PUSD, CAP_TOKENS, JOB_CAP_PUSD = 20_000, 6_000, 8_000


class Load:
    """Workers reserving and settling at random; what they settled, per account."""

    def __init__(self) -> None:
        self.settled: dict[str, Counter[str]] = {}
        self.outcomes: Counter[str] = Counter()

    async def worker(self, accounts: SharedAccounts, worker: int) -> None:
        rng = random.Random(worker)
        holds = [Hold(RUN, CAP_PUSD, CAP_TOKENS), Hold(f"job:r1:{worker % 3}", JOB_CAP_PUSD, None)]
        for i in range(25):
            pusd, tokens, rid = rng.randint(1, 600), rng.randint(0, 200), f"{worker}-{i}"
            if not await self._reserve(accounts, rid, holds, pusd, tokens):
                continue
            await within_caps(accounts)  # a sampled point at the height of a reservation
            await anyio.sleep(rng.random() * 0.005)
            real_pusd, real_tokens = rng.randint(0, pusd), rng.randint(0, tokens)
            accounts.settle_soon(rid, real_pusd, real_tokens)
            for hold in holds:
                counter = self.settled.setdefault(hold.account, Counter())
                counter.update(pusd=real_pusd, tokens=real_tokens)

    async def _reserve(
        self, accounts: SharedAccounts, rid: str, holds: list[Hold], pusd: int, tokens: int
    ) -> bool:
        for _ in range(100):
            refusal = await accounts.reserve(rid, holds, pusd, tokens)
            if refusal is None:
                self.outcomes["granted"] += 1
                return True
            if not refusal.others_open:
                self.outcomes["exhausted"] += 1
                return False
            self.outcomes["waited"] += 1
            await anyio.sleep(0.002)
        return False


async def within_caps(accounts: SharedAccounts) -> None:
    run = await accounts.spent(RUN)
    assert run.spent_pusd + run.reserved_pusd <= CAP_PUSD
    assert run.spent_tokens + run.reserved_tokens <= CAP_TOKENS
    for job in range(3):
        totals = await accounts.spent(f"job:r1:{job}")
        assert totals.spent_pusd + totals.reserved_pusd <= JOB_CAP_PUSD


async def test_random_concurrent_load_from_four_sessions_stays_within_the_caps(
    redis_url: str,
) -> None:
    load = Load()
    async with sessions(redis_url, "s0", "s1", "s2", "s3") as shared:
        done = anyio.Event()

        async def work() -> None:
            async with anyio.create_task_group() as workers:
                for index, accounts in enumerate(shared):
                    for k in range(3):
                        workers.start_soon(load.worker, accounts, index * 3 + k)
            done.set()

        async def sample() -> None:
            while not done.is_set():
                await within_caps(shared[load.outcomes["samples"] % 4])
                load.outcomes["samples"] += 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            tg.start_soon(sample)
        for accounts in shared:
            await accounts.flush()
        await within_caps(shared[0])
        for account, settled in load.settled.items():
            expected = totals(settled["pusd"], settled["tokens"], 0, 0)
            assert await shared[1].spent(account) == expected
    assert load.outcomes["samples"] > 5
    assert load.outcomes["granted"] > 20
    assert load.outcomes["exhausted"] > 0  # the caps were reached


# --- a session that dies ---------------------------------------------------------------------


async def test_a_dead_sessions_open_reservations_are_charged_in_full_once(
    redis_url: str,
) -> None:
    holds = [Hold(RUN, 10**6, None), Hold("job:r1:x", None, None)]
    async with (
        sessions(redis_url, "r1", "r2", heartbeat_s=30, ttl_s=60) as (r1, r2),
        open_redis(redis_url) as redis,
    ):
        async with anyio.create_task_group() as tg:
            dead = SharedAccounts(redis, url=redis_url, session="dead", heartbeat_s=0.2, ttl_s=1)
            await dead.start(tg)
            assert await dead.reserve("1", holds, 300, 30) is None
            assert await dead.reserve("2", holds[:1], 200, 20) is None
            assert await dead.reserve("3", holds[:1], 100, 10) is None
            dead.settle_soon("2", 50, 5)
            await dead.flush()
            assert await r1.reap() == 0  # alive: nothing to reap
            tg.cancel_scope.cancel()  # the process dies: no heartbeat, no close

        await eventually(lambda: _gone(redis, LIVE + "dead"))
        reaped: list[int] = []

        async def reap(accounts: SharedAccounts) -> None:
            reaped.append(await accounts.reap())

        async with anyio.create_task_group() as tg:
            tg.start_soon(reap, r1)
            tg.start_soon(reap, r2)
        assert sorted(reaped) == [0, 2]
        assert await r1.reap() == 0
        assert await r1.spent(RUN) == totals(450, 45, 0, 0)
        assert await r1.spent("job:r1:x") == totals(300, 30, 0, 0)
        assert not await redis.hexists(caps_key(RUN), "dead")  # its cap is forgotten

        dead.settle_soon("1", 1, 1)  # a settlement arriving after the reaping: no effect
        await dead.flush()
        assert await r2.spent(RUN) == totals(450, 45, 0, 0)


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


# --- settlements -----------------------------------------------------------------------------


async def test_settling_is_idempotent_and_counts_real_amounts(redis_url: str) -> None:
    hold = [Hold(RUN, None, None)]
    async with sessions(redis_url, "a") as (a,):
        assert await a.reserve("x", hold, 100, 10) is None
        assert await a.reserve("x", hold, 100, 10) is None  # a retried exchange: held once
        a.settle_soon("unknown", 5, 5)
        await a.flush()
        assert await a.spent(RUN) == totals(0, 0, 100, 10)
        a.settle_soon("x", 40, 4)
        a.settle_soon("x", 40, 4)
        await a.flush()
        assert await a.spent(RUN) == totals(40, 4, 0, 0)
        assert await a.reserve("y", hold, 10, 1) is None
        a.settle_soon("y", 25, 3)  # above its reservation: counted as is
        await a.flush()
        assert await a.spent(RUN) == totals(65, 7, 0, 0)


# --- the run lock ----------------------------------------------------------------------------


async def test_a_lock_is_held_by_one_session_at_a_time(redis_url: str) -> None:
    async with sessions(redis_url, "a", "b") as (a, b):
        assert await a.lock("run:r1") is None
        assert await a.lock("run:r1") is None  # held already
        assert await b.lock("run:r1") == "a"
        await b.unlock("run:r1")  # not b's: no effect
        assert await b.lock("run:r1") == "a"
        await a.unlock("run:r1")
        assert await b.lock("run:r1") is None
        assert await a.lock("run:r1") == "b"
        async with sessions(redis_url, "c") as (c,):
            assert await c.lock("run:r3") is None
        assert await a.lock("run:r3") is None  # released when c closed


async def test_a_dead_holders_lock_expires(redis_url: str) -> None:
    async with sessions(redis_url, "b") as (b,), open_redis(redis_url) as redis:
        async with anyio.create_task_group() as tg:
            c = SharedAccounts(redis, url=redis_url, session="c", heartbeat_s=0.2, ttl_s=1)
            await c.start(tg)
            assert await c.lock("run:r2") is None
            await anyio.sleep(1.6)  # past the time-to-live: the heartbeat keeps it
            assert await b.lock("run:r2") == "c"
            tg.cancel_scope.cancel()

        async def taken() -> bool:
            return await b.lock("run:r2") is None

        await eventually(taken)


# --- Redis restarted -------------------------------------------------------------------------


async def test_a_restart_of_redis_between_reserve_and_settle_loses_nothing(
    redis_url: str, redis_server: RedisServer
) -> None:
    cap = [Hold(RUN, 1000, None)]
    async with sessions(redis_url, "a", ttl_s=30) as (a,):
        assert await a.reserve("1", cap, 600, 60) is None
        redis_server.kill()  # SIGKILL: only what the append-only file holds survives
        redis_server.start()
        assert await a.spent(RUN) == totals(0, 0, 600, 60)
        a.settle_soon("1", 250, 25)
        await a.flush()
        assert await a.spent(RUN) == totals(250, 25, 0, 0)
        assert await a.reserve("2", cap, 750, 0) is None  # its scripts are loaded again
        assert await a.reserve("3", cap, 1, 0) == Refusal(RUN, others_open=True)
