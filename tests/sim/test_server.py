"""The simulator's HTTP surface through a raw aiohttp client: chat, embeddings, models, errors."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from pipeline.sim.limits import UNCONFIGURED_LIMIT
from pipeline.sim.server import SimConfig, Simulator, open_simulator
from pipeline.sim.tokens import count_prompt_tokens, count_tokens

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


class WordyBrain:
    """Replies with 30 words drawn from ``rng``, then a fixed tail with a stop marker."""

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str:
        words = " ".join(rng.choice(WORDS) for _ in range(30))
        return f"{words} ### tail words"


class FrozenClock:
    """A clock that never advances, so rate-limit buckets never refill during a test."""

    def __call__(self) -> float:
        return 50.0


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[Simulator, aiohttp.ClientSession]]:
    config = SimConfig(**options)
    async with (
        open_simulator(config, brain=WordyBrain(), clock=FrozenClock()) as sim,
        aiohttp.ClientSession() as session,
    ):
        yield sim, session


async def post(
    session: aiohttp.ClientSession, sim: Simulator, route: str, body: object, **kw: Any
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    async with session.post(f"{sim.base_url}/{route}", json=body, **kw) as response:
        return response.status, await response.json(), response.headers


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "sim-1", "messages": [{"role": "user", "content": "Hi there."}], **fields}


def texts(payload: dict[str, Any]) -> list[str]:
    return [choice["message"]["content"] for choice in payload["choices"]]


async def test_chat_serves_n_choices_with_consistent_usage() -> None:
    async with running() as (sim, session):
        status, payload, _ = await post(session, sim, "chat/completions", chat_body(n=3, seed=5))
    assert status == 200
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "sim-1"
    assert [choice["index"] for choice in payload["choices"]] == [0, 1, 2]
    usage = payload["usage"]
    assert usage["prompt_tokens"] == count_prompt_tokens([("user", "Hi there.")])
    assert usage["completion_tokens"] == sum(count_tokens(text) for text in texts(payload))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert sim.stats.choices_served == 3


async def test_same_seed_same_texts_and_other_seeds_differ() -> None:
    async with running(seed=1) as (sim, session):
        first = await post(session, sim, "chat/completions", chat_body(n=3, seed=5))
        again = await post(session, sim, "chat/completions", chat_body(n=3, seed=5))
        other = await post(session, sim, "chat/completions", chat_body(n=3, seed=6))
    assert texts(first[1]) == texts(again[1])
    assert texts(first[1]) != texts(other[1])
    assert len(set(texts(first[1]))) == 3


async def test_the_simulator_seed_changes_the_texts() -> None:
    async with running(seed=1) as (sim, session):
        one = await post(session, sim, "chat/completions", chat_body(seed=5))
    async with running(seed=2) as (sim, session):
        two = await post(session, sim, "chat/completions", chat_body(seed=5))
    assert texts(one[1]) != texts(two[1])


async def test_temperature_zero_gives_equal_choices_without_a_seed() -> None:
    async with running() as (sim, session):
        first = await post(session, sim, "chat/completions", chat_body(n=4, temperature=0))
        again = await post(session, sim, "chat/completions", chat_body(n=2, temperature=0))
    assert len(set(texts(first[1]))) == 1
    assert texts(again[1])[0] == texts(first[1])[0]


async def test_unseeded_sampling_varies_between_choices() -> None:
    async with running() as (sim, session):
        _, payload, _ = await post(session, sim, "chat/completions", chat_body(n=4))
    assert len(set(texts(payload))) == 4


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_finish_reason_length(field: str) -> None:
    async with running() as (sim, session):
        _, payload, _ = await post(session, sim, "chat/completions", chat_body(**{field: 5}))
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "length"
    assert count_tokens(choice["message"]["content"]) == 5
    assert payload["usage"]["completion_tokens"] == 5


async def test_a_short_reply_finishes_with_stop() -> None:
    async with running() as (sim, session):
        _, payload, _ = await post(session, sim, "chat/completions", chat_body(max_tokens=500))
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert texts(payload)[0].endswith("tail words")


@pytest.mark.parametrize("stop", ["###", ["tail", "###"]])
async def test_stop_sequences_cut_the_text(stop: str | list[str]) -> None:
    async with running() as (sim, session):
        _, payload, _ = await post(session, sim, "chat/completions", chat_body(stop=stop))
    text = texts(payload)[0]
    assert "###" not in text
    assert text.split()[-1] in WORDS
    assert payload["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        (chat_body(n=0), "n"),
        (chat_body(n=129), "n"),
        (chat_body(temperature=2.5), "temperature"),
        (chat_body(max_tokens=0), "max_tokens"),
        (chat_body(seed="x"), "seed"),
        (chat_body(stop=5), "stop"),
        (chat_body(stream=True), "stream"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ([1, 2], None),
    ],
)
async def test_invalid_chat_bodies_get_400(body: object, param: str | None) -> None:
    async with running() as (sim, session):
        status, payload, _ = await post(session, sim, "chat/completions", body)
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["param"] == param
    assert set(payload["error"]) == {"message", "type", "param", "code"}


async def test_unparseable_json_gets_400() -> None:
    async with running() as (sim, session):
        url = f"{sim.base_url}/chat/completions"
        async with session.post(url, data=b'{"model": ') as response:
            assert response.status == 400
            error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert "parse the JSON body" in error["message"]


async def test_any_model_name_is_accepted() -> None:
    async with running() as (sim, session):
        status, payload, _ = await post(session, sim, "chat/completions", chat_body(model="gpt-x"))
    assert (status, payload["model"]) == (200, "gpt-x")


async def test_the_invalid_key_gets_401_and_others_pass() -> None:
    async with running() as (sim, session):
        bad = await post(
            session,
            sim,
            "chat/completions",
            chat_body(),
            headers={"Authorization": "Bearer sk-invalid"},
        )
        good = await post(
            session, sim, "chat/completions", chat_body(), headers={"Authorization": "Bearer sk-x"}
        )
    assert bad[0] == 401
    assert bad[1]["error"]["code"] == "invalid_api_key"
    assert good[0] == 200


async def test_embeddings_in_float_and_base64() -> None:
    async with running() as (sim, session):
        body = {"model": "sim-embed-1", "input": ["a b", "c"]}
        _, floats, _ = await post(session, sim, "embeddings", body)
        _, packed, _ = await post(session, sim, "embeddings", {**body, "encoding_format": "base64"})
    assert floats["object"] == "list"
    assert len(floats["data"]) == 2
    assert len(floats["data"][0]["embedding"]) == 256
    assert isinstance(packed["data"][0]["embedding"], str)
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_models_lists_the_chat_and_embedding_models() -> None:
    async with running() as (sim, session), session.get(f"{sim.base_url}/models") as response:
        payload = await response.json()
    assert [model["id"] for model in payload["data"]] == ["sim-1", "sim-embed-1"]
    assert all(model["owned_by"] == "gpo-sim" for model in payload["data"])


async def test_unknown_routes_get_an_openai_404() -> None:
    async with running() as (sim, session):
        status, payload, _ = await post(session, sim, "completions", {})
    assert status == 404
    assert "/v1/completions" in payload["error"]["message"]


async def test_rate_limit_headers_only_when_limited() -> None:
    async with running() as (sim, session):
        _, _, unlimited = await post(session, sim, "chat/completions", chat_body())
    async with running(rpm=600, tpm=60_000) as (sim, session):
        _, _, limited = await post(session, sim, "chat/completions", chat_body(max_tokens=10))
    assert not any(name.lower().startswith("x-ratelimit") for name in unlimited)
    assert limited["x-ratelimit-limit-requests"] == "600"
    assert limited["x-ratelimit-remaining-requests"] == "9"
    assert limited["x-ratelimit-reset-requests"] == "100ms"
    assert limited["x-ratelimit-limit-tokens"] == "60000"
    expected = 1000 - count_prompt_tokens([("user", "Hi there.")]) - 10
    assert limited["x-ratelimit-remaining-tokens"] == str(expected)


RATE_LIMIT_HEADERS = {
    f"x-ratelimit-{field}-{kind}"
    for field in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}


@pytest.mark.parametrize(
    ("limits", "unconfigured"), [({"rpm": 600}, "tokens"), ({"tpm": 60_000}, "requests")]
)
async def test_one_configured_limit_still_gets_all_six_headers(
    limits: dict[str, float], unconfigured: str
) -> None:
    async with running(**limits) as (sim, session):
        _, _, ok = await post(session, sim, "chat/completions", chat_body(max_tokens=10))
        embedded = await post(session, sim, "embeddings", {"model": "e", "input": "x"})
    for headers in (ok, embedded[2]):
        assert {name.lower() for name in headers if name.lower().startswith("x-ratelimit")} == (
            RATE_LIMIT_HEADERS
        )
        # the limit that is not configured is reported as a large one that never runs out
        assert headers[f"x-ratelimit-limit-{unconfigured}"] == str(UNCONFIGURED_LIMIT)
        assert headers[f"x-ratelimit-remaining-{unconfigured}"] == str(UNCONFIGURED_LIMIT)
        assert headers[f"x-ratelimit-reset-{unconfigured}"] == "0s"


async def test_a_429_also_carries_all_six_headers() -> None:
    async with running(rpm=60) as (sim, session):
        await post(session, sim, "chat/completions", chat_body())
        status, _, headers = await post(session, sim, "chat/completions", chat_body())
    assert status == 429
    assert {name.lower() for name in headers} >= RATE_LIMIT_HEADERS


async def test_over_the_limit_gets_429_and_refusals_take_nothing() -> None:
    async with running(rpm=120) as (sim, session):
        statuses = [
            (await post(session, sim, "embeddings", {"model": "e", "input": "x"}))[0]
            for _ in range(4)
        ]
        status, payload, headers = await post(session, sim, "chat/completions", chat_body())
    assert statuses == [200, 200, 429, 429]
    assert status == 429
    assert payload["error"]["code"] == "rate_limit_exceeded"
    assert payload["error"]["type"] == "requests"
    assert headers["retry-after"] == "1"
    assert headers["retry-after-ms"] == "500"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert sim.stats.rate_limited == 3
    assert sim.stats.responses[429] == 3


async def test_the_token_limit_answers_type_tokens() -> None:
    async with running(tpm=6000) as (sim, session):
        await post(session, sim, "chat/completions", chat_body(max_tokens=80))
        status, payload, _ = await post(session, sim, "chat/completions", chat_body(max_tokens=80))
    assert status == 429
    assert payload["error"]["type"] == "tokens"


async def test_stats_count_requests_by_route() -> None:
    async with running() as (sim, session):
        await post(session, sim, "chat/completions", chat_body())
        await post(session, sim, "embeddings", {"model": "e", "input": "x"})
        await post(session, sim, "embeddings", {"model": "e"})
    assert sim.stats.requests == {"/v1/chat/completions": 1, "/v1/embeddings": 2}
    assert sim.stats.responses == {200: 2, 400: 1}
