"""Anthropic's Message Batches on the simulator: ``/v1/messages/batches`` (create, retrieve,
list, cancel) and each batch's ``results_url``, over :class:`pipeline.sim.batches.BatchBook`.

A request's ``params`` (Messages API: ``model``, ``max_tokens``, ``system`` as a string or text
blocks, ``messages`` with string or text-block content, ``temperature``, ``stop_sequences``) are
read into the chat form the realtime route answers (``system`` becomes a leading system message),
so the text and token counts are the same as there; the answer comes back as an Anthropic
``message`` whose ``usage`` says ``service_tier: "batch"``. Params the chat route would refuse make
that request ``errored`` (``invalid_request_error``); a batch failed by ``batch_fail_rate`` ends
at once with every request ``errored`` (``api_error``). Message Batches carry no ``metadata``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.sim.answer import Answer
from pipeline.sim.batches import BatchBook, BatchRequest, NotFound, Outcome, Progress
from pipeline.sim.faults import InvalidRequest, int_field, model_field, number_field
from pipeline.sim.requests import ChatRequest
from pipeline.sim.wire import json_response, page_limit, read_json_object

BATCHES_PATH = "/v1/messages/batches"
MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_STOP_REASONS = {"length": "max_tokens"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


class AnthropicBatches:
    """The handlers of Anthropic's Message Batches routes."""

    def __init__(self, book: BatchBook) -> None:
        self._book = book

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BATCHES_PATH, self.create)
        app.router.add_get(BATCHES_PATH, self.listing)
        app.router.add_get(BATCHES_PATH + "/{batch_id}", self.retrieve)
        app.router.add_post(BATCHES_PATH + "/{batch_id}/cancel", self.cancel)
        app.router.add_get(BATCHES_PATH + "/{batch_id}/results", self.results)

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}``."""
        items = _requests_field(await read_json_object(request))
        requests = tuple(self._request(item) for item in items)
        progress = self._book.create("anthropic", "msgbatch_", requests)
        return json_response(self._batch_object(request, progress))

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches/{batch_id}``."""
        return json_response(self._batch_object(request, self._progress(request)))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST .../{batch_id}/cancel``: ``canceling`` (``ended`` when read next)."""
        status = None if self._progress(request).ended else "canceling"
        progress = self._book.cancel(request.match_info["batch_id"])
        return json_response(self._batch_object(request, progress, status=status))

    async def listing(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches?limit=&after_id=&before_id=``: newest first."""
        ids = self._book.newest_first("anthropic")
        limit = page_limit(request.query.get("limit"), hi=1000)
        start, stop = 0, len(ids)
        if (after := request.query.get("after_id")) is not None:
            start = _position(ids, after, "after_id") + 1
        elif (before := request.query.get("before_id")) is not None:
            stop = _position(ids, before, "before_id")
            start = max(0, stop - limit)
        stop = min(stop, start + limit)
        page = ids[start:stop]
        more = start > 0 if after is None and before is not None else stop < len(ids)
        data = [self._batch_object(request, self._book.progress(batch_id)) for batch_id in page]
        first, last = (page[0], page[-1]) if page else (None, None)
        return json_response({"data": data, "has_more": more, "first_id": first, "last_id": last})

    async def results(self, request: web.Request) -> web.Response:
        """``GET .../{batch_id}/results``: JSONL, one ``{"custom_id", "result"}`` a request."""
        progress = self._progress(request)
        if not progress.ended:
            raise InvalidRequest(f"Message Batch {progress.batch.id} has not ended yet.")
        pairs = _result_pairs(progress)
        rows = [
            {"custom_id": req.custom_id, "result": self._result(req, out)} for req, out in pairs
        ]
        body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        return web.Response(body=body, content_type="application/binary")

    def _request(self, item: dict[str, Any]) -> BatchRequest:
        params = item["params"]
        try:
            chat = params_to_chat(params)
        except InvalidRequest as exc:
            return self._book.request(item["custom_id"], params, None, invalid=str(exc))
        return self._book.request(item["custom_id"], params, chat)

    def _progress(self, request: web.Request) -> Progress:
        batch_id = request.match_info["batch_id"]
        progress = self._book.find(batch_id, "anthropic")
        if progress is None:
            raise NotFound(f"No Message Batch with id '{batch_id}'.")
        return progress

    def _batch_object(
        self, request: web.Request, progress: Progress, status: str | None = None
    ) -> dict[str, Any]:
        batch = progress.batch
        url = f"{request.url.origin()}{BATCHES_PATH}/{batch.id}/results"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status or ("ended" if progress.ended else "in_progress"),
            "request_counts": _counts(progress),
            "ended_at": self._time(progress.ended_at),
            "created_at": self._time(batch.created),
            "expires_at": self._time(batch.expires_at),
            "archived_at": None,
            "cancel_initiated_at": self._time(progress.cancel_at),
            "results_url": url if progress.ended else None,
        }

    def _time(self, at: float | None) -> str | None:
        if at is None:
            return None
        moment = datetime.fromtimestamp(self._book.wall(at), tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _result(self, request: BatchRequest, outcome: Outcome | None) -> dict[str, Any]:
        if outcome is None:
            return _errored(500, "The batch failed (simulated: batch_fail_rate).", None)
        if outcome.kind != "errored" and outcome.kind != "succeeded":
            return {"type": outcome.kind}
        if outcome.answer is None or request.chat is None:
            return _errored(outcome.status, outcome.message, outcome.request_id)
        suffix = outcome.request_id.removeprefix("req_")
        return {"type": "succeeded", "message": message(request.chat, outcome.answer, suffix)}


def params_to_chat(params: dict[str, Any]) -> ChatRequest:
    """Messages API ``params`` in the chat form; ``InvalidRequest`` names a field it refuses."""
    if params.get("stream"):
        raise InvalidRequest("stream is not supported in a Message Batch", "stream")
    max_tokens = int_field(params, "max_tokens", lo=1)
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required", "max_tokens")
    temperature = number_field(params, "temperature", lo=0.0, hi=1.0)
    system = _text(params.get("system"), "system")
    turns = tuple(_turn(item, index) for index, item in enumerate(_list(params, "messages")))
    stop = params.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("stop_sequences: expected a list of strings", "stop_sequences")
    return ChatRequest(
        model=model_field(params),
        messages=((("system", system),) if system else ()) + turns,
        temperature=1.0 if temperature is None else temperature,
        max_tokens=max_tokens,
        stop=tuple(stop),
    )


def message(chat: ChatRequest, answer: Answer, suffix: str) -> dict[str, Any]:
    """``answer`` as an Anthropic ``message`` object (with batch usage)."""
    choice = answer.choices[0]
    stop_reason = _STOP_REASONS.get(choice.finish_reason, "end_turn")
    if choice.stop_sequence is not None:
        stop_reason = "stop_sequence"
    return {
        "id": f"msg_{suffix}",
        "type": "message",
        "role": "assistant",
        "model": chat.model,
        "content": [{"type": "text", "text": choice.text}],
        "stop_reason": stop_reason,
        "stop_sequence": choice.stop_sequence,
        "usage": {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }


def anthropic_error(status: int, message: str) -> web.Response:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message"}}``."""
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    return json_response({"type": "error", "error": error}, status=status)


def _errored(status: int, message: str, request_id: str | None) -> dict[str, Any]:
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    response: dict[str, Any] = {"type": "error", "error": error}
    if request_id is not None:
        response["request_id"] = request_id
    return {"type": "errored", "error": response}


def _result_pairs(progress: Progress) -> list[tuple[BatchRequest, Outcome | None]]:
    if progress.batch.errors:
        return [(request, None) for request in progress.batch.requests]
    return list(zip(progress.batch.requests, progress.outcomes, strict=True))


def _counts(progress: Progress) -> dict[str, int]:
    total = len(progress.batch.requests)
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if not progress.ended:
        counts["processing"] = total
    elif progress.batch.errors:
        counts["errored"] = total
    else:
        for kind in ("succeeded", "errored", "canceled", "expired"):
            counts[kind] = progress.count(kind)
    return counts


def _requests_field(body: dict[str, Any]) -> list[dict[str, Any]]:
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise InvalidRequest(f"{extra[0]}: Extra inputs are not permitted", extra[0])
    items = _list(body, "requests")
    if len(items) > MAX_REQUESTS:
        raise InvalidRequest(f"requests: at most {MAX_REQUESTS} items", "requests")
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"requests.{index}"
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            raise InvalidRequest(f"{where}: expected {{custom_id, params}}", where)
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise InvalidRequest(f"{where}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$", where)
        if custom_id in seen:
            raise InvalidRequest(f"{where}.custom_id: {custom_id!r} is not unique", where)
        seen.add(custom_id)
    return items


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{name}: expected a non-empty list", name)
    return value


def _turn(item: object, index: int) -> tuple[str, str]:
    where = f"messages.{index}"
    if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
        raise InvalidRequest(f"{where}.role: expected 'user' or 'assistant'", where)
    return str(item["role"]), _text(item.get("content"), f"{where}.content")


def _text(value: object, where: str) -> str:
    """A string, or text blocks joined (as the chat route joins text parts)."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and all(map(_is_text_block, value)):
        return "".join(str(block["text"]) for block in value)
    raise InvalidRequest(f"{where}: the simulator reads strings and text blocks only", where)


def _is_text_block(block: object) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _position(ids: list[str], batch_id: str, param: str) -> int:
    if batch_id not in ids:
        raise InvalidRequest(f"{param}: no Message Batch with id '{batch_id}'", param)
    return ids.index(batch_id)
