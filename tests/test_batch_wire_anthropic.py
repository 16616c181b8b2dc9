"""The Anthropic batch wire, pure: the create body built, batches, pages and results parsed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import (
    BadRequest,
    MalformedResponse,
    Overloaded,
    QuotaExceeded,
    RateLimited,
    ServerError,
)
from pipeline.llm._values import ChatRequest, TransportReply
from pipeline.llm.transports import _anthropic
from pipeline.llm.transports import _batchwire_anthropic as anth
from pipeline.llm.transports._batch import BatchItem, BatchResult, tagged_custom_id
from tests.test_batch_wire import EP, item, jsonl, the_one


def parse_anthropic(body: bytes) -> TransportReply:
    return _anthropic.parse_chat(body, {}, endpoint=EP, now=0.0)


# --- Anthropic: create -----------------------------------------------------------------------


def test_an_anthropic_entry_carries_the_realtime_params() -> None:
    it = item("t-0")
    entry = orjson.loads(anth.request_entry(it))
    assert entry == {"custom_id": "t-0", "params": orjson.loads(_anthropic.chat_body(it.request))}


def test_the_anthropic_create_body_is_the_items_and_their_sizes_add_up() -> None:
    items = [item(tagged_custom_id("run-1", str(i)), "x" * i) for i in range(3)]
    body = anth.create_body(items, tag="run-1")
    assert list(orjson.loads(body)) == ["requests"]
    assert [r["custom_id"] for r in orjson.loads(body)["requests"]] == [
        "run-1-0",
        "run-1-1",
        "run-1-2",
    ]
    envelope = len(b'{"requests":[') + len(b"]}") - 1  # the last entry has no comma
    assert len(body) == envelope + sum(anth.item_bytes(i) for i in items)


@pytest.mark.parametrize("cid", ["run-10", "other-0", "run-1", "run-1-a b"])
def test_an_anthropic_custom_id_without_the_tag_prefix_is_refused(cid: str) -> None:
    with pytest.raises(ValueError, match="custom_id"):
        anth.create_body([item(cid)], tag="run-1")


def test_an_anthropic_request_that_cannot_be_expressed_is_refused_before_sending() -> None:
    request = ChatRequest.of("hi", model="m")  # no max_tokens
    with pytest.raises(ValueError, match="max_tokens"):
        anth.create_body([BatchItem(custom_id="t-0", request=request)], tag="t")


# --- Anthropic: batches and pages ------------------------------------------------------------


def anthropic_batch(status: str, **kw: Any) -> dict[str, Any]:
    counts = {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    return {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": "2024-08-20T18:37:24.100435Z",
        "expires_at": "2024-08-21T18:37:24.100435Z",
        "ended_at": None,
        "results_url": None,
        **kw,
    }


@pytest.mark.parametrize(
    ("status", "ended"), [("in_progress", False), ("canceling", False), ("ended", True)]
)
def test_every_anthropic_status_says_whether_the_batch_ended(status: str, ended: bool) -> None:
    info = anth.parse_batch(orjson.dumps(anthropic_batch(status)), EP)
    assert (info.status, info.ended, info.total) == (status, ended, 4)
    assert info.tag is None


def test_an_ended_anthropic_batch_counts_errored_canceled_and_expired_as_failed() -> None:
    counts = {"processing": 0, "succeeded": 5, "errored": 1, "canceled": 2, "expired": 3}
    url = "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"
    raw = anthropic_batch("ended", request_counts=counts, results_url=url)
    info = anth.parse_batch(orjson.dumps(raw), EP)
    assert (info.total, info.succeeded, info.failed) == (11, 5, 6)
    assert info.results_ref == url
    assert info.created_at == pytest.approx(1724179044.100435)


def test_an_anthropic_page_continues_after_its_last_id() -> None:
    data = [anthropic_batch("ended", id="b2"), anthropic_batch("ended", id="b1")]
    raw = {"data": data, "has_more": True, "first_id": "b2", "last_id": "b1"}
    page = anth.parse_page(orjson.dumps(raw), EP)
    assert [b.id for b in page.batches] == ["b2", "b1"]
    assert page.cursor == "b1"
    assert anth.list_path(page.cursor) == "/messages/batches?limit=100&after_id=b1"
    raw["has_more"] = False
    assert anth.parse_page(orjson.dumps(raw), EP).cursor is None


# --- Anthropic: results ----------------------------------------------------------------------


def message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 9, "output_tokens": 3},
    }


def errored(kind: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": kind}}}


def anthropic_results(*lines: dict[str, Any]) -> list[BatchResult]:
    return anth.parse_results(jsonl(*lines), endpoint=EP, now=0.0, parse=parse_anthropic)


def test_an_anthropic_success_parses_exactly_as_a_realtime_one() -> None:
    line = {"custom_id": "t-0", "result": {"type": "succeeded", "message": message("Paris")}}
    result = the_one(anthropic_results(line))
    assert result.reply == parse_anthropic(orjson.dumps(message("Paris")))
    assert result.reply.choices[0].text == "Paris"


@pytest.mark.parametrize(
    ("kind", "error", "retryable"),
    [
        ("invalid_request_error", BadRequest, False),
        ("billing_error", QuotaExceeded, False),
        ("rate_limit_error", RateLimited, True),
        ("api_error", ServerError, True),
        ("overloaded_error", Overloaded, True),
        ("something_new", ServerError, True),
    ],
)
def test_an_anthropic_error_is_classified_by_its_type(
    kind: str, error: type[Exception], retryable: bool
) -> None:
    result = the_one(anthropic_results({"custom_id": "t-0", "result": errored(kind)}))
    assert type(result.error) is error
    assert result.error.retryable is retryable
    assert result.error.code == kind


@pytest.mark.parametrize("kind", ["canceled", "expired"])
def test_an_anthropic_request_that_never_ran_is_retryable_and_not_billed(kind: str) -> None:
    result = the_one(anthropic_results({"custom_id": "t-0", "result": {"type": kind}}))
    assert result.error is not None
    assert result.error.retryable
    assert not result.error.maybe_billed
    assert result.error.code == kind


def test_an_anthropic_result_of_unknown_type_is_malformed() -> None:
    result = the_one(anthropic_results({"custom_id": "t-0", "result": {"type": "later"}}))
    assert isinstance(result.error, MalformedResponse)


def test_a_results_body_carries_a_tag_only_when_every_custom_id_has_its_prefix() -> None:
    ok = jsonl(*({"custom_id": f"run-1-{i}", "result": {"type": "expired"}} for i in range(3)))
    assert anth.carries(ok, "run-1", EP)
    assert not anth.carries(ok, "run-12", EP)
    mixed = ok + jsonl({"custom_id": "run-12-0", "result": {"type": "expired"}})
    assert not anth.carries(mixed, "run-1", EP)
    assert not anth.carries(b"", "run-1", EP)
