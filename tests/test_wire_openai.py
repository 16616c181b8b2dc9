"""OpenAIWire: request bodies, response and header parsing, durations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import MalformedResponse
from pipeline.llm._values import ChatRequest, EmbeddingRequest, Message, RateLimitInfo, Usage
from pipeline.llm.transports._openai import (
    OpenAIWire,
    chat_body,
    embeddings_body,
    parse_chat,
    parse_duration,
    parse_embeddings,
    parse_limits,
)
from pipeline.llm.transports._protocol import Wire


def body_of(request: ChatRequest) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(chat_body(request))
    return data


def completion(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
    data.update(fields)
    return orjson.dumps(data)


def choice(index: int, content: object, finish: str = "stop") -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish,
    }


def parse(body: bytes, headers: dict[str, str] | None = None) -> Any:
    return parse_chat(body, headers or {}, endpoint="ep")


# --- the protocol and request bodies ---------------------------------------------------------


def test_satisfies_the_wire_protocol() -> None:
    wire: Wire = OpenAIWire()
    assert (wire.chat_path, wire.embeddings_path) == ("/chat/completions", "/embeddings")


def test_bearer_auth_only_with_a_key() -> None:
    assert OpenAIWire().auth_headers("sk-1") == {"Authorization": "Bearer sk-1"}
    assert OpenAIWire().auth_headers("") == {}


def test_chat_body_carries_every_set_parameter() -> None:
    request = ChatRequest(
        messages=(Message(role="system", content="S"), Message(role="user", content="U")),
        model="gpt-x",
        n=3,
        temperature=0.7,
        max_tokens=64,
        top_p=0.9,
        seed=11,
        stop=("\n",),
    )
    assert body_of(request) == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        "temperature": 0.7,
        "n": 3,
        "max_tokens": 64,
        "top_p": 0.9,
        "seed": 11,
        "stop": ["\n"],
    }


def test_chat_body_omits_defaults_and_unset_parameters() -> None:
    body = body_of(ChatRequest.of("Hi", model="gpt-x", temperature=0.0))
    assert body == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.0,
    }


def test_embeddings_body() -> None:
    body = orjson.loads(embeddings_body(EmbeddingRequest(inputs=("a", "b"), model="emb")))
    assert body == {"model": "emb", "input": ["a", "b"]}


# --- chat responses --------------------------------------------------------------------------


def test_parse_chat_reads_choices_usage_and_model() -> None:
    reply = parse(completion())
    assert [c.text for c in reply.choices] == ["Hello"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage == Usage(input_tokens=10, output_tokens=3)
    assert reply.model == "gpt-x"


def test_empty_content_is_an_empty_text() -> None:
    reply = parse(completion(choices=[choice(0, "", "length")]))
    assert reply.choices[0].text == ""
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "raw",
    [
        choice(0, None, "length"),
        {"index": 0, "message": {"role": "assistant"}, "finish_reason": "stop"},
        {"index": 0, "finish_reason": "stop"},
        {"index": 0, "message": {"content": None}, "text": None, "finish_reason": "stop"},
    ],
)
def test_a_choice_without_content_is_a_malformed_response(raw: dict[str, Any]) -> None:
    # Cached as an empty answer it would change scores for good; retried, it may be answered.
    with pytest.raises(MalformedResponse) as info:
        parse(completion(choices=[raw]))
    assert info.value.retryable
    assert info.value.maybe_billed
    assert "no content" in str(info.value)


def test_one_choice_without_content_makes_the_whole_reply_malformed() -> None:
    with pytest.raises(MalformedResponse):
        parse(completion(choices=[choice(0, "a"), choice(1, None)]))


def test_legacy_text_choices_are_read() -> None:
    reply = parse(completion(choices=[{"index": 0, "text": "legacy", "finish_reason": "stop"}]))
    assert reply.choices[0].text == "legacy"


def test_missing_usage_is_none() -> None:
    data = orjson.loads(completion())
    del data["usage"]
    assert parse(orjson.dumps(data)).usage is None


@pytest.mark.parametrize("usage", [None, {}, {"completion_tokens": 3}, "lots"])
def test_unusable_usage_is_none(usage: object) -> None:
    assert parse(completion(usage=usage)).usage is None


def test_usage_without_completion_tokens_is_unknown() -> None:
    assert parse(completion(usage={"prompt_tokens": 7})).usage is None


def test_choices_out_of_index_order_are_sorted() -> None:
    reply = parse(completion(choices=[choice(2, "c"), choice(0, "a"), choice(1, "b")]))
    assert [c.text for c in reply.choices] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "body",
    [
        completion(choices=[]),
        completion(choices=None),
        orjson.dumps({"id": "x", "model": "gpt-x"}),
        completion(choices=["not an object"]),
        b'{"choices": [{"index": 0, "message": {"content": "cut',
        b"[]",
        b"",
    ],
)
def test_unusable_bodies_are_malformed_responses(body: bytes) -> None:
    with pytest.raises(MalformedResponse) as info:
        parse(body)
    assert info.value.retryable
    assert info.value.maybe_billed
    assert info.value.endpoint == "ep"


def test_parse_chat_reads_rate_limit_headers() -> None:
    reply = parse(completion(), {"x-ratelimit-remaining-requests": "0"})
    assert reply.limits.remaining_requests == 0


# --- embeddings ------------------------------------------------------------------------------


def test_parse_embeddings_orders_vectors_by_index() -> None:
    body = orjson.dumps(
        {
            "data": [{"index": 1, "embedding": [3, 4]}, {"index": 0, "embedding": [1.5, 2]}],
            "usage": {"prompt_tokens": 5, "total_tokens": 5},
        }
    )
    reply = parse_embeddings(body, {}, endpoint="ep")
    assert reply.vectors == ((1.5, 2.0), (3.0, 4.0))
    assert reply.usage == Usage(input_tokens=5)


@pytest.mark.parametrize(
    "body", [b'{"data": [{"index": 0}]}', b'{"data": [{"embedding": ["x"]}]}', b"{}"]
)
def test_unusable_embeddings_are_malformed_responses(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        parse_embeddings(body, {}, endpoint="ep")


# --- rate-limit headers and durations --------------------------------------------------------


def test_parse_limits_reads_every_openai_header() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_limits(headers) == RateLimitInfo(
        limit_requests=500,
        remaining_requests=499,
        reset_requests_s=0.12,
        limit_tokens=200_000,
        remaining_tokens=199_000,
        reset_tokens_s=360.0,
    )


def test_parse_limits_without_headers_is_empty() -> None:
    assert parse_limits({}).empty


@pytest.mark.parametrize("value", ["lots", "", "inf", "-inf", "1e400", "nan"])
def test_unreadable_limit_headers_are_ignored(value: str) -> None:
    info = parse_limits({"x-ratelimit-limit-requests": value, "x-ratelimit-limit-tokens": "100"})
    assert info.limit_requests is None
    assert info.limit_tokens == 100


def test_fractional_limit_headers_are_truncated() -> None:
    assert parse_limits({"x-ratelimit-remaining-tokens": "99.9"}).remaining_tokens == 99


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("120ms", 0.12),
        ("2", 2.0),
        ("0.5", 0.5),
        ("1h2m3s", 3723.0),
        ("250us", 0.00025),
        (" 7s ", 7.0),
    ],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", [None, "", "garbage", "5 minutes", "1s garbage", "s", "-1s"])
def test_unreadable_durations_are_none(raw: str | None) -> None:
    assert parse_duration(raw) is None
