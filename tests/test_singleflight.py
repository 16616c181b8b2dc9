"""SingleFlight: identical concurrent calls run once and share the outcome."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.errors import BudgetExhausted, ServerError
from pipeline.llm._singleflight import SingleFlight
from tests.fakes import let_run


async def test_concurrent_identical_keys_run_fn_once_and_share_the_result() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    runs = 0
    results: list[tuple[str, bool]] = []

    async def fn() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "value"

    async def call() -> None:
        results.append(await flights.run("k", fn))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(call)
        await let_run()
        release.set()
    assert runs == 1
    assert sorted(results) == [("value", False)] + [("value", True)] * 9


async def test_different_keys_run_separately() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    runs: list[str] = []

    async def call(key: str) -> None:
        async def fn() -> str:
            runs.append(key)
            await release.wait()
            return key

        assert await flights.run(key, fn) == (key, False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "a")
        tg.start_soon(call, "b")
        await let_run()
        release.set()
    assert sorted(runs) == ["a", "b"]


async def test_a_finished_flight_is_forgotten() -> None:
    flights: SingleFlight[int] = SingleFlight()
    runs = 0

    async def fn() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await flights.run("k", fn) == (1, False)
    assert await flights.run("k", fn) == (2, False)
    assert len(flights) == 0


async def test_the_leaders_llm_error_reaches_every_follower() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    runs = 0
    errors: list[BaseException] = []

    async def fn() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        raise ServerError("boom", endpoint="ep", status=500)

    async def call() -> None:
        try:
            await flights.run("k", fn)
        except ServerError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(call)
        await let_run()
        release.set()
    assert runs == 1
    assert len(errors) == 4
    assert all(isinstance(err, ServerError) for err in errors)


async def test_a_follower_takes_over_when_the_leader_is_cancelled() -> None:
    flights: SingleFlight[str] = SingleFlight()
    runs = 0
    follower: list[tuple[str, bool]] = []

    async def fn() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            await anyio.sleep_forever()
        return "from follower"

    leader_scope = anyio.CancelScope()

    async def lead() -> None:
        with leader_scope:
            await flights.run("k", fn)

    async def follow() -> None:
        follower.append(await flights.run("k", fn))

    async with anyio.create_task_group() as tg:
        tg.start_soon(lead)
        await let_run()
        tg.start_soon(follow)
        await let_run()
        assert follower == []
        leader_scope.cancel()
    assert runs == 2
    assert follower == [("from follower", False)]


async def test_a_follower_takes_over_when_the_leader_fails_with_a_non_llm_error() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    runs = 0
    outcomes: list[object] = []

    async def fn() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()
            raise BudgetExhausted("job cap", scope="job:a")
        return "sent by follower"

    async def call() -> None:
        try:
            outcomes.append(await flights.run("k", fn))
        except BudgetExhausted as exc:
            outcomes.append(exc.scope)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await let_run()
        tg.start_soon(call)
        await let_run()
        release.set()
    assert runs == 2
    assert outcomes == ["job:a", ("sent by follower", False)]


async def test_only_one_follower_takes_over() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    runs = 0
    results: list[tuple[str, bool]] = []

    async def fn() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            await anyio.sleep_forever()
        await release.wait()
        return "v"

    leader_scope = anyio.CancelScope()

    async def lead() -> None:
        with leader_scope:
            await flights.run("k", fn)

    async def follow() -> None:
        results.append(await flights.run("k", fn))

    async with anyio.create_task_group() as tg:
        tg.start_soon(lead)
        await let_run()
        for _ in range(5):
            tg.start_soon(follow)
        await let_run()
        leader_scope.cancel()
        await let_run()
        release.set()
    assert runs == 2
    assert sorted(results) == [("v", False)] + [("v", True)] * 4


@pytest.mark.parametrize("followers", [0, 3])
async def test_the_flight_table_is_empty_afterwards(followers: int) -> None:
    flights: SingleFlight[str] = SingleFlight()

    async def fn() -> str:
        await anyio.lowlevel.checkpoint()
        return "v"

    async with anyio.create_task_group() as tg:
        for _ in range(followers + 1):
            tg.start_soon(flights.run, "k", fn)
    assert len(flights) == 0
