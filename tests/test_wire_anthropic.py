"""AnthropicWire: Messages API bodies, response and header parsing, error classification."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline import errors as e
from pipeline.llm._values import ChatRequest, EmbeddingRequest, Message, RateLimitInfo, Usage
from pipeline.llm.transports._anthropic import (
    AnthropicWire,
    finish_reason,
    parse_limits,
    reset_seconds,
)
from pipeline.llm.transports._classify import error_for
from pipeline.llm.transports._protocol import Wire

NOW = 1_717_243_200.0  # 2024-06-01T12:00:00Z
P = "anthropic-ratelimit-"


def wire() -> AnthropicWire:
    return AnthropicWire(version="2023-06-01", wall_clock=lambda: NOW)


def body_of(request: ChatRequest) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(wire().chat_body(request))
    return data


def request(**kwargs: Any) -> ChatRequest:
    kwargs.setdefault("model", "claude-3-5-haiku-latest")
    kwargs.setdefault("max_tokens", 64)
    return ChatRequest.of("Hi", **kwargs)


def reply(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    data.update(fields)
    return orjson.dumps(data)


def parse(body: bytes, headers: dict[str, str] | None = None) -> Any:
    return wire().parse_chat(body, headers or {}, endpoint="claude")


# --- protocol and headers -------------------------------------------------------------------


def test_satisfies_the_wire_protocol() -> None:
    w: Wire = wire()
    assert w.chat_path == "/messages"


def test_auth_headers_carry_key_and_version() -> None:
    headers = AnthropicWire(version="2099-01-01").auth_headers("sk-ant-x")
    assert headers["x-api-key"] == "sk-ant-x"
    assert headers["anthropic-version"] == "2099-01-01"
    assert headers["Content-Type"] == "application/json"


def test_auth_headers_omit_an_empty_key() -> None:
    assert "x-api-key" not in wire().auth_headers("")


def test_repr_shows_no_key() -> None:
    assert repr(wire()) == "AnthropicWire(version='2023-06-01')"


# --- request bodies -------------------------------------------------------------------------


def test_body_has_model_max_tokens_messages_and_temperature() -> None:
    assert body_of(request(temperature=0.5)) == {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5,
    }


def test_system_messages_become_the_top_level_system_string() -> None:
    msgs = (
        Message(role="system", content="A"),
        Message(role="user", content="Q"),
        Message(role="system", content="B"),
    )
    body = body_of(ChatRequest(messages=msgs, model="m", max_tokens=5))
    assert body["system"] == "A\n\nB"
    assert body["messages"] == [{"role": "user", "content": "Q"}]


def test_consecutive_same_role_messages_are_sent_as_is() -> None:
    msgs = (Message(role="user", content="a"), Message(role="user", content="b"))
    body = body_of(ChatRequest(messages=msgs, model="m", max_tokens=5))
    assert [m["content"] for m in body["messages"]] == ["a", "b"]


def test_temperature_above_one_is_clamped() -> None:
    assert body_of(request(temperature=1.7))["temperature"] == 1.0


def test_top_p_and_stop_sequences_are_sent() -> None:
    body = body_of(request(top_p=0.9, stop=("\n\n", "END")))
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["\n\n", "END"]


def test_seed_n_and_stop_are_never_sent_under_openai_names() -> None:
    body = body_of(request(seed=7, stop=("x",)))
    assert not {"seed", "n", "stop", "system"} & body.keys()


def test_n_other_than_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="n=3"):
        wire().chat_body(request(n=3))


def test_missing_max_tokens_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        wire().chat_body(request(max_tokens=None))


def test_only_system_messages_are_rejected() -> None:
    req = ChatRequest(messages=(Message(role="system", content="s"),), model="m", max_tokens=5)
    with pytest.raises(ValueError, match="user or assistant"):
        wire().chat_body(req)


# --- responses ------------------------------------------------------------------------------


def test_parses_text_model_and_finish_reason() -> None:
    got = parse(reply())
    assert (got.choices[0].text, got.choices[0].finish_reason, got.model) == (
        "Hello",
        "stop",
        "claude-x",
    )


def test_joins_text_blocks_and_skips_others() -> None:
    content = [
        {"type": "text", "text": "a"},
        {"type": "tool_use", "id": "t", "input": {}},
        {"type": "thinking", "thinking": "hm"},
        {"type": "text", "text": "b"},
    ]
    assert parse(reply(content=content)).choices[0].text == "ab"


def test_an_empty_text_block_is_an_empty_text() -> None:
    assert parse(reply(content=[{"type": "text", "text": ""}])).choices[0].text == ""


@pytest.mark.parametrize(
    "content",
    [[], [{"type": "tool_use", "id": "t", "input": {}}], [{"type": "thinking", "thinking": "hm"}]],
)
def test_a_reply_without_a_text_block_is_malformed(content: list[dict[str, Any]]) -> None:
    # Cached as an empty answer it would change scores for good; retried, it may be answered.
    with pytest.raises(e.MalformedResponse) as info:
        parse(reply(content=content, stop_reason="max_tokens"))
    assert info.value.retryable
    assert info.value.maybe_billed
    assert "no text content" in str(info.value)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_use"),
        ("refusal", "refusal"),
        (None, None),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop: str | None, expected: str | None) -> None:
    assert finish_reason(stop) == expected


def test_usage_is_input_and_output_tokens() -> None:
    assert parse(reply()).usage == Usage(input_tokens=10, output_tokens=3)


def test_cache_tokens_count_as_input() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
    }
    assert parse(reply(usage=usage)).usage == Usage(input_tokens=1110, output_tokens=3)


def test_null_cache_tokens_count_as_zero() -> None:
    usage = {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": None}
    assert parse(reply(usage=usage)).usage == Usage(input_tokens=10, output_tokens=3)


def test_missing_usage_is_none() -> None:
    assert parse(reply(usage=None)).usage is None


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"type": "message"}),
        orjson.dumps({"content": "text"}),
        orjson.dumps({"content": [{"type": "text"}]}),
        orjson.dumps({"content": ["text"]}),
    ],
)
def test_unusable_bodies_are_malformed_and_maybe_billed(body: bytes) -> None:
    with pytest.raises(e.MalformedResponse) as info:
        parse(body)
    assert info.value.maybe_billed
    assert info.value.endpoint == "claude"


# --- rate-limit headers ---------------------------------------------------------------------


def test_request_and_token_limits_are_parsed() -> None:
    headers = {
        f"{P}requests-limit": "50",
        f"{P}requests-remaining": "49",
        f"{P}requests-reset": "2024-06-01T12:00:01Z",
        f"{P}tokens-limit": "40000",
        f"{P}tokens-remaining": "39000",
        f"{P}tokens-reset": "2024-06-01T12:00:30.500Z",
    }
    assert parse_limits(headers, now=NOW) == RateLimitInfo(
        limit_requests=50,
        remaining_requests=49,
        reset_requests_s=1.0,
        limit_tokens=40000,
        remaining_tokens=39000,
        reset_tokens_s=30.5,
    )


def test_parse_chat_reads_limits_with_the_injected_clock() -> None:
    headers = {f"{P}requests-reset": "2024-06-01T12:01:00+00:00"}
    assert parse(reply(), headers).limits.reset_requests_s == 60.0


def test_without_tokens_headers_the_tighter_of_input_and_output_counts() -> None:
    headers = {
        f"{P}input-tokens-limit": "400000",
        f"{P}input-tokens-remaining": "100000",
        f"{P}input-tokens-reset": "2024-06-01T12:00:10Z",
        f"{P}output-tokens-limit": "80000",
        f"{P}output-tokens-remaining": "79000",
        f"{P}output-tokens-reset": "2024-06-01T12:00:02Z",
    }
    got = parse_limits(headers, now=NOW)
    assert (got.limit_tokens, got.remaining_tokens, got.reset_tokens_s) == (400000, 100000, 10.0)


def test_only_one_of_input_and_output_windows_is_used_alone() -> None:
    headers = {f"{P}output-tokens-limit": "80000", f"{P}output-tokens-remaining": "5"}
    got = parse_limits(headers, now=NOW)
    assert (got.limit_tokens, got.remaining_tokens) == (80000, 5)


def test_tokens_headers_win_over_input_and_output() -> None:
    headers = {f"{P}tokens-remaining": "7", f"{P}input-tokens-remaining": "1"}
    assert parse_limits(headers, now=NOW).remaining_tokens == 7


def test_no_headers_give_empty_limits() -> None:
    assert parse_limits({}, now=NOW).empty


def test_unreadable_values_are_none() -> None:
    headers = {f"{P}requests-limit": "lots", f"{P}requests-reset": "soon"}
    got = parse_limits(headers, now=NOW)
    assert (got.limit_requests, got.reset_requests_s) == (None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-06-01T12:00:05Z", 5.0),
        ("2024-06-01T14:00:05+02:00", 5.0),
        ("2024-06-01T11:59:00Z", 0.0),
        ("2024-06-01T12:00:05", None),
        ("", None),
        (None, None),
    ],
)
def test_reset_seconds(raw: str | None, expected: float | None) -> None:
    assert reset_seconds(raw, now=NOW) == expected


# --- embeddings -----------------------------------------------------------------------------


def test_embeddings_body_is_not_found() -> None:
    with pytest.raises(e.NotFound, match="no embeddings API"):
        wire().embeddings_body(EmbeddingRequest(inputs=("x",)))


def test_parse_embeddings_is_not_found() -> None:
    with pytest.raises(e.NotFound, match="OpenAI-compatible embeddings endpoint"):
        wire().parse_embeddings(b"{}", {}, endpoint="claude")


# --- error classification of Anthropic's documented errors ----------------------------------


def anthropic_error(
    status: int, kind: str, message: str = "boom", headers: dict[str, str] | None = None
) -> e.LLMError:
    body = orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    )
    return error_for(status, body, headers or {}, endpoint="claude", now=NOW)


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", e.BadRequest),
        (401, "authentication_error", e.AuthenticationFailed),
        (402, "billing_error", e.QuotaExceeded),
        (403, "permission_error", e.PermissionDenied),
        (404, "not_found_error", e.NotFound),
        (413, "request_too_large", e.BadRequest),
        (429, "rate_limit_error", e.RateLimited),
        (500, "api_error", e.ServerError),
        (529, "overloaded_error", e.Overloaded),
    ],
)
def test_documented_errors_classify(status: int, kind: str, expected: type[e.LLMError]) -> None:
    err = anthropic_error(status, kind)
    assert type(err) is expected
    assert (err.status, err.code, str(err)) == (status, kind, f"[claude] HTTP {status}: boom")


@pytest.mark.parametrize(
    "message",
    [
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing.",
        "You have reached your specified API usage limits. You will regain access on 2025-07-01.",
        "You have reached your specified workspace API usage limits.",
    ],
)
def test_spend_limit_messages_are_quota_exceeded(message: str) -> None:
    err = anthropic_error(400, "invalid_request_error", message)
    assert isinstance(err, e.QuotaExceeded)
    assert not err.retryable


def test_rate_limit_error_carries_retry_after() -> None:
    err = anthropic_error(429, "rate_limit_error", headers={"retry-after": "17"})
    assert err.retryable
    assert err.retry_after == 17.0
