"""OpenAI's Batch API on the simulator: ``/v1/files`` (upload, read, content) and
``/v1/batches`` (create, retrieve, list, cancel), over :class:`pipeline.sim.batches.BatchBook`.

An input file is JSONL, one ``{"custom_id", "method": "POST", "url", "body"}`` a line. A batch
whose file breaks a rule (a line that is not such an object, a repeated ``custom_id``, another
method, a ``url`` other than the batch's ``endpoint``) fails validation with ``errors``; a line
whose body the chat route would refuse errors alone, with a 400 in the error file. Results are two
JSONL files, written once the batch ended: ``output_file_id`` (requests that got a 200) and
``error_file_id`` (a non-2xx ``response``, or ``response: null`` and ``error.code``
``batch_expired`` / ``batch_cancelled``); each line is ``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from pipeline.sim.answer import chat_completion, derive
from pipeline.sim.batches import BatchBook, BatchError, BatchRequest, NotFound, Outcome, Progress
from pipeline.sim.faults import InvalidRequest, error_body
from pipeline.sim.requests import parse_chat
from pipeline.sim.wire import json_response as _json
from pipeline.sim.wire import page_limit, read_json_object

FILES_PATH = "/v1/files"
BATCHES_PATH = "/v1/batches"
CHAT_ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
_STATUS = {
    "failed": "failed",
    "running": "in_progress",
    "finalizing": "finalizing",
    "completed": "completed",
    "expired": "expired",
    "cancelled": "cancelled",
}
_UNRUN = {
    "expired": ("batch_expired", "This request could not be executed before the window ended."),
    "canceled": ("batch_cancelled", "This request was not executed: the batch was cancelled."),
}
_JSONL = "application/octet-stream"


@dataclass(frozen=True, kw_only=True)
class StoredFile:
    """An uploaded input file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """What a create call asked for, beyond the requests."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None


class OpenAIBatches:
    """The handlers of OpenAI's files and batches routes."""

    def __init__(self, book: BatchBook) -> None:
        self._book = book
        self._files: dict[str, StoredFile] = {}
        self._specs: dict[str, BatchSpec] = {}
        self._results: dict[str, tuple[str, str]] = {}
        """Result file id -> (batch id, ``"output"`` or ``"error"``)."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(FILES_PATH, self.upload)
        app.router.add_get(FILES_PATH + "/{file_id}", self.file_object)
        app.router.add_get(FILES_PATH + "/{file_id}/content", self.file_content)
        app.router.add_post(BATCHES_PATH, self.create)
        app.router.add_get(BATCHES_PATH, self.listing)
        app.router.add_get(BATCHES_PATH + "/{batch_id}", self.retrieve)
        app.router.add_post(BATCHES_PATH + "/{batch_id}/cancel", self.cancel)

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /v1/files`` (multipart: ``purpose=batch`` and ``file``)."""
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise InvalidRequest(
                "The simulator accepts files with purpose 'batch' only.", "purpose"
            )
        if not isinstance(upload, web.FileField):
            raise InvalidRequest("'file' must be an uploaded file", "file")
        stored = StoredFile(
            id=self._book.answerer.new_id("file-"),
            filename=upload.filename,
            purpose=purpose,
            content=upload.file.read(),
            created_at=int(self._book.wall(self._book.now())),
        )
        self._files[stored.id] = stored
        return _json(_file_object(stored.id, stored.filename, len(stored.content), stored))

    async def file_object(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{file_id}``."""
        file_id = request.match_info["file_id"]
        stored = self._files.get(file_id)
        if stored is not None:
            return _json(_file_object(file_id, stored.filename, len(stored.content), stored))
        content = self._result_content(file_id)
        return _json(_file_object(file_id, f"{file_id}.jsonl", len(content), None))

    async def file_content(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{file_id}/content``: the raw bytes."""
        file_id = request.match_info["file_id"]
        stored = self._files.get(file_id)
        content = stored.content if stored is not None else self._result_content(file_id)
        return web.Response(body=content, content_type=_JSONL)

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/batches``."""
        spec = self._spec(await read_json_object(request))
        requests, errors = self._read_input(self._files[spec.input_file_id].content, spec.endpoint)
        progress = self._book.create("openai", "batch_", requests, errors)
        self._specs[progress.batch.id] = spec
        return _json(self._batch_object(progress, status="validating"))

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/batches/{batch_id}``."""
        return _json(self._batch_object(self._progress(request.match_info["batch_id"])))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1/batches/{batch_id}/cancel``: ``cancelling`` (``cancelled`` when read next)."""
        batch_id = request.match_info["batch_id"]
        if self._progress(batch_id).ended:
            return _json(self._batch_object(self._book.cancel(batch_id)))
        return _json(self._batch_object(self._book.cancel(batch_id), status="cancelling"))

    async def listing(self, request: web.Request) -> web.Response:
        """``GET /v1/batches?limit=&after=``: newest first."""
        ids = self._book.newest_first("openai")
        limit = page_limit(request.query.get("limit"), hi=100)
        after = request.query.get("after")
        start = 0
        if after is not None:
            if after not in ids:
                raise InvalidRequest(f"No batch found with id '{after}' to list after.", "after")
            start = ids.index(after) + 1
        page = ids[start : start + limit]
        data = [self._batch_object(self._progress(batch_id)) for batch_id in page]
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": start + limit < len(ids),
            }
        )

    def _progress(self, batch_id: str) -> Progress:
        progress = self._book.find(batch_id, "openai")
        if progress is None:
            raise NotFound(f"No batch found with id '{batch_id}'.")
        return progress

    def _spec(self, body: dict[str, Any]) -> BatchSpec:
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or file_id not in self._files:
            raise InvalidRequest(f"No such File object: {file_id!r}", "input_file_id")
        if body.get("endpoint") != CHAT_ENDPOINT:
            raise InvalidRequest(f"The simulator batches only {CHAT_ENDPOINT}", "endpoint")
        if body.get("completion_window") != "24h":
            raise InvalidRequest("completion_window must be '24h'", "completion_window")
        return BatchSpec(
            input_file_id=file_id,
            endpoint=CHAT_ENDPOINT,
            completion_window="24h",
            metadata=_metadata(body.get("metadata")),
        )

    def _read_input(
        self, content: bytes, endpoint: str
    ) -> tuple[tuple[BatchRequest, ...], tuple[BatchError, ...]]:
        requests: list[BatchRequest] = []
        errors: list[BatchError] = []
        seen: set[str] = set()
        lines = [line for line in content.splitlines() if line.strip()]
        if not lines or len(lines) > MAX_REQUESTS:
            message = f"The input file must hold 1 to {MAX_REQUESTS} requests, not {len(lines)}."
            return (), (BatchError(code="invalid_request_count", message=message),)
        for number, line in enumerate(lines, start=1):
            item, error = _line(line, number, endpoint, seen)
            if error is not None:
                errors.append(error)
            elif item is not None:
                requests.append(self._request(item))
        return tuple(requests), tuple(errors)

    def _request(self, item: dict[str, Any]) -> BatchRequest:
        body = item["body"]
        try:
            chat = parse_chat(body)
        except InvalidRequest as exc:
            return self._book.request(item["custom_id"], body, None, invalid=str(exc))
        return self._book.request(item["custom_id"], body, chat)

    def _batch_object(self, progress: Progress, status: str | None = None) -> dict[str, Any]:
        """The batch object; ``status`` overrides the phase's (``validating``, ``cancelling``)."""
        batch = progress.batch
        spec = self._specs[batch.id]
        validating = status == "validating"
        errors = [_error_item(error) for error in batch.errors]
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": spec.endpoint,
            "errors": {"object": "list", "data": errors} if errors and not validating else None,
            "input_file_id": spec.input_file_id,
            "completion_window": spec.completion_window,
            "status": status or _STATUS[progress.phase],
            "output_file_id": self._result_file(progress, "output"),
            "error_file_id": self._result_file(progress, "error"),
            **self._timestamps(progress, validating=validating),
            "request_counts": {
                "total": 0 if batch.errors else len(batch.requests),
                "completed": progress.count("succeeded"),
                "failed": len(progress.outcomes) - progress.count("succeeded"),
            },
            "metadata": spec.metadata,
        }

    def _timestamps(self, progress: Progress, *, validating: bool) -> dict[str, int | None]:
        batch, phase = progress.batch, progress.phase

        def unix(at: float | None) -> int | None:
            return None if at is None else int(self._book.wall(at))

        started = not (batch.errors or validating)
        ran_all = phase in ("finalizing", "completed")
        stamps = {
            "created_at": unix(batch.created),
            "in_progress_at": unix(batch.created) if started else None,
            "expires_at": unix(batch.expires_at),
            "finalizing_at": unix(batch.due(len(batch.requests) - 1)) if ran_all else None,
            "cancelling_at": unix(progress.cancel_at),
        }
        for ending in ("completed", "failed", "expired", "cancelled"):
            stamps[f"{ending}_at"] = unix(progress.ended_at) if phase == ending else None
        return stamps

    def _result_file(self, progress: Progress, kind: str) -> str | None:
        """The id of the batch's ``output`` or ``error`` file; None before it ended or if empty."""
        if not progress.ended or not any(_belongs(o, kind) for o in progress.outcomes):
            return None
        file_id = _result_id(progress.batch.id, kind)
        self._results[file_id] = (progress.batch.id, kind)
        return file_id

    def _result_content(self, file_id: str) -> bytes:
        if file_id not in self._results:
            raise NotFound(f"No such File object: {file_id}")
        batch_id, kind = self._results[file_id]
        progress = self._progress(batch_id)
        pairs = zip(progress.batch.requests, progress.outcomes, strict=True)
        rows = [self._result_line(*pair) for pair in pairs if _belongs(pair[1], kind)]
        return b"".join(orjson.dumps(row) + b"\n" for row in rows)

    def _result_line(self, request: BatchRequest, outcome: Outcome) -> dict[str, Any]:
        suffix = outcome.request_id.removeprefix("req_")
        line: dict[str, Any] = {"id": f"batch_req_{suffix}", "custom_id": request.custom_id}
        if outcome.kind in _UNRUN:
            code, message = _UNRUN[outcome.kind]
            return {**line, "response": None, "error": {"code": code, "message": message}}
        if outcome.answer is not None and request.chat is not None:
            body = chat_completion(
                request.chat,
                outcome.answer,
                completion_id=f"chatcmpl-{suffix}",
                created=int(self._book.wall(outcome.at)),
                fingerprint=self._book.answerer.fingerprint,
            )
        else:
            kind = "invalid_request_error" if outcome.status == 400 else "server_error"
            body = orjson.loads(error_body(outcome.message, kind=kind))
        response = {"status_code": outcome.status, "request_id": outcome.request_id, "body": body}
        return {**line, "response": response, "error": None}


def _belongs(outcome: Outcome, kind: str) -> bool:
    return (outcome.kind == "succeeded") == (kind == "output")


def _result_id(batch_id: str, kind: str) -> str:
    return f"file-{derive(batch_id, kind) % 16**24:024x}"


def _file_object(
    file_id: str, filename: str, size: int, stored: StoredFile | None
) -> dict[str, Any]:
    purpose = stored.purpose if stored is not None else "batch_output"
    created = stored.created_at if stored is not None else None
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, dict) and len(value) <= 16:
        pairs = {k: v for k, v in value.items() if _short(k, 64) and _short(v, 512)}
        if len(pairs) == len(value):
            return pairs
    message = "metadata: up to 16 string pairs, keys up to 64 and values up to 512 characters"
    raise InvalidRequest(message, "metadata")


def _short(text: object, limit: int) -> bool:
    return isinstance(text, str) and len(text) <= limit


def _line(
    raw: bytes, number: int, endpoint: str, seen: set[str]
) -> tuple[dict[str, Any] | None, BatchError | None]:
    """A line of an input file, or why the file is invalid there."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, _bad(number, "invalid_json_line", "This line is not valid JSON.")
    if not isinstance(item, dict):
        return None, _bad(number, "invalid_json_line", "This line is not a JSON object.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, _bad(number, "missing_required_parameter", "custom_id is required.")
    if custom_id in seen:
        return None, _bad(number, "duplicate_custom_id", f"custom_id {custom_id!r} is repeated.")
    seen.add(custom_id)
    if item.get("method") != "POST":
        return None, _bad(number, "invalid_method", "method must be 'POST'.", "method")
    if item.get("url") != endpoint:
        message = f"url must be the batch's endpoint {endpoint!r}."
        return None, _bad(number, "mismatched_endpoint", message, "url")
    if not isinstance(item.get("body"), dict):
        return None, _bad(number, "invalid_body", "body must be a JSON object.", "body")
    return item, None


def _bad(line: int, code: str, message: str, param: str | None = None) -> BatchError:
    return BatchError(code=code, message=message, line=line, param=param)


def _error_item(error: BatchError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "param": error.param, "line": error.line}
