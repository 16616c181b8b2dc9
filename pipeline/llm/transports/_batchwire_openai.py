"""OpenAI's Batch API on the wire: the JSONL upload, the create body, batch and result parsing.

Pure; ``_batchflow`` runs the exchanges. What was read (OpenAI's API reference for batches and
files, its Batch FAQ, and the types of openai-python generated from OpenAI's OpenAPI spec):

* ``POST /files`` (multipart: ``purpose=batch``, ``file``) uploads the requests, one JSONL line
  each: ``{custom_id, method: "POST", url: "/v1/chat/completions", body}``; at most 50,000
  requests and 200 MB.
* ``POST /batches`` ``{input_file_id, endpoint, completion_window: "24h", metadata}``; metadata
  holds up to 16 string pairs, keys up to 64 and values up to 512 characters.
* A batch's ``status``: ``validating``, ``in_progress``, ``finalizing``, ``cancelling`` (running)
  and ``completed``, ``failed``, ``expired``, ``cancelled`` (ended); ``request_counts {total,
  completed, failed}``; ``output_file_id``, ``error_file_id``; ``created_at`` in unix seconds.
* ``GET /batches?limit=&after=`` pages ``{data, has_more, first_id, last_id}``, newest first.
* ``GET /files/{id}/content``: result lines ``{id, custom_id, response: {status_code,
  request_id, body} | null, error: {code, message} | null}``; ``batch_expired`` and
  ``batch_cancelled`` mark requests that never ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from pipeline.errors import MalformedResponse, RequestTimeout, ServerError
from pipeline.llm.transports import _batchwire as w
from pipeline.llm.transports._batch import TAG_KEY, BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._common import load_object, to_int
from pipeline.llm.transports._openai import chat_body

MAX_REQUESTS = 50_000
MAX_BYTES = 200_000_000
MAX_TAG_CHARS = 512
ENDPOINT = "/v1/chat/completions"
FILES_PATH = "/files"
BATCHES_PATH = "/batches"
PAGE_SIZE = 100
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
_LINE_HEAD = b'{"custom_id":'
_LINE_MIDDLE = b',"method":"POST","url":' + orjson.dumps(ENDPOINT) + b',"body":'


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart/form-data body: plain ``fields`` and one in-memory file."""

    fields: tuple[tuple[str, str], ...]
    file_field: str
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


def request_line(item: BatchItem) -> bytes:
    """The item's JSONL line, newline included; its body is the realtime chat body."""
    cid = orjson.dumps(item.custom_id)
    return _LINE_HEAD + cid + _LINE_MIDDLE + chat_body(item.request) + b"}\n"


def item_bytes(item: BatchItem) -> int:
    return len(request_line(item))


def upload(items: Sequence[BatchItem], *, tag: str) -> Upload:
    """The upload of ``items``, checked with ``tag`` (``ValueError``) and built in memory."""
    check_tag(tag)
    w.check_items(items, max_requests=MAX_REQUESTS, prefix=None)
    content = b"".join(request_line(item) for item in items)
    w.check_size(len(content), max_bytes=MAX_BYTES)
    return Upload(
        fields=(("purpose", "batch"),),
        file_field="file",
        filename=f"gpo-{tag}.jsonl",
        content=content,
    )


def check_tag(tag: str) -> None:
    """A metadata value holds 1 to 512 characters."""
    if not 0 < len(tag) <= MAX_TAG_CHARS:
        raise ValueError(f"a batch tag takes 1 to {MAX_TAG_CHARS} characters; got {len(tag)}")


def create_body(file_id: str, *, tag: str) -> bytes:
    check_tag(tag)
    return orjson.dumps(
        {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": {TAG_KEY: tag},
        }
    )


def file_id(body: bytes, endpoint: str) -> str:
    """The ``id`` of an uploaded file object."""
    raw = load_object(body, endpoint).get("id")
    if not isinstance(raw, str) or not raw:
        raise MalformedResponse("the uploaded file has no id", endpoint=endpoint)
    return raw


def batches_path(batch_id: str, action: str = "") -> str:
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}{action}"


def list_path(cursor: str | None) -> str:
    after = f"&after={quote(cursor, safe='')}" if cursor else ""
    return f"{BATCHES_PATH}?limit={PAGE_SIZE}{after}"


def content_path(file_ref: str) -> str:
    return f"{FILES_PATH}/{quote(file_ref, safe='')}/content"


def parse_batch(body: bytes, endpoint: str) -> BatchInfo:
    return batch_info(load_object(body, endpoint), endpoint)


def parse_page(body: bytes, endpoint: str) -> w.BatchPage:
    """A list page; the next cursor is ``last_id`` (else the last batch's id) while
    ``has_more``."""
    data = load_object(body, endpoint)
    raw = data.get("data")
    if not isinstance(raw, list):
        raise MalformedResponse("a batch list without data", endpoint=endpoint)
    batches = tuple(batch_info(w.object_of(b), endpoint) for b in raw)
    last = data.get("last_id") or (batches[-1].id if batches else None)
    return w.BatchPage(batches, str(last) if data.get("has_more") and last else None)


def batch_info(data: dict[str, Any], endpoint: str) -> BatchInfo:
    batch_id, status = data.get("id"), data.get("status")
    if not isinstance(batch_id, str) or not isinstance(status, str):
        raise MalformedResponse("a batch without id or status", endpoint=endpoint)
    counts = w.object_of(data.get("request_counts"))
    tag = w.object_of(data.get("metadata")).get(TAG_KEY)
    return BatchInfo(
        id=batch_id,
        status=status,
        ended=status in ENDED,
        tag=tag if isinstance(tag, str) else None,
        total=to_int(counts.get("total")) or 0,
        succeeded=to_int(counts.get("completed")) or 0,
        failed=to_int(counts.get("failed")) or 0,
        created_at=w.unix_seconds(data.get("created_at")),
        results_ref=_text(data.get("output_file_id")),
        errors_ref=_text(data.get("error_file_id")),
        failure=_failure(data.get("errors")),
    )


def _text(raw: object) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def _failure(raw: object) -> str | None:
    """The batch-level errors' messages joined (``code: message`` each), or None."""
    entries = w.object_of(raw).get("data")
    if not isinstance(entries, list):
        return None
    parts = [_error_text(w.object_of(e)) for e in entries]
    return "; ".join(p for p in parts if p) or None


def _error_text(err: dict[str, Any]) -> str:
    code, message = err.get("code"), err.get("message")
    return ": ".join(str(x) for x in (code, message) if x)


def parse_results(
    body: bytes, *, endpoint: str, now: float, parse: w.ParseChat
) -> list[BatchResult]:
    """Every line of an output or error file as a result."""
    return [_result(line, endpoint, now, parse) for line in w.jsonl_objects(body, endpoint)]


def _result(line: dict[str, Any], endpoint: str, now: float, parse: w.ParseChat) -> BatchResult:
    cid: str = line["custom_id"]
    response = line.get("response")
    if isinstance(response, dict):
        return _answered(cid, response, endpoint, now, parse)
    error = line.get("error")
    if isinstance(error, dict):
        return _failed(cid, error, endpoint)
    return w.malformed(cid, "has neither response nor error", endpoint=endpoint)


def _answered(
    cid: str, response: dict[str, Any], endpoint: str, now: float, parse: w.ParseChat
) -> BatchResult:
    status = to_int(response.get("status_code"))
    body = response.get("body")
    if status is None:
        return w.malformed(cid, "has a response without status_code", endpoint=endpoint)
    if 200 <= status < 300:
        return w.reply_result(cid, body, parse)
    return w.status_result(cid, status, body, endpoint=endpoint, now=now)


def _failed(cid: str, error: dict[str, Any], endpoint: str) -> BatchResult:
    """A request that got no HTTP answer: never run (expired, cancelled), else a failure that
    may have reached the model (``request_timeout`` and unknown codes)."""
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if code in NOT_RUN:
        return w.not_run(cid, str(code), endpoint=endpoint)
    kind = RequestTimeout if code == "request_timeout" else ServerError
    message = str(error.get("message") or code or "batch request failed")
    return BatchResult(
        custom_id=cid, error=kind(message, endpoint=endpoint, code=code, maybe_billed=True)
    )
