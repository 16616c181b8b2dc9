"""Single-flight: identical requests in flight at the same time are sent once (in this process:
:class:`SingleFlight`; across processes, with coordination: a :class:`CrossFlights`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import anyio

from pipeline.errors import LLMError

if TYPE_CHECKING:
    from pipeline.llm._cache import ResponseCache

T = TypeVar("T")


@dataclass(slots=True)
class _Flight(Generic[T]):
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: LLMError | None = None


class SingleFlight(Generic[T]):
    """Runs ``fn`` once per key at a time; concurrent callers with that key share the outcome.

    Followers get the leader's result, or its :class:`LLMError` (the same request would fail the
    same way). When the leader ends otherwise (cancelled, or refused by *its* job's budget), one
    follower takes over and sends the request itself.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): ``shared`` is True when another caller's flight produced it."""
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.result is not None:
                return flight.result, True
        return await self._lead(key, fn), False

    async def _lead(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        flight: _Flight[T] = _Flight()
        self._flights[key] = flight
        try:
            flight.result = await fn()
            return flight.result
        except LLMError as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()


class CrossFlights(Protocol):
    """Single-flight across processes (``pipeline.coord``, over Redis)."""

    def flight(self, key: str) -> AbstractAsyncContextManager[bool]:
        """Claim ``key`` for as long as the block runs: whether this process owns it."""

    async def wait(
        self, key: str, cache_keys: list[str], cache: ResponseCache, *, timeout_s: float
    ) -> dict[str, bytes]:
        """Once another process's flight of ``key`` ended (or ``timeout_s``), what ``cache``
        holds of ``cache_keys``."""
