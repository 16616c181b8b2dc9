"""Group commit: many callers share one worker-thread hop and one transaction.

Used by the response cache and the spend ledger, whose writes must be durable before the caller
goes on but must not cost one disk transaction (or block the event loop) per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

import anyio
import anyio.to_thread

T = TypeVar("T")
U = TypeVar("U")


class GroupRunner(Generic[T, U]):
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
