"""The HTTP transport's batch methods against a small server that records what it received."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.errors import NotFound, RequestTimeout, ServerError
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._secret import Secret
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports import _batchwire_openai as oai
from pipeline.llm.transports._batch import TAG_KEY, BatchInfo, BatchItem, BatchTransport
from pipeline.llm.transports._http import HttpTransport, open_http_transport

KEY = "sk-test-0123456789"
PAGE = 2


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Provider:
    """What the fake provider holds: batches newest first, files and results by id."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    fail_upload: bool = False

    def record(self, request: web.Request, body: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(request.method, request.path_qs, headers, body))

    def batch(self, batch_id: str) -> dict[str, Any]:
        for batch in self.batches:
            if batch["id"] == batch_id:
                return batch
        raise web.HTTPNotFound(
            text='{"error": {"message": "no such batch"}}', content_type="application/json"
        )

    def page(self, after: str | None, last_key: str) -> dict[str, Any]:
        ids = [b["id"] for b in self.batches]
        start = ids.index(after) + 1 if after else 0
        data = self.batches[start : start + PAGE]
        more = start + PAGE < len(ids)
        return {"data": data, "has_more": more, last_key: data[-1]["id"] if data else None}

    def lists(self) -> int:
        return sum(1 for s in self.seen if s.method == "GET" and "?limit=" in s.path)


PROVIDER = web.AppKey("provider", Provider)
CANCELLING = web.AppKey("cancelling", str)


async def upload(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    form = await request.post()
    part = form["file"]
    assert isinstance(part, web.FileField)
    body = {
        "purpose": form["purpose"],
        "filename": part.filename,
        "type": part.content_type,
        "content": part.file.read(),
    }
    provider.record(request, body)
    if provider.fail_upload:
        return web.json_response({"error": {"message": "down"}}, status=500)
    return web.json_response({"id": "file-in", "object": "file", "purpose": "batch"})


async def openai_create(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    sent = await request.json()
    provider.record(request, sent)
    batch = {
        "id": f"batch_{len(provider.batches)}",
        "object": "batch",
        "status": "validating",
        "created_at": 1000,
        "metadata": sent.get("metadata"),
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }
    provider.batches.insert(0, batch)
    return web.json_response(batch)


async def get_batch(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    return web.json_response(provider.batch(request.match_info["id"]))


async def cancel(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    batch = provider.batch(request.match_info["id"])
    batch["status" if "status" in batch else "processing_status"] = request.app[CANCELLING]
    return web.json_response(batch)


async def openai_list(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    return web.json_response(provider.page(request.query.get("after"), "last_id"))


async def anthropic_list(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    return web.json_response(provider.page(request.query.get("after_id"), "last_id"))


async def content(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    name = request.match_info["id"]
    if name == "slow":
        await anyio.sleep(5)
    return web.Response(body=provider.files[name], content_type="application/octet-stream")


async def anthropic_create(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    sent = await request.json()
    provider.record(request, sent)
    batch = anthropic_batch("msgbatch_new", "in_progress", "2024-08-20T18:37:24Z")
    provider.batches.insert(0, batch)
    return web.json_response(batch)


async def results(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.record(request, None)
    return web.Response(body=provider.files[request.match_info["id"]])


def app_for(provider: Provider, cancelling: str) -> web.Application:
    app = web.Application()
    app[PROVIDER] = provider
    app[CANCELLING] = cancelling
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{id}/content", content)
    app.router.add_post("/v1/batches", openai_create)
    app.router.add_get("/v1/batches", openai_list)
    app.router.add_get("/v1/batches/{id}", get_batch)
    app.router.add_post("/v1/batches/{id}/cancel", cancel)
    app.router.add_post("/v1/messages/batches", anthropic_create)
    app.router.add_get("/v1/messages/batches", anthropic_list)
    app.router.add_get("/v1/messages/batches/{id}", get_batch)
    app.router.add_post("/v1/messages/batches/{id}/cancel", cancel)
    app.router.add_get("/v1/messages/batches/{id}/results", results)
    return app


@pytest.fixture
def provider() -> Provider:
    return Provider()


async def serve(provider: Provider, kind: str, **kw: Any) -> AsyncIterator[HttpTransport]:
    cancelling = "canceling" if kind == "anthropic" else "cancelling"
    server = TestServer(app_for(provider, cancelling), host="127.0.0.1")
    await server.start_server()
    config = EndpointConfig(
        name="ep",
        kind=kind,  # type: ignore[arg-type]
        model="m",
        base_url=str(server.make_url("/v1")),
        api_key=Secret(KEY),
    )
    transport = await open_http_transport(config, **kw)
    try:
        yield transport
    finally:
        await transport.aclose()
        await server.close()


@pytest.fixture
async def openai(provider: Provider) -> AsyncIterator[HttpTransport]:
    async for transport in serve(provider, "openai"):
        yield transport


@pytest.fixture
async def anthropic(provider: Provider) -> AsyncIterator[HttpTransport]:
    async for transport in serve(provider, "anthropic"):
        yield transport


def items(tag: str, n: int) -> list[BatchItem]:
    return [
        BatchItem(
            custom_id=f"{tag}-{i}",
            request=ChatRequest.of(f"question {i}", model="m", max_tokens=16),
        )
        for i in range(n)
    ]


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def test_both_http_transports_are_batch_transports(
    openai: HttpTransport, anthropic: HttpTransport
) -> None:
    sizes = []
    for transport in (openai, anthropic):
        batch: BatchTransport = transport  # mypy checks the protocol
        sizes.append((batch.batch_max_requests, batch.batch_max_bytes))
    assert sizes == [(50_000, 200_000_000), (100_000, 256_000_000)]


# --- OpenAI ----------------------------------------------------------------------------------


async def test_openai_create_uploads_the_jsonl_as_multipart_then_creates_the_tagged_batch(
    openai: HttpTransport, provider: Provider
) -> None:
    batch = items("run-1", 3)
    info = await openai.batch_create(batch, tag="run-1")
    upload_seen, create_seen = provider.seen
    assert (upload_seen.method, upload_seen.path) == ("POST", "/v1/files")
    assert upload_seen.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert upload_seen.headers["authorization"] == f"Bearer {KEY}"
    assert upload_seen.body["purpose"] == "batch"
    assert upload_seen.body["filename"].endswith(".jsonl")
    assert upload_seen.body["type"] == "application/octet-stream"
    assert upload_seen.body["content"] == b"".join(oai.request_line(i) for i in batch)
    assert (create_seen.method, create_seen.path) == ("POST", "/v1/batches")
    assert create_seen.body == orjson.loads(oai.create_body("file-in", tag="run-1"))
    assert (info.id, info.status, info.ended, info.tag) == ("batch_0", "validating", False, "run-1")
    assert openai.batch_max_requests == 50_000
    assert openai.batch_item_bytes(batch[0]) == len(oai.request_line(batch[0]))


async def test_a_failed_upload_raises_and_creates_no_batch(
    openai: HttpTransport, provider: Provider
) -> None:
    provider.fail_upload = True
    with pytest.raises(ServerError):
        await openai.batch_create(items("run-1", 1), tag="run-1")
    assert [s.path for s in provider.seen] == ["/v1/files"]


async def test_bad_items_are_refused_before_anything_is_sent(
    openai: HttpTransport, provider: Provider
) -> None:
    with pytest.raises(ValueError, match="repeat"):
        await openai.batch_create(items("a", 1) + items("a", 1), tag="a")
    assert provider.seen == []


async def test_openai_get_cancel_and_an_unknown_batch(
    openai: HttpTransport, provider: Provider
) -> None:
    info = await openai.batch_create(items("t", 1), tag="t")
    assert (await openai.batch_get(info.id)).status == "validating"
    cancelled = await openai.batch_cancel(info.id)
    assert (cancelled.status, cancelled.ended) == ("cancelling", False)
    assert provider.seen[-1].path == f"/v1/batches/{info.id}/cancel"
    with pytest.raises(NotFound):
        await openai.batch_get("batch_missing")


async def test_openai_results_come_from_the_output_and_error_files(
    openai: HttpTransport, provider: Provider
) -> None:
    body = {"model": "m", "choices": [{"index": 0, "message": {"content": "42"}}]}
    ok = {"custom_id": "t-0", "response": {"status_code": 200, "body": body}, "error": None}
    expired = {"custom_id": "t-1", "response": None, "error": {"code": "batch_expired"}}
    provider.files = {"file-out": jsonl(ok), "file-err": jsonl(expired)}
    info = BatchInfo(
        id="b", status="expired", ended=True, results_ref="file-out", errors_ref="file-err"
    )
    got = await openai.batch_results(info)  # t-2 has no line: not listed
    assert [r.custom_id for r in got] == ["t-0", "t-1"]
    assert got[0].reply is not None
    assert got[0].reply.choices[0].text == "42"
    assert got[1].error is not None
    assert (got[1].error.retryable, got[1].error.maybe_billed) == (True, False)
    paths = [s.path for s in provider.seen]
    assert paths == ["/v1/files/file-out/content", "/v1/files/file-err/content"]


def openai_listing(tags: str) -> list[dict[str, Any]]:
    """One batch per tag letter, newest first, created at 500, 400, ..."""
    return [
        {
            "id": f"b_{t}",
            "status": "completed",
            "created_at": 500 - 100 * i,
            "metadata": {TAG_KEY: t},
        }
        for i, t in enumerate(tags)
    ]


async def test_openai_find_walks_pages_newest_first(
    openai: HttpTransport, provider: Provider
) -> None:
    provider.batches = openai_listing("abcde")
    found = await openai.batch_find("c", since=250)
    assert found is not None
    assert (found.id, found.tag) == ("b_c", "c")
    assert provider.lists() == 2
    assert provider.seen[1].path == "/v1/batches?limit=100&after=b_b"


async def test_openai_find_stops_at_the_first_batch_older_than_since(
    openai: HttpTransport, provider: Provider
) -> None:
    provider.batches = openai_listing("abcde")
    assert await openai.batch_find("e", since=250) is None  # e (at 100) is never reached
    assert provider.lists() == 2
    assert await openai.batch_find("zz", since=0) is None
    assert provider.lists() == 2 + 3


async def test_batch_requests_use_the_read_timeout(provider: Provider) -> None:
    async for transport in serve(provider, "openai", read_timeout=lambda: 0.2):
        info = BatchInfo(id="b", status="completed", ended=True, results_ref="slow")
        with pytest.raises(RequestTimeout):
            await transport.batch_results(info)


# --- Anthropic -------------------------------------------------------------------------------


def anthropic_batch(batch_id: str, status: str, created: str) -> dict[str, Any]:
    ended = status == "ended"
    counts = {"processing": 0 if ended else 1, "succeeded": 0, "errored": 0}
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {**counts, "canceled": 0, "expired": int(ended)},
        "created_at": created,
        "results_url": f"https://api.anthropic.com/v1/messages/batches/{batch_id}/results"
        if ended
        else None,
    }


async def test_anthropic_create_posts_every_request_with_the_realtime_params(
    anthropic: HttpTransport, provider: Provider
) -> None:
    batch = items("run-1", 2)
    info = await anthropic.batch_create(batch, tag="run-1")
    (seen,) = provider.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages/batches")
    assert seen.headers["x-api-key"] == KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert [r["custom_id"] for r in seen.body["requests"]] == ["run-1-0", "run-1-1"]
    assert seen.body["requests"][0]["params"]["max_tokens"] == 16
    assert "metadata" not in seen.body
    assert (info.id, info.status, info.ended, info.tag) == (
        "msgbatch_new",
        "in_progress",
        False,
        None,
    )
    assert anthropic.batch_max_requests == 100_000


async def test_anthropic_results_parse_each_kind_of_line(
    anthropic: HttpTransport, provider: Provider
) -> None:
    message = {"content": [{"type": "text", "text": "Paris"}], "stop_reason": "end_turn"}
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    provider.files["mb"] = jsonl(
        {"custom_id": "t-0", "result": {"type": "succeeded", "message": message}},
        {"custom_id": "t-1", "result": {"type": "errored", "error": error}},
        {"custom_id": "t-2", "result": {"type": "canceled"}},
        {"custom_id": "t-3", "result": {"type": "expired"}},
    )
    got = await anthropic.batch_results(BatchInfo(id="mb", status="ended", ended=True))
    assert provider.seen[0].path == "/v1/messages/batches/mb/results"
    assert got[0].reply is not None
    assert got[0].reply.choices[0].text == "Paris"
    kinds = [(r.error.retryable, r.error.maybe_billed) for r in got[1:] if r.error is not None]
    assert kinds == [(False, False), (True, False), (True, False)]


async def test_anthropic_find_confirms_an_ended_batch_by_its_custom_ids(
    anthropic: HttpTransport, provider: Provider
) -> None:
    provider.batches = [
        anthropic_batch("other", "ended", "1970-01-01T00:05:00Z"),  # 300
        anthropic_batch("ours", "ended", "1970-01-01T00:03:20Z"),  # 200
    ]
    expired = {"type": "expired"}
    provider.files["other"] = jsonl({"custom_id": "x-0", "result": expired})
    provider.files["ours"] = jsonl({"custom_id": "run-1-0", "result": expired})
    found = await anthropic.batch_find("run-1", since=100)
    assert found is not None
    assert (found.id, found.tag) == ("ours", "run-1")
    assert await anthropic.batch_find("run-1", since=250) is None  # ours is older than since


async def test_anthropic_find_names_an_unfinished_batch_as_an_unconfirmed_candidate(
    anthropic: HttpTransport, provider: Provider
) -> None:
    provider.batches = [
        anthropic_batch("newer", "in_progress", "1970-01-01T00:06:40Z"),  # 400
        anthropic_batch("older", "canceling", "1970-01-01T00:05:00Z"),  # 300
        anthropic_batch("ancient", "in_progress", "1970-01-01T00:01:40Z"),  # 100
    ]
    found = await anthropic.batch_find("run-2", since=250)
    assert found is not None
    assert (found.id, found.tag) == ("older", None)
    assert not any("/results" in s.path for s in provider.seen)  # unfinished: nothing to read
    assert provider.lists() == 2
    assert provider.seen[1].path == "/v1/messages/batches?limit=100&after_id=older"


async def test_anthropic_cancel(anthropic: HttpTransport, provider: Provider) -> None:
    info = await anthropic.batch_create(items("t", 1), tag="t")
    cancelled = await anthropic.batch_cancel(info.id)
    assert (cancelled.status, cancelled.ended) == ("canceling", False)
    assert provider.seen[-1].path == f"/v1/messages/batches/{info.id}/cancel"
