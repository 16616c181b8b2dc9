"""The batch exchanges of each provider, over a ``send`` the HTTP transport gives.

:class:`OpenAIBatches` and :class:`AnthropicBatches` implement
:class:`~pipeline.llm.transports._batch.BatchTransport`; they import no HTTP client: ``send``
(the transport's request, with its timeout and error translation) does the I/O, the
``_batchwire_*`` modules build and parse.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from pipeline.llm.transports import _batchwire_anthropic as anthropic
from pipeline.llm.transports import _batchwire_openai as openai
from pipeline.llm.transports._batch import BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._batchwire import BatchPage, ParseChat


class Send(Protocol):
    """One request: ``payload`` is a JSON body, an upload, or nothing; the answer's body."""

    async def __call__(
        self, method: str, path: str, payload: bytes | openai.Upload | None = None
    ) -> bytes: ...


async def newest_since(
    page: Callable[[str | None], Awaitable[BatchPage]], since: float
) -> AsyncIterator[BatchInfo]:
    """The listed batches, newest first, until one created before ``since`` (a batch without
    ``created_at`` counts as recent)."""
    cursor: str | None = None
    while True:
        current = await page(cursor)
        for info in current.batches:
            if info.created_at is not None and info.created_at < since:
                return
            yield info
        if current.cursor is None:
            return
        cursor = current.cursor


class _Batches:
    """What both providers' flows hold: ``send``, the wire's ``parse_chat``, the endpoint."""

    def __init__(
        self,
        send: Send,
        parse: ParseChat,
        *,
        endpoint: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._parse = parse
        self._endpoint = endpoint
        self._wall_clock = wall_clock


class OpenAIBatches(_Batches):
    """OpenAI's Batch API: upload a JSONL file, create the batch tagged in its metadata."""

    batch_max_requests = openai.MAX_REQUESTS
    batch_max_bytes = openai.MAX_BYTES

    def batch_item_bytes(self, item: BatchItem) -> int:
        return openai.item_bytes(item)

    async def batch_create(self, items: Sequence[BatchItem], *, tag: str) -> BatchInfo:
        form = openai.upload(items, tag=tag)  # checks items and tag before anything is sent
        file_id = openai.file_id(await self._send("POST", openai.FILES_PATH, form), self._endpoint)
        body = openai.create_body(file_id, tag=tag)
        return self._batch(await self._send("POST", openai.BATCHES_PATH, body))

    async def batch_get(self, batch_id: str) -> BatchInfo:
        return self._batch(await self._send("GET", openai.batches_path(batch_id)))

    async def batch_find(self, tag: str, *, since: float) -> BatchInfo | None:
        async for info in newest_since(self._page, since):
            if info.tag == tag:
                return info
        return None

    async def batch_results(self, info: BatchInfo) -> list[BatchResult]:
        results: list[BatchResult] = []
        for ref in (info.results_ref, info.errors_ref):
            if ref:
                body = await self._send("GET", openai.content_path(ref))
                results += openai.parse_results(
                    body, endpoint=self._endpoint, now=self._wall_clock(), parse=self._parse
                )
        return results

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        return self._batch(await self._send("POST", openai.batches_path(batch_id, "/cancel")))

    def _batch(self, body: bytes) -> BatchInfo:
        return openai.parse_batch(body, self._endpoint)

    async def _page(self, cursor: str | None) -> BatchPage:
        return openai.parse_page(await self._send("GET", openai.list_path(cursor)), self._endpoint)


class AnthropicBatches(_Batches):
    """Anthropic's Message Batches: one POST with every request, tagged in the custom_ids."""

    batch_max_requests = anthropic.MAX_REQUESTS
    batch_max_bytes = anthropic.MAX_BYTES

    def batch_item_bytes(self, item: BatchItem) -> int:
        return anthropic.item_bytes(item)

    async def batch_create(self, items: Sequence[BatchItem], *, tag: str) -> BatchInfo:
        body = anthropic.create_body(items, tag=tag)
        return self._batch(await self._send("POST", anthropic.BATCHES_PATH, body))

    async def batch_get(self, batch_id: str) -> BatchInfo:
        return self._batch(await self._send("GET", anthropic.batches_path(batch_id)))

    async def batch_find(self, tag: str, *, since: float) -> BatchInfo | None:
        """The ended batch whose results carry ``tag``; else the oldest unfinished batch of the
        window as an unconfirmed candidate (``tag`` None); else None."""
        candidate: BatchInfo | None = None
        async for info in newest_since(self._page, since):
            if not info.ended:
                candidate = info
            elif await self._carries(info, tag):
                return replace(info, tag=tag)
        return candidate

    async def batch_results(self, info: BatchInfo) -> list[BatchResult]:
        body = await self._send("GET", anthropic.results_path(info.id))
        now = self._wall_clock()
        return anthropic.parse_results(body, endpoint=self._endpoint, now=now, parse=self._parse)

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        return self._batch(await self._send("POST", anthropic.batches_path(batch_id, "/cancel")))

    async def _carries(self, info: BatchInfo, tag: str) -> bool:
        if info.results_ref is None:  # ended without results (archived): not ours to take
            return False
        body = await self._send("GET", anthropic.results_path(info.id))
        return anthropic.carries(body, tag, self._endpoint)

    def _batch(self, body: bytes) -> BatchInfo:
        return anthropic.parse_batch(body, self._endpoint)

    async def _page(self, cursor: str | None) -> BatchPage:
        body = await self._send("GET", anthropic.list_path(cursor))
        return anthropic.parse_page(body, self._endpoint)
