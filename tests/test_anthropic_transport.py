"""HttpTransport with AnthropicWire against an in-process fake of the Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline import errors as e
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._secret import Secret
from pipeline.llm._values import ChatRequest, EmbeddingRequest, Usage
from pipeline.llm.transports._http import HttpTransport, open_http_transport
from tests.fakes_anthropic import NOW, FakeAnthropic, running

KEY = "sk-ant-test"


def config(url: str, key: str = KEY) -> EndpointConfig:
    return EndpointConfig(
        name="claude",
        kind="anthropic",
        base_url=url,
        model="claude-3-5-haiku-latest",
        api_key=Secret(key),
    )


def request(prompt: str = "Hi", **kwargs: object) -> ChatRequest:
    return ChatRequest.of(
        prompt, system="Be brief.", model="claude-3-5-haiku-latest", max_tokens=32, **kwargs
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with running(FakeAnthropic(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def transport(fake: FakeAnthropic) -> AsyncIterator[HttpTransport]:
    opened = await open_http_transport(config(fake.url), wall_clock=lambda: NOW)
    try:
        yield opened
    finally:
        await opened.aclose()


async def failing(
    transport: HttpTransport,
    fake: FakeAnthropic,
    status: int,
    kind: str,
    message: str = "failure",
    **headers: str,
) -> e.LLMError:
    fake.fail_next(status, kind, message, {k.replace("_", "-"): v for k, v in headers.items()})
    with pytest.raises(e.LLMError) as info:
        await transport.chat(request())
    return info.value


def assert_no_key(err: BaseException) -> None:
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert all(KEY not in str(arg) for arg in err.args)


async def test_completion_parses(transport: HttpTransport) -> None:
    reply = await transport.chat(request("What is 2+2?"))
    assert [c.text for c in reply.choices] == ["echo: What is 2+2?"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude-3-5-haiku-latest"


async def test_usage_is_reported(transport: HttpTransport) -> None:
    reply = await transport.chat(request())
    assert isinstance(reply.usage, Usage)
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens > 0


async def test_rate_limits_are_parsed_against_the_wall_clock(transport: HttpTransport) -> None:
    limits = (await transport.chat(request())).limits
    assert (limits.limit_requests, limits.remaining_requests) == (50, 49)
    assert (limits.limit_tokens, limits.remaining_tokens) == (40000, 39500)
    assert limits.reset_requests_s == pytest.approx(1.2)
    assert limits.reset_tokens_s == pytest.approx(0.75)


async def test_server_sees_anthropic_body(transport: HttpTransport, fake: FakeAnthropic) -> None:
    await transport.chat(request(temperature=1.5, seed=3))
    (body,) = fake.received
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert (body["max_tokens"], body["temperature"]) == (32, 1.0)


async def test_wrong_key_is_authentication_failed(fake: FakeAnthropic) -> None:
    wrong = await open_http_transport(config(fake.url, key="sk-ant-wrong"))
    try:
        with pytest.raises(e.AuthenticationFailed) as info:
            await wrong.chat(request())
    finally:
        await wrong.aclose()
    assert (info.value.status, info.value.code, info.value.retryable) == (
        401,
        "authentication_error",
        False,
    )
    assert "sk-ant-wrong" not in str(info.value)


async def test_missing_key_is_authentication_failed(fake: FakeAnthropic) -> None:
    keyless = await open_http_transport(config(fake.url, key=""))
    try:
        with pytest.raises(e.AuthenticationFailed):
            await keyless.chat(request())
    finally:
        await keyless.aclose()


async def test_invalid_request_is_bad_request(transport: HttpTransport) -> None:
    with pytest.raises(e.BadRequest) as info:
        await transport.chat(request(temperature=-0.5))
    assert (info.value.status, info.value.code) == (400, "invalid_request_error")
    assert not info.value.retryable
    assert "temperature" in str(info.value)
    assert_no_key(info.value)


async def test_rate_limit_is_retryable_with_retry_after(
    transport: HttpTransport, fake: FakeAnthropic
) -> None:
    err = await failing(
        transport,
        fake,
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        retry_after="7",
    )
    assert isinstance(err, e.RateLimited)
    assert (err.retryable, err.retry_after, err.code) == (True, 7.0, "rate_limit_error")
    assert_no_key(err)


async def test_overloaded_is_retryable(transport: HttpTransport, fake: FakeAnthropic) -> None:
    err = await failing(transport, fake, 529, "overloaded_error", "Overloaded")
    assert isinstance(err, e.Overloaded)
    assert err.retryable
    assert_no_key(err)


async def test_api_error_is_a_retryable_server_error(
    transport: HttpTransport, fake: FakeAnthropic
) -> None:
    err = await failing(transport, fake, 500, "api_error", "Internal server error")
    assert isinstance(err, e.ServerError)
    assert err.retryable
    assert_no_key(err)


async def test_low_credit_balance_is_quota_exceeded(
    transport: HttpTransport, fake: FakeAnthropic
) -> None:
    err = await failing(
        transport,
        fake,
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
    )
    assert isinstance(err, e.QuotaExceeded)
    assert not err.retryable


async def test_recovers_after_a_failure(transport: HttpTransport, fake: FakeAnthropic) -> None:
    await failing(transport, fake, 529, "overloaded_error")
    assert (await transport.chat(request("again"))).choices[0].text == "echo: again"


async def test_embeddings_are_not_found_without_a_request(
    transport: HttpTransport, fake: FakeAnthropic
) -> None:
    with pytest.raises(e.NotFound, match="no embeddings API"):
        await transport.embed(EmbeddingRequest(inputs=("x",)))
    assert fake.received == []


async def test_repr_hides_the_key(transport: HttpTransport) -> None:
    assert KEY not in repr(transport)
    assert "claude" in repr(transport)


async def test_the_route_check_accepts_the_messages_route_and_sends_nothing_billable(
    transport: HttpTransport, fake: FakeAnthropic
) -> None:
    await transport.check_route()  # the fake rejects the body with 400: the route exists
    assert fake.received == []


async def test_the_route_check_refuses_a_base_url_without_v1(fake: FakeAnthropic) -> None:
    wrong = await open_http_transport(config(fake.url.removesuffix("/v1")))
    try:
        with pytest.raises(e.NotFound) as info:
            await wrong.check_route()
    finally:
        await wrong.aclose()
    assert f"no chat route at {fake.url.removesuffix('/v1')}/messages (HTTP 404)" in str(info.value)
    assert_no_key(info.value)
