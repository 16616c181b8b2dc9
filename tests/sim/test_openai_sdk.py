"""The official ``openai`` SDK against the simulator: it must read our bodies and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest

from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig, open_simulator

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You answer multiple-choice questions."},
    {"role": "user", "content": "Which is a fruit? (A) apple (B) brick"},
]


@asynccontextmanager
async def client_for(
    config: SimConfig, api_key: str = "sk-test"
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with open_simulator(config) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key=api_key, max_retries=0)
        try:
            yield client
        finally:
            await client.close()


async def test_chat_with_n_seed_and_usage() -> None:
    async with client_for(SimConfig(seed=3)) as client:
        first = await client.chat.completions.create(model="sim-1", messages=MESSAGES, n=3, seed=11)
        again = await client.chat.completions.create(model="sim-1", messages=MESSAGES, n=3, seed=11)
    assert len(first.choices) == 3
    assert first.usage is not None
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.completion_tokens > 0
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert all(choice.finish_reason == "stop" for choice in first.choices)


async def test_embeddings_decode_to_vectors() -> None:
    async with client_for(SimConfig()) as client:
        response = await client.embeddings.create(model="sim-embed-1", input=["one", "two"])
    assert [item.index for item in response.data] == [0, 1]
    assert len(response.data[0].embedding) == 256
    assert response.usage.prompt_tokens == 2


async def test_models_list() -> None:
    async with client_for(SimConfig()) as client:
        page = await client.models.list()
    assert [model.id for model in page.data] == ["sim-1", "sim-embed-1"]


async def test_over_the_limit_raises_rate_limit_error_with_headers() -> None:
    async with client_for(SimConfig(rpm=60, burst_s=1.0)) as client:
        await client.chat.completions.create(model="sim-1", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="sim-1", messages=MESSAGES)
    headers = caught.value.response.headers
    assert int(headers["retry-after-ms"]) > 0
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"


async def test_quota_raises_rate_limit_error_with_insufficient_quota() -> None:
    async with client_for(SimConfig(faults=FaultSpec(quota=True))) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="sim-1", messages=MESSAGES)
    assert caught.value.code == "insufficient_quota"


async def test_the_invalid_key_raises_authentication_error() -> None:
    async with client_for(SimConfig(), api_key="sk-invalid") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="sim-1", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"


async def test_bad_request_raises_bad_request_error() -> None:
    async with client_for(SimConfig()) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="sim-1", messages=[])
    assert caught.value.param == "messages"
