"""A provider with a batch API, in memory: the fake the batcher's unit tests run against.

It plays the provider, not gpo: batches are kept with their items, go ``in_progress`` when
created and end after ``polls_to_end`` status reads; ``fail_batches`` makes the next batches
fail (no results), ``error_ids`` answers chosen requests with an error, ``never_end`` keeps
batches running until cancelled, ``lose_create_answer`` creates a batch but raises as if the
answer was lost. Realtime chat is answered by :func:`echo_reply` and recorded.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from pipeline.errors import ConnectionFailed, LLMError, ServerError
from pipeline.llm._values import ChatRequest, TransportReply
from pipeline.llm.transports._batch import BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._fake import FakeTransport, echo_reply


@dataclass(slots=True)
class FakeBatch:
    id: str
    tag: str
    items: tuple[BatchItem, ...]
    created_at: float
    polls: int = 0
    status: str = "in_progress"
    failed: bool = False


@dataclass(slots=True)
class FakeBatchProvider(FakeTransport):
    """See the module docstring. ``batches`` holds every batch ever created, in order."""

    answer: Callable[[ChatRequest], TransportReply] = echo_reply
    polls_to_end: int = 1
    fail_batches: int = 0
    error_ids: dict[str, LLMError] = field(default_factory=dict)
    never_end: bool = False
    lose_create_answer: int = 0
    batches: list[FakeBatch] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200_000_000
    created: anyio.Event = field(default_factory=anyio.Event)
    """Set once the first batch exists."""
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        FakeTransport.__init__(self, chat=self.answer)

    def batch_item_bytes(self, item: BatchItem) -> int:
        return 200 + sum(len(m.content) for m in item.request.messages)

    async def batch_create(self, items: Sequence[BatchItem], *, tag: str) -> BatchInfo:
        batch = FakeBatch(f"batch_{next(self._ids)}", tag, tuple(items), time.time())
        if self.fail_batches:
            self.fail_batches -= 1
            batch.failed = True
        self.batches.append(batch)
        self.created.set()
        if self.lose_create_answer:
            self.lose_create_answer -= 1
            raise ConnectionFailed("connection reset", endpoint="ep", maybe_billed=True)
        return self._info(batch)

    async def batch_get(self, batch_id: str) -> BatchInfo:
        batch = self._batch(batch_id)
        batch.polls += 1
        running = batch.status == "in_progress" and not self.never_end
        if running and batch.polls >= self.polls_to_end:
            batch.status = "failed" if batch.failed else "completed"
        return self._info(batch)

    async def batch_find(self, tag: str, *, since: float) -> BatchInfo | None:
        for batch in reversed(self.batches):
            if batch.created_at < since:
                return None
            if batch.tag == tag:
                return self._info(batch)
        return None

    async def batch_results(self, info: BatchInfo) -> list[BatchResult]:
        batch = self._batch(info.id)
        if batch.failed:
            return []
        if batch.status == "cancelled":
            return [BatchResult(custom_id=i.custom_id, error=_cancelled()) for i in batch.items]
        return [self._result(item) for item in batch.items]

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        batch = self._batch(batch_id)
        self.cancelled.append(batch_id)
        if batch.status == "in_progress":
            batch.status = "cancelled"
        return self._info(batch)

    def _result(self, item: BatchItem) -> BatchResult:
        error = self.error_ids.pop(item.custom_id, None)
        if error is not None:
            return BatchResult(custom_id=item.custom_id, error=error)
        return BatchResult(custom_id=item.custom_id, reply=self.answer(item.request))

    def _batch(self, batch_id: str) -> FakeBatch:
        return next(b for b in self.batches if b.id == batch_id)

    def _info(self, batch: FakeBatch) -> BatchInfo:
        ended = batch.status in ("completed", "failed", "cancelled")
        return BatchInfo(
            id=batch.id,
            status=batch.status,
            ended=ended,
            tag=batch.tag,
            total=len(batch.items),
            created_at=batch.created_at,
        )

    @property
    def requests_batched(self) -> list[str]:
        """The custom ids of every request of every batch, in order."""
        return [i.custom_id for b in self.batches for i in b.items]


def _cancelled() -> LLMError:
    return ServerError("batch_cancelled", endpoint="ep", maybe_billed=False)
