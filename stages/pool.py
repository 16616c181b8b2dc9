"""A stage is a pool of workers reading one bounded stream and writing the next.

Each worker owns clones of the streams, so the output closes when the last worker ends, and the
closure travels down the pipeline. A message whose handling raises becomes a ``JobFailed`` on the
failure stream: one job's failure ends that job alone, never the stage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pipeline._log import get_logger
from pipeline.errors import GpoError
from stages.messages import JobFailed, JobId

log = get_logger("gpo.stages")


class _HasJob(Protocol):
    @property
    def job(self) -> JobId: ...


In = TypeVar("In", bound=_HasJob)
Out = TypeVar("Out")


class Stage(Generic[In, Out]):
    """``workers`` concurrent calls of ``handle`` between ``receive`` and ``send``."""

    def __init__(self, name: str, handle: Callable[[In], Awaitable[Out]], *, workers: int) -> None:
        self.name = name
        self._handle = handle
        self._workers = workers

    async def serve(
        self,
        receive: MemoryObjectReceiveStream[In],
        send: MemoryObjectSendStream[Out],
        fail: MemoryObjectSendStream[JobFailed],
    ) -> None:
        """Run until ``receive`` is closed and drained; closes ``send`` and ``fail`` after."""
        async with anyio.create_task_group() as tg:
            with receive, send, fail:
                for _ in range(self._workers):
                    tg.start_soon(self._work, receive.clone(), send.clone(), fail.clone())

    async def _work(
        self,
        receive: MemoryObjectReceiveStream[In],
        send: MemoryObjectSendStream[Out],
        fail: MemoryObjectSendStream[JobFailed],
    ) -> None:
        with receive, send, fail:
            async for message in receive:
                try:
                    result = await self._handle(message)
                except Exception as exc:
                    await fail.send(self._failed(message.job, exc))
                    continue
                await send.send(result)

    def _failed(self, job: JobId, exc: Exception) -> JobFailed:
        if isinstance(exc, GpoError):
            log.info("job_failed", job=job, stage=self.name, error=str(exc))
        else:
            log.error("job_failed", job=job, stage=self.name, error=repr(exc), exc_info=exc)
        return JobFailed(job=job, error=exc, stage=self.name)
