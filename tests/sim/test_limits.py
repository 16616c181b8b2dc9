"""Rate limits: token buckets on a fake clock, OpenAI's headers and 429 bodies."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline._bucket import TokenBucket
from pipeline.sim.limits import RateLimiter, format_duration, parse_duration


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.12, "120ms"),
        (0.0001, "1ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (7.66, "7.66s"),
        (360.0, "6m0s"),
        (179.56, "2m59.56s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_duration_writes_openai_strings(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"), [("120ms", 0.12), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0)]
)
def test_parse_duration_reads_openai_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1s2", "1.s"])
def test_parse_duration_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@given(st.floats(min_value=0.0, max_value=100_000.0))
def test_parse_inverts_format_to_the_millisecond(seconds: float) -> None:
    parsed = parse_duration(format_duration(seconds))
    assert seconds - 1e-6 <= parsed <= seconds + 0.001 + 1e-6


def test_bucket_capacity_is_rate_times_burst() -> None:
    bucket = TokenBucket(per_minute=12_000, burst_s=1.0, clock=FakeClock())
    assert bucket.capacity == pytest.approx(200.0)
    assert bucket.level() == pytest.approx(200.0)


def test_bucket_holds_at_least_one_unit() -> None:
    assert TokenBucket(per_minute=6, burst_s=1.0, clock=FakeClock()).capacity == 1.0


def test_bucket_refills_at_the_per_second_rate_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_minute=600, burst_s=2.0, clock=clock)
    bucket.take(20)
    clock.advance(0.5)
    assert bucket.level() == pytest.approx(5.0)
    clock.advance(100)
    assert bucket.level() == pytest.approx(20.0)


def test_limiter_refuses_once_the_request_bucket_is_empty() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=None, burst_s=1.0, clock=clock)
    assert limiter.admit(10).allowed
    refusal = limiter.admit(10)
    assert not refusal.allowed
    assert refusal.kind == "requests"
    assert refusal.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.admit(10).allowed


def test_a_request_refusal_takes_no_tokens() -> None:
    limiter = RateLimiter(rpm=60, tpm=6000, burst_s=1.0, clock=FakeClock())
    limiter.admit(40)
    limiter.admit(40)
    assert limiter.headers()["x-ratelimit-remaining-tokens"] == "60"


def test_a_token_refusal_takes_no_request() -> None:
    limiter = RateLimiter(rpm=180, tpm=600, burst_s=1.0, clock=FakeClock())
    limiter.admit(5)
    refusal = limiter.admit(6)
    assert (refusal.allowed, refusal.kind) == (False, "tokens")
    assert refusal.retry_after_s == pytest.approx(0.1)
    assert limiter.headers()["x-ratelimit-remaining-requests"] == "2"


def test_headers_describe_limits_remaining_and_reset() -> None:
    limiter = RateLimiter(rpm=120, tpm=60_000, burst_s=1.0, clock=FakeClock())
    admission = limiter.admit(250)
    assert admission.headers == {
        "x-ratelimit-limit-requests": "120",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "500ms",
        "x-ratelimit-limit-tokens": "60000",
        "x-ratelimit-remaining-tokens": "750",
        "x-ratelimit-reset-tokens": "250ms",
    }


def test_unlimited_limiter_admits_everything_without_headers() -> None:
    limiter = RateLimiter(rpm=None, tpm=None, burst_s=1.0, clock=FakeClock())
    admissions = [limiter.admit(10**6) for _ in range(100)]
    assert all(admission.allowed for admission in admissions)
    assert limiter.headers() == {}


def test_refusal_carries_retry_headers_and_openai_body() -> None:
    limiter = RateLimiter(rpm=60, tpm=None, burst_s=1.0, clock=FakeClock())
    limiter.admit(1)
    refusal = limiter.admit(1)
    assert refusal.retry_headers() == {"retry-after": "1", "retry-after-ms": "1000"}
    error = refusal.error_body()["error"]
    assert isinstance(error, dict)
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert error["param"] is None
    assert str(error["message"]).startswith("Rate limit reached for requests")


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=60, burst_s=10.0, clock=clock)
    limiter.admit(10)
    refusal = limiter.admit(5)
    assert refusal.retry_after_s == pytest.approx(5.0)
    clock.advance(3.5)
    refusal = limiter.admit(5)
    assert refusal.retry_headers() == {"retry-after": "2", "retry-after-ms": "1500"}


def test_a_request_above_the_minute_limit_is_too_large() -> None:
    limiter = RateLimiter(rpm=None, tpm=1000, burst_s=1.0, clock=FakeClock())
    refusal = limiter.admit(1001)
    assert (refusal.allowed, refusal.kind, refusal.retry_after_s) == (False, "tokens", None)
    assert "Request too large" in refusal.message
    assert refusal.retry_headers() == {}


def test_a_request_above_capacity_drains_a_full_bucket_into_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=600, burst_s=1.0, clock=clock)
    assert limiter.admit(100).allowed
    headers = limiter.headers()
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-reset-tokens"] == "10s"
    refusal = limiter.admit(1)
    assert math.isclose(refusal.retry_after_s or 0.0, 9.1)
