"""Background tasks around a context manager's ``yield`` (the gateway's batchers, the
coordination session's heartbeat), the structured way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup


@asynccontextmanager
async def background_tasks() -> AsyncIterator[TaskGroup]:
    """A task group whose tasks run while the block runs and are cancelled when it ends. An
    exception of the block is raised as is, not wrapped in an exception group, so a caller
    catches ``ConfigError`` or ``BudgetExhausted`` as it would without background tasks."""
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        try:
            yield tg
        except BaseException as exc:  # raised as is below
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
