"""Anthropic's Message Batches on the wire: the create body, batch and result parsing.

Pure; ``_batchflow`` runs the exchanges. What was read (Anthropic's batch-processing guide and
API reference, and the types of anthropic-sdk-python generated from its OpenAPI spec):

* ``POST /messages/batches`` takes only ``{requests: [{custom_id, params}]}``, with ``params``
  a Messages API body: no batch ``metadata`` exists. custom_id matches
  ``^[a-zA-Z0-9_-]{1,64}$``; at most 100,000 requests and 256 MB.
* A batch's ``processing_status``: ``in_progress``, ``canceling``, ``ended``;
  ``request_counts {processing, succeeded, errored, canceled, expired}`` (all but
  ``processing`` stay 0 until the batch ended); ``created_at`` and ``ended_at`` in RFC 3339;
  ``results_url`` once ended.
* ``GET /messages/batches?limit=&after_id=`` pages ``{data, has_more, first_id, last_id}``,
  most recently created first.
* ``GET /messages/batches/{id}/results``: lines ``{custom_id, result: {type: succeeded,
  message} | {type: errored, error: {type: error, error: {type, message}}} | {type: canceled}
  | {type: expired}}``.

A batch carries gpo's tag only in its custom_ids (``tag-key``): see :mod:`._batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from pipeline.errors import MalformedResponse
from pipeline.llm.transports import _batchwire as w
from pipeline.llm.transports._anthropic import chat_body
from pipeline.llm.transports._batch import TAG_SEPARATOR, BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._common import load_object, to_int

MAX_REQUESTS = 100_000
MAX_BYTES = 256_000_000
BATCHES_PATH = "/messages/batches"
PAGE_SIZE = 100
ENDED = "ended"
NOT_RUN = frozenset({"canceled", "expired"})
_FAILED = ("errored", "canceled", "expired")
_COUNTS = ("processing", "succeeded", *_FAILED)
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_ENVELOPE = b'{"requests":['


def request_entry(item: BatchItem) -> bytes:
    """The item's entry in ``requests``; its ``params`` is the realtime Messages body."""
    return (
        b'{"custom_id":'
        + orjson.dumps(item.custom_id)
        + b',"params":'
        + chat_body(item.request)
        + b"}"
    )


def item_bytes(item: BatchItem) -> int:
    """Its entry and the comma that separates it from the next one."""
    return len(request_entry(item)) + 1


def prefix(tag: str) -> str:
    return f"{tag}{TAG_SEPARATOR}"


def create_body(items: Sequence[BatchItem], *, tag: str) -> bytes:
    """The create body; ``ValueError`` unless every custom_id starts with ``tag-``."""
    w.check_items(items, max_requests=MAX_REQUESTS, prefix=prefix(tag))
    body = _ENVELOPE + b",".join(request_entry(item) for item in items) + b"]}"
    w.check_size(len(body), max_bytes=MAX_BYTES)
    return body


def batches_path(batch_id: str, action: str = "") -> str:
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}{action}"


def list_path(cursor: str | None) -> str:
    after = f"&after_id={quote(cursor, safe='')}" if cursor else ""
    return f"{BATCHES_PATH}?limit={PAGE_SIZE}{after}"


def results_path(batch_id: str) -> str:
    return batches_path(batch_id, "/results")


def parse_batch(body: bytes, endpoint: str) -> BatchInfo:
    return batch_info(load_object(body, endpoint), endpoint)


def parse_page(body: bytes, endpoint: str) -> w.BatchPage:
    data = load_object(body, endpoint)
    raw = data.get("data")
    if not isinstance(raw, list):
        raise MalformedResponse("a batch list without data", endpoint=endpoint)
    batches = tuple(batch_info(w.object_of(b), endpoint) for b in raw)
    last = data.get("last_id") or (batches[-1].id if batches else None)
    return w.BatchPage(batches, str(last) if data.get("has_more") and last else None)


def batch_info(data: dict[str, Any], endpoint: str) -> BatchInfo:
    batch_id, status = data.get("id"), data.get("processing_status")
    if not isinstance(batch_id, str) or not isinstance(status, str):
        raise MalformedResponse("a batch without id or processing_status", endpoint=endpoint)
    counts = w.object_of(data.get("request_counts"))
    count = {key: to_int(counts.get(key)) or 0 for key in _COUNTS}
    url = data.get("results_url")
    return BatchInfo(
        id=batch_id,
        status=status,
        ended=status == ENDED,
        total=sum(count.values()),
        succeeded=count["succeeded"],
        failed=sum(count[key] for key in _FAILED),
        created_at=w.unix_seconds(data.get("created_at")),
        results_ref=url if isinstance(url, str) and url else None,
    )


def custom_ids(body: bytes, endpoint: str) -> list[str]:
    """The custom_ids of a results body, without parsing the answers."""
    return [line["custom_id"] for line in w.jsonl_objects(body, endpoint)]


def carries(body: bytes, tag: str, endpoint: str) -> bool:
    """Whether a results body is of the batch tagged ``tag`` (its custom_ids say so)."""
    ids = custom_ids(body, endpoint)
    return bool(ids) and all(i.startswith(prefix(tag)) for i in ids)


def parse_results(
    body: bytes, *, endpoint: str, now: float, parse: w.ParseChat
) -> list[BatchResult]:
    return [_result(line, endpoint, now, parse) for line in w.jsonl_objects(body, endpoint)]


def _result(line: dict[str, Any], endpoint: str, now: float, parse: w.ParseChat) -> BatchResult:
    cid: str = line["custom_id"]
    result = w.object_of(line.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        return w.reply_result(cid, result.get("message"), parse)
    if kind == "errored":
        return _errored(cid, w.object_of(result.get("error")), endpoint, now)
    if kind in NOT_RUN:
        return w.not_run(cid, str(kind), endpoint=endpoint)
    return w.malformed(cid, f"has result type {kind!r}", endpoint=endpoint)


def _errored(cid: str, response: dict[str, Any], endpoint: str, now: float) -> BatchResult:
    """Classified as the realtime answer with the status its error type stands for."""
    inner = w.object_of(response.get("error")).get("type")
    status = _STATUS_OF_TYPE.get(inner if isinstance(inner, str) else "", 500)
    return w.status_result(cid, status, response, endpoint=endpoint, now=now)
