"""An endpoint that refuses ``n`` choices in one request (llama.cpp's server with fewer slots
than ``n``) is switched to one request per choice, once; an unrelated 400 still fails."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline import errors as e
from pipeline._log import EVENT_ATTR
from pipeline.llm._budget import Budget
from pipeline.llm._cache import MemoryCache
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports import FakeTransport
from pipeline.llm.transports._classify import error_for
from tests.fakes import Scripted, endpoint_config, fewer_choices, open_test_gateway, reply

SLOTS = 2
PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)
REQUEST = ChatRequest.of("hi", temperature=1.0, seed=5)
# What llama-server --parallel 2 answers to "n": 3 (tools/server/server-schema.cpp: n_cmpl has
# hard limits 1..n_parallel; format_error_response wraps the message).
LLAMA_400 = {
    "error": {
        "code": 400,
        "message": f"Field 'n': Value must be between 1 <= value <= {SLOTS}, but got 3",
        "type": "invalid_request_error",
    }
}
UNRELATED_400 = {
    "error": {
        "code": 400,
        "message": "Field 'n_probs': Value must be between 0 <= value <= 20, but got 99",
        "type": "invalid_request_error",
    }
}


class LlamaServer:
    """Plays llama-server's chat route: a 400 for ``n`` above its slots, else ``n`` choices
    with the usage of one choice (as llama.cpp reports it)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.unrelated = False

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        n = body.get("n", 1)
        if self.unrelated:
            return web.json_response(UNRELATED_400, status=400)
        if n > SLOTS:
            return web.json_response(LLAMA_400, status=400)
        choices = [
            {"index": i, "message": {"content": f"seed={body.get('seed')} #{i}"}} for i in range(n)
        ]
        usage = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
        return web.json_response({"choices": choices, "usage": usage, "model": "m"})

    @property
    def ns(self) -> list[int]:
        return [b.get("n", 1) for b in self.bodies]


@pytest.fixture
async def llama() -> AsyncIterator[tuple[LlamaServer, TestServer]]:
    fake = LlamaServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, server
    finally:
        await server.close()


def http_config(server: TestServer) -> EndpointConfig:
    return EndpointConfig(
        name="llama",
        model="m",
        base_url=str(server.make_url("/v1")),
        price=PRICE,
        default_max_tokens=16,
        retry=RetryPolicy(max_attempts=2, base_s=0.0, cap_s=0.0),
    )


def split_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    fields = (r.__dict__.get(EVENT_ATTR) for r in caplog.records)
    return [f for f in fields if f is not None and f.get("event") == "n_split"]


async def test_a_400_naming_n_splits_the_call_into_one_request_per_choice(
    llama: tuple[LlamaServer, TestServer], caplog: pytest.LogCaptureFixture
) -> None:
    fake, server = llama
    caplog.set_level(logging.WARNING, logger="gpo")
    budget, cache = Budget(), MemoryCache()
    async with open_gateway([http_config(server)], budget=budget, cache=cache) as gw:
        completion = await gw.chat("llama", REQUEST.with_(n=3))
        stats = gw.statistics()["llama"]
    assert len(completion.choices) == 3
    assert len(set(completion.texts)) == 3  # each choice its own seed
    assert fake.ns == [3, 1, 1, 1]
    assert (stats.n_split, stats.n_split_requests, stats.failures) == (True, 3, 0)
    assert len(split_events(caplog)) == 1
    assert len(cache) == 3  # one distinct key per choice
    # The refused request cost nothing: spend is the three answered requests' usage.
    assert budget.open_reservations == 0
    assert budget.state().spent_usd == pytest.approx(3 * PRICE.cost(10, 4))
    assert completion.cost_usd == pytest.approx(3 * PRICE.cost(10, 4))


async def test_the_split_is_remembered_and_a_replay_is_free(
    llama: tuple[LlamaServer, TestServer], caplog: pytest.LogCaptureFixture
) -> None:
    fake, server = llama
    caplog.set_level(logging.WARNING, logger="gpo")
    cache = MemoryCache()
    async with open_gateway([http_config(server)], cache=cache) as gw:
        await gw.chat("llama", REQUEST.with_(n=3))
        await gw.chat("llama", REQUEST.with_(n=3, seed=6))
    assert fake.ns == [3, 1, 1, 1, 1, 1, 1]  # no second refused request
    assert len(split_events(caplog)) == 1
    sent = len(fake.bodies)
    async with open_gateway([http_config(server)], cache=cache) as gw:  # a resumed run
        again = await gw.chat("llama", REQUEST.with_(n=3))
    assert (again.cached, again.cost_usd, len(fake.bodies)) == (True, 0.0, sent)


async def test_concurrent_calls_refused_at_once_split_and_log_once(
    llama: tuple[LlamaServer, TestServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, server = llama
    caplog.set_level(logging.WARNING, logger="gpo")
    got: list[int] = []

    async def one(gw: Gateway, seed: int) -> None:
        got.append(len((await gw.chat("llama", REQUEST.with_(n=3, seed=seed))).choices))

    async with open_gateway([http_config(server)]) as gw:
        async with anyio.create_task_group() as tg:
            for seed in range(4):
                tg.start_soon(one, gw, seed)
        stats = gw.statistics()["llama"]
    assert got == [3, 3, 3, 3]
    assert (stats.n_split, stats.n_split_requests, stats.failures) == (True, 12, 0)
    assert len(split_events(caplog)) == 1


async def test_an_unrelated_400_still_fails_the_call(
    llama: tuple[LlamaServer, TestServer],
) -> None:
    fake, server = llama
    fake.unrelated = True
    budget = Budget()
    async with open_gateway([http_config(server)], budget=budget) as gw:
        with pytest.raises(e.BadRequest):
            await gw.chat("llama", REQUEST.with_(n=3))
        stats = gw.statistics()["llama"]
    assert fake.ns == [3]
    assert (stats.n_split, stats.failures) == (False, 1)
    assert budget.state().spent_usd == 0.0


async def test_a_refusal_of_one_choice_is_not_retried_as_a_split() -> None:
    refused = error_for(400, _json(LLAMA_400), {}, endpoint="ep", now=0.0)
    fake = FakeTransport(chat=Scripted(refused))
    async with open_test_gateway(fake) as gw:
        with pytest.raises(e.BadRequest):
            await gw.chat("ep", REQUEST)
        stats = gw.statistics()["ep"]
    assert (len(fake.requests), stats.n_split, stats.failures) == (1, False, 1)


async def test_supports_n_false_sends_one_request_per_choice_without_a_refusal() -> None:
    fake = FakeTransport(chat=lambda r: reply(*(f"#{i}" for i in range(r.n))))
    async with open_test_gateway(fake, config=endpoint_config(supports_n=False)) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
        stats = gw.statistics()["ep"]
    assert len(completion.choices) == 3
    assert (stats.n_split, stats.n_split_requests) == (False, 3)


async def test_a_top_up_of_missing_choices_is_not_a_split() -> None:
    async with open_test_gateway(FakeTransport(chat=fewer_choices(2))) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
        stats = gw.statistics()["ep"]
    assert len(completion.choices) == 3
    assert (stats.n_split, stats.n_split_requests) == (False, 0)


@pytest.mark.parametrize(
    "body",
    [
        LLAMA_400,
        {
            "error": {
                "code": 400,
                "message": "n_cmpl cannot be greater than the number of slots, please increase -np",
                "type": "invalid_request_error",
            }
        },
        {
            "error": {
                "message": "Invalid 'n': integer above maximum value. Expected a value <= 128, "
                "but got 200 instead.",
                "type": "invalid_request_error",
                "param": "n",
                "code": "integer_above_max_value",
            }
        },
        {"error": {"message": "Unsupported value", "type": "invalid_request_error", "param": "n"}},
        {"object": "error", "message": "[{'loc': ('body', 'n'), 'msg': 'too big'}]"},
    ],
)
def test_400s_naming_n_are_recognised(body: dict[str, Any]) -> None:
    error = error_for(400, _json(body), {}, endpoint="ep", now=0.0)
    assert isinstance(error, e.ChoicesRefused)
    assert isinstance(error, e.BadRequest)
    assert not error.retryable


@pytest.mark.parametrize(
    "body",
    [
        UNRELATED_400,
        {"error": {"message": "messages must not be empty", "param": "messages"}},
        {"error": {"message": "Invalid 'n_predict'", "param": "n_predict"}},
        {"error": {"message": "the prompt has n tokens, too many for the context"}},
    ],
)
def test_other_400s_are_plain_bad_requests(body: dict[str, Any]) -> None:
    assert type(error_for(400, _json(body), {}, endpoint="ep", now=0.0)) is e.BadRequest


def test_a_5xx_naming_n_is_still_a_server_error() -> None:
    error = error_for(500, _json(LLAMA_400), {}, endpoint="ep", now=0.0)
    assert type(error) is e.ServerError


def _json(body: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(body)
