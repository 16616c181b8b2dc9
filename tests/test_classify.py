"""classify: HTTP error answers become the right error type, with code, message, retry-after."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest

from pipeline import errors as e
from pipeline.llm.transports._classify import error_fields, error_for, retry_after_s

NOW = 1_717_243_200.0  # 2024-06-01T12:00:00Z


def openai_body(message: str = "failure", code: str | None = None, type_: str = "x") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def classify(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> e.LLMError:
    return error_for(status, body, headers or {}, endpoint="ep", now=NOW)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, e.BadRequest, False),
        (401, e.AuthenticationFailed, False),
        (403, e.PermissionDenied, False),
        (404, e.NotFound, False),
        (408, e.RequestTimeout, True),
        (409, e.Conflict, True),
        (418, e.BadRequest, False),
        (422, e.BadRequest, False),
        (429, e.RateLimited, True),
        (500, e.ServerError, True),
        (502, e.ServerError, True),
        (503, e.ServerError, True),
        (504, e.ServerError, True),
        (529, e.Overloaded, True),
    ],
)
def test_status_table(status: int, kind: type[e.LLMError], retryable: bool) -> None:
    error = classify(status, openai_body("it went wrong"))
    assert type(error) is kind
    assert error.retryable is retryable
    assert (error.status, error.endpoint) == (status, "ep")


def test_rate_limit_exceeded_429_is_retryable() -> None:
    error = classify(429, openai_body("Rate limit reached", code="rate_limit_exceeded"))
    assert isinstance(error, e.RateLimited)
    assert error.code == "rate_limit_exceeded"


def test_insufficient_quota_on_429_is_quota_exceeded_and_not_retried() -> None:
    body = openai_body(
        "You exceeded your current quota", code="insufficient_quota", type_="insufficient_quota"
    )
    error = classify(429, body)
    assert type(error) is e.QuotaExceeded
    assert not error.retryable
    assert error.code == "insufficient_quota"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, openai_body("You exceeded your current quota, please check your plan")),
        (403, openai_body("billing hard limit reached", code="billing_hard_limit_reached")),
        (
            400,
            orjson.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Your credit balance is too low to access the Anthropic API.",
                    },
                }
            ),
        ),
        (429, openai_body("You have reached your specified API usage limit")),
    ],
)
def test_quota_and_spend_limit_errors_fail_fast(status: int, body: bytes) -> None:
    assert type(classify(status, body)) is e.QuotaExceeded


def test_vllm_top_level_error_body() -> None:
    body = orjson.dumps(
        {
            "object": "error",
            "message": "max_tokens is too large",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    )
    error = classify(400, body)
    assert type(error) is e.BadRequest
    assert "max_tokens is too large" in str(error)
    assert error.code == "BadRequestError"


def test_nested_error_body_with_a_numeric_code() -> None:
    body = orjson.dumps(
        {"error": {"message": "bad model", "type": "BadRequestError", "param": None, "code": 400}}
    )
    assert error_fields(body) == ("BadRequestError", "bad model")
    assert type(classify(400, body)) is e.BadRequest


def test_a_plain_text_body_becomes_the_message() -> None:
    error = classify(502, b"<html>Bad Gateway</html>")
    assert type(error) is e.ServerError
    assert "Bad Gateway" in str(error)


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b"null", b'{"error": "flat string"}'])
def test_an_uninformative_body_still_gives_a_message(body: bytes) -> None:
    error = classify(503, body)
    assert type(error) is e.ServerError
    assert str(error)


def test_error_string_names_endpoint_and_status() -> None:
    assert str(classify(404, openai_body("no such model"))) == "[ep] HTTP 404: no such model"


# --- retry-after -----------------------------------------------------------------------------


def test_retry_after_ms_is_preferred_over_retry_after() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "20"}, NOW) == 1.5


def test_retry_after_in_seconds() -> None:
    assert retry_after_s({"retry-after": "20"}, NOW) == 20.0


def test_retry_after_as_an_http_date() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert retry_after_s({"retry-after": date}, NOW) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)
    assert retry_after_s({"retry-after": date}, NOW) == 0.0


@pytest.mark.parametrize("headers", [{}, {"retry-after": "soon"}, {"retry-after-ms": "x"}])
def test_missing_or_unreadable_retry_after_is_none(headers: dict[str, str]) -> None:
    assert retry_after_s(headers, NOW) is None


def test_negative_retry_after_is_zero() -> None:
    assert retry_after_s({"retry-after": "-5"}, NOW) == 0.0


def test_error_for_carries_the_retry_after() -> None:
    error = classify(429, openai_body("slow down"), {"retry-after-ms": "250"})
    assert error.retry_after == 0.25
