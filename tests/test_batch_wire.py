"""The OpenAI batch wire, pure: the JSONL upload built, batches, pages and results parsed;
and what both wires share (helpers here are reused by test_batch_wire_anthropic)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import (
    BadRequest,
    ChoicesRefused,
    MalformedResponse,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    RetryableError,
    ServerError,
)
from pipeline.llm._values import ChatRequest, TransportReply
from pipeline.llm.transports import _batchwire_openai as oai
from pipeline.llm.transports import _openai
from pipeline.llm.transports._batch import TAG_KEY, BatchItem, BatchResult
from pipeline.llm.transports._batchwire import unix_seconds

EP = "ep"


def item(cid: str, prompt: str = "hi") -> BatchItem:
    request = ChatRequest.of(prompt, system="be brief", model="m", max_tokens=8, temperature=0.5)
    return BatchItem(custom_id=cid, request=request)


def parse_openai(body: bytes) -> TransportReply:
    return _openai.parse_chat(body, {}, endpoint=EP)


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


def the_one(results: list[BatchResult]) -> BatchResult:
    assert len(results) == 1
    return results[0]


# --- OpenAI: upload and create ---------------------------------------------------------------


def test_an_openai_line_carries_the_realtime_body() -> None:
    it = item("t-0")
    line = oai.request_line(it)
    assert line.endswith(b"}\n")
    data = orjson.loads(line)
    assert data["custom_id"] == "t-0"
    assert data["method"] == "POST"
    assert data["url"] == "/v1/chat/completions"
    assert data["body"] == orjson.loads(_openai.chat_body(it.request))
    assert oai.item_bytes(it) == len(line)


def test_the_openai_upload_is_one_line_per_item_and_sums_their_sizes() -> None:
    items = [item("t-0", "a"), item("t-1", "bb"), item("t-2", "ccc")]
    up = oai.upload(items, tag="t")
    assert up.fields == (("purpose", "batch"),)
    assert up.file_field == "file"
    assert up.filename.endswith(".jsonl")
    lines = up.content.splitlines()
    assert [orjson.loads(x)["custom_id"] for x in lines] == ["t-0", "t-1", "t-2"]
    assert len(up.content) == sum(oai.item_bytes(i) for i in items)


@pytest.mark.parametrize(
    ("items", "tag", "match"),
    [
        ([], "t", "1 to 50000"),
        ([item("t-0"), item("t-0")], "t", "repeat"),
        ([item("t 0")], "t", "breaks the rule"),
        ([item("x" * 65)], "t", "breaks the rule"),
        ([item("t-0")], "x" * 513, "1 to 512"),
        ([item("t-0")], "", "1 to 512"),
    ],
)
def test_an_openai_upload_no_provider_takes_is_refused(
    items: list[BatchItem], tag: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        oai.upload(items, tag=tag)


def test_the_openai_create_body_tags_the_batch_in_its_metadata() -> None:
    body = orjson.loads(oai.create_body("file-9", tag="run-3"))
    assert body == {
        "input_file_id": "file-9",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {TAG_KEY: "run-3"},
    }


# --- OpenAI: batches and pages ---------------------------------------------------------------


def openai_batch(status: str, **kw: Any) -> dict[str, Any]:
    return {"id": "batch_1", "object": "batch", "status": status, "created_at": 1_700_000_000, **kw}


@pytest.mark.parametrize(
    ("status", "ended"),
    [
        ("validating", False),
        ("in_progress", False),
        ("finalizing", False),
        ("cancelling", False),
        ("completed", True),
        ("failed", True),
        ("expired", True),
        ("cancelled", True),
    ],
)
def test_every_openai_status_says_whether_the_batch_ended(status: str, ended: bool) -> None:
    info = oai.parse_batch(orjson.dumps(openai_batch(status)), EP)
    assert (info.status, info.ended) == (status, ended)


def test_an_openai_batch_gives_counts_files_tag_and_time() -> None:
    raw = openai_batch(
        "completed",
        request_counts={"total": 5, "completed": 3, "failed": 2},
        output_file_id="file-out",
        error_file_id="file-err",
        metadata={TAG_KEY: "run-1", "other": "x"},
    )
    info = oai.parse_batch(orjson.dumps(raw), EP)
    assert (info.total, info.succeeded, info.failed) == (5, 3, 2)
    assert (info.results_ref, info.errors_ref) == ("file-out", "file-err")
    assert info.tag == "run-1"
    assert info.created_at == 1_700_000_000.0
    assert info.failure is None


def test_a_failed_openai_batch_says_why() -> None:
    errors = {
        "object": "list",
        "data": [{"code": "invalid_model", "message": "no such model", "line": 1}, {}],
    }
    raw = openai_batch("failed", errors=errors, output_file_id=None, metadata=None)
    info = oai.parse_batch(orjson.dumps(raw), EP)
    assert info.failure == "invalid_model: no such model"
    assert (info.results_ref, info.errors_ref, info.tag) == (None, None, None)


def test_an_openai_batch_without_an_id_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        oai.parse_batch(b'{"status": "completed"}', EP)


@pytest.mark.parametrize(
    ("extra", "cursor"),
    [
        ({"has_more": True, "last_id": "batch_b"}, "batch_b"),
        ({"has_more": True}, "batch_b"),
        ({"has_more": False, "last_id": "batch_b"}, None),
    ],
)
def test_an_openai_page_gives_the_next_cursor_only_while_there_is_more(
    extra: dict[str, Any], cursor: str | None
) -> None:
    data = [openai_batch("completed", id="batch_a"), openai_batch("failed", id="batch_b")]
    page = oai.parse_page(orjson.dumps({"object": "list", "data": data, **extra}), EP)
    assert [b.id for b in page.batches] == ["batch_a", "batch_b"]
    assert page.cursor == cursor


def test_openai_paths_quote_ids_and_carry_the_cursor() -> None:
    assert oai.list_path(None) == "/batches?limit=100"
    assert oai.list_path("batch_x") == "/batches?limit=100&after=batch_x"
    assert oai.batches_path("a/b", "/cancel") == "/batches/a%2Fb/cancel"
    assert oai.content_path("file-1") == "/files/file-1/content"


# --- OpenAI: results -------------------------------------------------------------------------


def completion(text: str | None) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    return {
        "model": "m",
        "choices": [choice],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }


def output_line(cid: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    response = {"status_code": status, "request_id": "req_1", "body": body}
    return {"id": "batch_req_1", "custom_id": cid, "response": response, "error": None}


def error_line(cid: str, code: str) -> dict[str, Any]:
    error = {"code": code, "message": f"{code} happened"}
    return {"id": "batch_req_2", "custom_id": cid, "response": None, "error": error}


def openai_results(*lines: dict[str, Any]) -> list[BatchResult]:
    return oai.parse_results(jsonl(*lines), endpoint=EP, now=0.0, parse=parse_openai)


def test_an_openai_answer_parses_exactly_as_a_realtime_one() -> None:
    body = completion("4")
    result = the_one(openai_results(output_line("t-0", 200, body)))
    assert result.custom_id == "t-0"
    assert result.error is None
    assert result.reply == parse_openai(orjson.dumps(body))


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (400, {"error": {"message": "bad", "type": "invalid_request_error"}}, BadRequest, False),
        (400, {"error": {"message": "Invalid 'n'", "param": "n"}}, ChoicesRefused, False),
        (
            429,
            {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
            RateLimited,
            True,
        ),
        (429, {"error": {"message": "x", "code": "insufficient_quota"}}, QuotaExceeded, False),
        (500, {"error": {"message": "oops"}}, ServerError, True),
    ],
)
def test_an_openai_error_answer_is_classified_as_in_realtime(
    status: int, body: dict[str, Any], kind: type[Exception], retryable: bool
) -> None:
    result = the_one(openai_results(output_line("t-0", status, body)))
    assert result.reply is None
    assert type(result.error) is kind
    assert result.error.retryable is retryable
    assert result.error.status == status


@pytest.mark.parametrize("code", ["batch_expired", "batch_cancelled"])
def test_an_openai_request_that_never_ran_is_retryable_and_not_billed(code: str) -> None:
    result = the_one(openai_results(error_line("t-0", code)))
    assert isinstance(result.error, RetryableError)
    assert result.error.retryable
    assert not result.error.maybe_billed
    assert result.error.code == code


@pytest.mark.parametrize(
    ("code", "kind"), [("request_timeout", RequestTimeout), ("odd", ServerError)]
)
def test_an_openai_request_that_failed_without_an_answer_may_be_billed(
    code: str, kind: type[Exception]
) -> None:
    result = the_one(openai_results(error_line("t-0", code)))
    assert type(result.error) is kind
    assert result.error.retryable
    assert result.error.maybe_billed


def test_an_openai_answer_without_content_is_that_requests_malformed_reply() -> None:
    results = openai_results(output_line("t-0", 200, completion(None)), error_line("t-1", "x"))
    assert [r.custom_id for r in results] == ["t-0", "t-1"]
    assert isinstance(results[0].error, MalformedResponse)
    assert results[0].error.maybe_billed


def test_an_openai_line_with_neither_response_nor_error_is_malformed() -> None:
    line = {"id": "r", "custom_id": "t-0", "response": None, "error": None}
    assert isinstance(the_one(openai_results(line)).error, MalformedResponse)


@pytest.mark.parametrize("body", [b'{"custom_id": "t-0"\n', b'{"response": {}}\n', b"[1]\n"])
def test_an_unreadable_openai_results_file_is_malformed_as_a_whole(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        oai.parse_results(body, endpoint=EP, now=0.0, parse=parse_openai)


def test_blank_lines_and_an_empty_file_give_no_results() -> None:
    assert oai.parse_results(b"", endpoint=EP, now=0.0, parse=parse_openai) == []
    body = b"\n" + jsonl(error_line("t-0", "batch_expired")) + b"\n\n"
    assert len(oai.parse_results(body, endpoint=EP, now=0.0, parse=parse_openai)) == 1


# --- shared ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        ("1970-01-01T00:01:40Z", 100.0),
        ("1970-01-01T00:01:40.123456789+00:00", 100.123456),
        ("1970-01-01T00:01:40", None),
        ("yesterday", None),
        (True, None),
        (None, None),
    ],
)
def test_times_read_as_unix_seconds(raw: object, seconds: float | None) -> None:
    assert unix_seconds(raw) == (pytest.approx(seconds) if seconds is not None else None)
