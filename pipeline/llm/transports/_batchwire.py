"""What the two batch wires share: JSONL reading, checks on a batch's items, result values.

Pure, no I/O. The provider modules (``_batchwire_openai``, ``_batchwire_anthropic``) build the
bodies and parse the answers; ``_batchflow`` runs the exchanges.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.errors import LLMError, MalformedResponse, RetryableError
from pipeline.llm._values import TransportReply
from pipeline.llm.transports._batch import BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._classify import error_for

CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FRACTION = re.compile(r"(\.\d{6})\d+")

ParseChat = Callable[[bytes], TransportReply]
"""A wire's ``parse_chat`` bound to the endpoint: a succeeded result's body -> reply."""


@dataclass(frozen=True, slots=True)
class BatchPage:
    """One page of a provider's batch list, newest first; ``cursor`` fetches the next one."""

    batches: tuple[BatchInfo, ...]
    cursor: str | None


def check_items(items: Sequence[BatchItem], *, max_requests: int, prefix: str | None) -> None:
    """``ValueError`` for what no provider accepts: no items, too many, a custom_id outside
    ``^[A-Za-z0-9_-]{1,64}$``, twice, or (with ``prefix``) not starting with it."""
    if not 0 < len(items) <= max_requests:
        raise ValueError(f"a batch takes 1 to {max_requests} requests; got {len(items)}")
    ids = [item.custom_id for item in items]
    bad = [i for i in ids if not CUSTOM_ID.fullmatch(i) or not i.startswith(prefix or "")]
    if bad:
        raise ValueError(f"custom_id {bad[0]!r} breaks the rule (prefix {prefix!r})")
    if len(set(ids)) != len(ids):
        raise ValueError("custom_ids repeat within the batch")


def check_size(size: int, *, max_bytes: int) -> None:
    if size > max_bytes:
        raise ValueError(f"the batch takes {size} bytes; the provider accepts {max_bytes}")


def jsonl_objects(body: bytes, endpoint: str) -> list[dict[str, Any]]:
    """Each non-blank line of a JSONL body as an object with a string ``custom_id``; any other
    line makes the whole body a ``MalformedResponse`` (retryable: read it again later)."""
    return [_line_object(line, endpoint) for line in body.splitlines() if line.strip()]


def _line_object(line: bytes, endpoint: str) -> dict[str, Any]:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"unparseable result line: {exc}", endpoint=endpoint) from None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        raise MalformedResponse("a result line has no custom_id", endpoint=endpoint)
    return data


def reply_result(custom_id: str, body: object, parse: ParseChat) -> BatchResult:
    """A succeeded request: its body parsed exactly as a realtime answer (a body the realtime
    parser refuses is that request's ``MalformedResponse``)."""
    try:
        return BatchResult(custom_id=custom_id, reply=parse(orjson.dumps(body)))
    except LLMError as exc:
        return BatchResult(custom_id=custom_id, error=exc)


def status_result(
    custom_id: str, status: int, body: object, *, endpoint: str, now: float
) -> BatchResult:
    """A request the provider answered with an error status: classified as in realtime."""
    raw = orjson.dumps(body)
    return BatchResult(
        custom_id=custom_id, error=error_for(status, raw, {}, endpoint=endpoint, now=now)
    )


def not_run(custom_id: str, why: str, *, endpoint: str) -> BatchResult:
    """A request that never ran (the batch expired or was cancelled first): retryable, and
    nothing was billed for it."""
    error = RetryableError(
        f"batch request not run: {why}", endpoint=endpoint, code=why, maybe_billed=False
    )
    return BatchResult(custom_id=custom_id, error=error)


def malformed(custom_id: str, what: str, *, endpoint: str) -> BatchResult:
    error = MalformedResponse(f"result line {what}", endpoint=endpoint, maybe_billed=True)
    return BatchResult(custom_id=custom_id, error=error)


def unix_seconds(raw: object) -> float | None:
    """Unix seconds from a number or an RFC 3339 string (nanoseconds cut to micro); None else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", raw.strip()))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def object_of(raw: object) -> dict[str, Any]:
    """``raw`` when it is a JSON object, else an empty one (tolerant field access)."""
    return raw if isinstance(raw, dict) else {}
