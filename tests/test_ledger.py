"""The spend ledger: reservations written ahead of requests, spend that survives any crash."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from pipeline.errors import BudgetExhausted, StorageError
from pipeline.llm._budget import Budget, Caps, Reservation
from pipeline.llm._ledger import open_sqlite_ledger
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports._fake import FakeTransport
from tests.fakes import FakeClock, open_test_gateway

PICO = 10**12


def open_rows(path: Path) -> list[tuple[int, int]]:
    """What another process reading the file sees: the open reservations (pusd, tokens)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [(int(p), int(t)) for p, t in db.execute("SELECT pusd, tokens FROM open")]


async def test_a_reservation_is_durable_before_acquire_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_sqlite_ledger(path) as ledger:
        budget = Budget(ledger=ledger)
        reservation = await budget.acquire(usd=0.25, tokens=100, endpoint="ep", job="a")
        assert open_rows(path) == [(reservation.pusd, 100)]
        budget.settle(reservation, usd=0.01, tokens=40)
    assert open_rows(path) == []


async def test_settled_spend_survives_reopening_per_scope(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_sqlite_ledger(path) as ledger:
        budget = Budget(ledger=ledger)
        budget.settle(
            await budget.acquire(usd=0.5, tokens=9, endpoint="ep", job="a"), usd=0.2, tokens=7
        )
        budget.settle(await budget.acquire(usd=0.5, tokens=9, endpoint="ep"), usd=0.1, tokens=3)
    async with open_sqlite_ledger(path) as ledger:
        assert ledger.spent["run"] == (300_000_000_000, 10)
        assert ledger.spent["job:a"] == (200_000_000_000, 7)
        assert ledger.spent["endpoint:ep"] == (300_000_000_000, 10)


def test_reservations_open_when_a_process_is_killed_count_in_full(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal, anyio
        from pipeline.llm._budget import Budget
        from pipeline.llm._ledger import open_sqlite_ledger

        async def main():
            async with open_sqlite_ledger({str(path)!r}) as ledger:
                budget = Budget(ledger=ledger)
                done = await budget.acquire(usd=0.5, tokens=10, endpoint="ep")
                await budget.acquire(usd=0.25, tokens=20, endpoint="ep")
                await budget.acquire(usd=0.125, tokens=40, endpoint="ep")
                budget.settle(done, usd=0.0625, tokens=5)
                await budget.acquire(usd=0.03125, tokens=80, endpoint="ep")
                os.kill(os.getpid(), signal.SIGKILL)

        anyio.run(main)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path.cwd(), timeout=60)
    assert done.returncode == -signal.SIGKILL

    async def reopen() -> dict[str, tuple[int, int]]:
        async with open_sqlite_ledger(path) as ledger:
            return ledger.spent

    spent = anyio.run(reopen)
    # the settled call at its real cost; the three that may have been sent at their worst case
    assert spent["run"] == (int((0.0625 + 0.25 + 0.125 + 0.03125) * PICO), 5 + 20 + 40 + 80)
    assert open_rows(path) == []  # folded into spend when reopened, once
    assert anyio.run(reopen)["run"] == spent["run"]


async def test_a_budget_preloaded_from_the_ledger_refuses_what_earlier_sessions_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    async with open_sqlite_ledger(path) as ledger:
        first = Budget(run_caps=Caps(usd=1.0), ledger=ledger)
        first.settle(await first.acquire(usd=0.8, tokens=0, endpoint="e"), usd=0.8, tokens=0)
    async with open_sqlite_ledger(path) as ledger:
        second = Budget(run_caps=Caps(usd=1.0), ledger=ledger)
        second.preload(ledger.spent)
        assert second.state().spent_usd == pytest.approx(0.8)
        with pytest.raises(BudgetExhausted):
            await second.acquire(usd=0.3, tokens=0, endpoint="e")


async def test_a_new_ledger_starts_from_the_spend_an_older_cache_recorded(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with contextlib.closing(sqlite3.connect(cache)) as db, db:
        db.execute("CREATE TABLE spend (scope TEXT PRIMARY KEY, pusd INTEGER, tokens INTEGER)")
        db.execute("INSERT INTO spend VALUES ('run', 123, 4)")
    async with open_sqlite_ledger(tmp_path / "ledger.sqlite", legacy_cache=cache) as ledger:
        assert ledger.spent == {"run": (123, 4)}
    cache.unlink()  # from now on the ledger alone holds the record
    async with open_sqlite_ledger(tmp_path / "ledger.sqlite", legacy_cache=cache) as ledger:
        assert ledger.spent == {"run": (123, 4)}


async def test_a_damaged_ledger_is_a_storage_error_never_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(StorageError, match="ledger"):
        async with open_sqlite_ledger(path):
            pass
    assert path.read_bytes() == b"not a database " * 100


class FailingLedger:
    """A ledger on a disk that has just filled up."""

    def __init__(self) -> None:
        self.settled_ids: list[int] = []

    async def opened(self, reservation: Reservation) -> None:
        raise StorageError("ledger.sqlite", "database or disk is full")

    def settled(self, reservation: Reservation, pusd: int, tokens: int) -> None:
        self.settled_ids.append(reservation.id)


async def test_a_reservation_the_ledger_cannot_record_holds_nothing() -> None:
    budget = Budget(run_caps=Caps(usd=1.0), ledger=FailingLedger())
    with pytest.raises(StorageError):
        await budget.acquire(usd=0.5, tokens=1, endpoint="ep")
    state = budget.state()
    assert (state.reserved_usd, state.spent_usd, budget.open_reservations) == (0.0, 0.0, 0)


async def test_the_gateway_sends_nothing_it_cannot_record_and_nothing_after() -> None:
    fake = FakeTransport()
    budget = Budget(ledger=FailingLedger())
    async with open_test_gateway(fake, clock=FakeClock(), budget=budget) as gw:
        with pytest.raises(StorageError):
            await gw.chat("ep", ChatRequest.of("one"))
        assert gw.fault is not None
        budget.ledger = None  # even once writes would work again, this session sends nothing
        with pytest.raises(StorageError):
            await gw.chat("ep", ChatRequest.of("two"))
    assert fake.requests == []
