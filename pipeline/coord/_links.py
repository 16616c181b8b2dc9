"""What ties the gateway's limiter and budget to their shared counterparts in Redis.

The gateway's limiter and budget call a few methods from synchronous code (a refund after a
reply, a pause after a 429, a settlement): :class:`RateLink` and :class:`BudgetLink` queue
those and a background task applies them in order (a settlement or refund that never reaches
Redis leaves the shared state more conservative, never less). The waits that matter (admission,
reservation) are awaited directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pipeline._log import get_logger
from pipeline.coord._conn import CoordinationError

if TYPE_CHECKING:
    from pipeline.coord._budget import SharedAccounts
    from pipeline.coord._limits import SharedRate
    from pipeline.llm._cache import ResponseCache

log = get_logger("gpo.coord")
QUEUE = 100_000
"""Background updates waiting for Redis; past it, refunds are dropped (conservative)."""

Update = Callable[[], Awaitable[None]]


class Background:
    """Applies queued updates in order, in a task of ``tg``; :meth:`drain` waits for them."""

    def __init__(self, what: str) -> None:
        self._what = what
        send, receive = anyio.create_memory_object_stream[Update](QUEUE)
        self._send: MemoryObjectSendStream[Update] = send
        self._receive: MemoryObjectReceiveStream[Update] = receive
        self._pending = 0
        self._idle = anyio.Event()
        self._idle.set()

    def start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._run)

    def soon(self, update: Update) -> None:
        try:
            self._send.send_nowait(update)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            log.warning("redis_update_dropped", what=self._what)
            return
        self._pending += 1
        if self._idle.is_set():
            self._idle = anyio.Event()

    async def drain(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        """Accept no more updates (those queued are still applied)."""
        self._send.close()

    async def _run(self) -> None:
        async with self._receive:
            async for update in self._receive:
                try:
                    await update()
                except CoordinationError as exc:  # Redis stayed away: conservative state
                    log.warning("redis_update_lost", what=self._what, error=str(exc))
                self._pending -= 1
                if not self._pending:
                    self._idle.set()


class RateLink:
    """:class:`~pipeline.llm._limits.SharedLimits` over a :class:`SharedRate`."""

    def __init__(self, rate: SharedRate, background: Background) -> None:
        self._rate = rate
        self._bg = background

    async def admit(self, tokens: int) -> None:
        await self._rate.admit(tokens)

    def refund_soon(self, tokens: int) -> None:
        self._bg.soon(lambda: self._rate.refund(tokens))

    def pause_soon(self, seconds: float) -> None:
        self._bg.soon(lambda: self._rate.pause(seconds))

    def learn_soon(self, rpm: float | None, tpm: float | None) -> None:
        self._bg.soon(lambda: self._rate.learn(rpm, tpm))

    def tighten_soon(self, remaining_tokens: float) -> None:
        self._bg.soon(lambda: self._rate.tighten_tokens(remaining_tokens))


class BudgetLink:
    """:class:`~pipeline.llm._budget.SharedSpend` over :class:`SharedAccounts`: the budget's
    scope ``"run"`` is the account ``run_account`` (the run's own, or a team's shared by many
    runs), ``"job:NAME"`` is ``job:RUN:NAME``."""

    def __init__(self, accounts: SharedAccounts, *, run: str, run_account: str) -> None:
        self._accounts = accounts
        self._run = run
        self._run_account = run_account

    def account(self, scope: str) -> str:
        if scope == "run":
            return self._run_account
        if scope.startswith("job:"):
            return f"job:{self._run}:{scope.removeprefix('job:')}"
        return f"{scope}:{self._run}"

    async def reserve(
        self, rid: str, holds: Sequence[tuple[str, int | None, int | None]], pusd: int, tokens: int
    ) -> tuple[str, bool] | None:
        from pipeline.coord._budget import Hold

        by_account = {self.account(scope): scope for scope, _, _ in holds}
        shared = [Hold(self.account(s), usd, tok) for s, usd, tok in holds]
        refusal = await self._accounts.reserve(rid, shared, pusd, tokens)
        if refusal is None:
            return None
        return by_account.get(refusal.account, refusal.account), refusal.others_open

    def settle_soon(self, rid: str, pusd: int, tokens: int) -> None:
        self._accounts.settle_soon(rid, pusd, tokens)


class TieredCache:
    """A run directory's own cache in front of the shared one: answers are read here first,
    then from Redis (and kept here), and written to both, Redis first, so a resumed run finds
    every answer in its directory even without Redis and other processes find them in Redis."""

    def __init__(self, local: ResponseCache, shared: ResponseCache) -> None:
        self.local = local
        self.shared = shared

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        found = await self.local.get_many(keys)
        rest = [k for k in keys if k not in found]
        if rest:
            more = await self.shared.get_many(rest)
            if more:
                await self.local.put_many(more)
                found |= more
        return found

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        await self.shared.put_many(items)
        await self.local.put_many(items)
