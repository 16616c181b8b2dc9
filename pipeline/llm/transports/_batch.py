"""Provider batch APIs: the values and the protocol a transport offers for them.

A batch is a set of chat requests submitted at once, answered within a window (24 h) at a lower
price (OpenAI's Batch API, Anthropic's Message Batches). The gateway's batcher decides what goes
into a batch and when; a transport only speaks the wire: create (OpenAI: upload a JSONL file,
then create the batch), read the status, find a batch by the run-unique tag gpo gave it, read
the per-request results, cancel.

How a tag marks a batch differs (the provider modules ``_batchwire_openai`` and
``_batchwire_anthropic`` name the documentation read):

* OpenAI: ``metadata[TAG_KEY] = tag`` on the batch; ``batch_find`` sees it at once.
* Anthropic's Message Batches take no batch ``metadata`` at all. gpo marks every ``custom_id``
  with the tag instead (:func:`tagged_custom_id`), and the provider shows custom_ids only in the
  results, which exist once the batch ended. So ``batch_find`` confirms an Anthropic batch only
  after it ended; before that it can only name a candidate (``tag`` None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.errors import LLMError
from pipeline.llm._values import ChatRequest, TransportReply

TAG_KEY = "gpo_tag"
"""The ``metadata`` key under which gpo writes a batch's run-unique tag (OpenAI)."""
TAG_SEPARATOR = "-"
"""Between the tag and the caller's key in a custom_id (Anthropic finds batches by it)."""


def tagged_custom_id(tag: str, key: str) -> str:
    """``tag-key``: the custom_id of a request of the batch tagged ``tag``. Choose tags so that
    no tag followed by ``-`` starts another tag (e.g. fixed-length ones), and keep the whole
    within ``^[A-Za-z0-9_-]{1,64}$``."""
    return f"{tag}{TAG_SEPARATOR}{key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem:
    """One request of a batch. ``custom_id`` matches ``^[A-Za-z0-9_-]{1,64}$`` (Anthropic's
    rule, which OpenAI accepts too) and is unique within the batch; on Anthropic it must start
    with the batch's tag and ``-`` (:func:`tagged_custom_id`; ``ValueError`` otherwise), which
    is harmless elsewhere. ``request`` has its ``model`` and ``max_tokens`` set."""

    custom_id: str
    request: ChatRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchInfo:
    """A batch as the provider describes it."""

    id: str
    status: str
    """The provider's own word: OpenAI's ``validating`` ... ``cancelled``, Anthropic's
    ``processing_status`` (``in_progress``, ``canceling``, ``ended``)."""
    ended: bool
    """Nothing more will change: its results (if any) can be read."""
    tag: str | None = None
    """OpenAI: the value of ``metadata[TAG_KEY]`` (None when absent). Anthropic: None, except
    for a batch ``batch_find`` confirmed by its results' custom_ids."""
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    """From the provider's ``request_counts`` (Anthropic: errored + canceled + expired)."""
    created_at: float | None = None
    """Unix seconds."""
    results_ref: str | None = None
    """Where the results are: OpenAI's ``output_file_id``, Anthropic's ``results_url``."""
    errors_ref: str | None = None
    """OpenAI's ``error_file_id`` (None elsewhere)."""
    failure: str | None = None
    """Why the batch failed as a whole (OpenAI's ``errors.data`` messages, e.g. a refused input
    file, status ``failed``); None elsewhere."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """One request's outcome in an ended batch: a reply, or the error it got. Requests of the
    batch that have no result line at all are not listed (the caller treats them as not run)."""

    custom_id: str
    reply: TransportReply | None = None
    error: LLMError | None = None
    """Classified as for a realtime call: ``retryable`` for server errors, expiry and
    cancellation (with ``maybe_billed`` False: not run, not billed), fatal for a bad request."""


@runtime_checkable
class BatchTransport(Protocol):
    """The batch half of a transport (HTTP transports for OpenAI and Anthropic, the fakes)."""

    batch_max_requests: int
    """The provider's limit on requests per batch (OpenAI 50,000; Anthropic 100,000)."""
    batch_max_bytes: int
    """The provider's limit on a batch's size in bytes (OpenAI 200 MB file; Anthropic 256 MB)."""

    def batch_item_bytes(self, item: BatchItem) -> int:
        """The bytes ``item`` takes in a batch (its JSONL line, or its entry in the body)."""
        ...

    async def batch_create(self, items: Sequence[BatchItem], *, tag: str) -> BatchInfo:
        """Create one batch of ``items`` tagged ``tag`` (OpenAI: ``metadata[TAG_KEY]``;
        Anthropic: the custom_ids' prefix). ``ValueError`` for items no provider would take
        (none, too many, too large, a bad or repeated custom_id); else raise an ``LLMError``;
        after a failure the batch may exist anyway (find it by its tag)."""
        ...

    async def batch_get(self, batch_id: str) -> BatchInfo: ...

    async def batch_find(self, tag: str, *, since: float) -> BatchInfo | None:
        """The batch tagged ``tag``, listing newest first and stopping at batches created
        before ``since`` (unix seconds); None when there is none. On Anthropic an ended batch
        is confirmed by its results (returned with ``tag`` set); when none is, the oldest
        unfinished batch of the window is returned as a candidate with ``tag`` None (it may be
        someone else's: ask again once it ended). None there means no batch can be ours."""
        ...

    async def batch_results(self, info: BatchInfo) -> list[BatchResult]:
        """Every result line of an ended batch (output and error files on OpenAI), in the
        provider's order (not the request order)."""
        ...

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        """Ask the provider to cancel; the batch ends later (``cancelling`` first)."""
        ...
