"""API keys never show: not in reprs, configs, errors or log events."""

from __future__ import annotations

import copy
import logging
import pickle
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline import errors as e
from pipeline._log import EVENT_ATTR
from pipeline.llm._gateway import open_gateway
from pipeline.llm._secret import Secret
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports._fake import FakeTransport
from pipeline.llm.transports._http import open_http_transport
from tests.fakes import FakeClock, Scripted, endpoint_config, open_test_gateway

KEY = "sk-test-5ecr3t-a1b2c3d4e5f6"


@contextmanager
def capture_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """Every ``gpo`` log event of the block: its fields and its message as a host would see it."""
    events: list[dict[str, Any]] = []
    with caplog.at_level(logging.DEBUG, logger="gpo"):
        yield events
    records = [r for r in caplog.records if EVENT_ATTR in r.__dict__]
    events.extend({**r.__dict__[EVENT_ATTR], "message": r.getMessage()} for r in records)


def test_repr_and_str_mask_the_value() -> None:
    secret = Secret(KEY)
    for shown in (repr(secret), str(secret), f"{secret}", format(secret), str([secret])):
        assert KEY not in shown
        assert "***" in shown


def test_reveal_gives_the_value() -> None:
    assert Secret(KEY).reveal() == KEY


def test_an_empty_secret_says_it_is_empty() -> None:
    assert repr(Secret("")) == "Secret('')"
    assert not Secret("")
    assert Secret(KEY)


def test_secrets_compare_and_hash_by_value() -> None:
    assert Secret(KEY) == Secret(KEY)
    assert Secret(KEY) != Secret("other")
    assert Secret(KEY) != KEY
    assert len({Secret(KEY), Secret(KEY)}) == 1


def test_a_copied_secret_keeps_its_value_and_its_mask() -> None:
    copied = copy.deepcopy(pickle.loads(pickle.dumps(Secret(KEY))))
    assert copied.reveal() == KEY
    assert KEY not in repr(copied)


def test_endpoint_config_repr_hides_the_key() -> None:
    config = endpoint_config(api_key=Secret(KEY))
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert config.api_key.reveal() == KEY


async def test_gateway_errors_and_logs_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    config = endpoint_config(api_key=Secret(KEY))
    fake = FakeTransport(chat=Scripted(*(e.ServerError("busy", endpoint="ep") for _ in range(9))))
    with capture_logs(caplog) as logs:
        async with open_test_gateway(fake, config=config) as gw:
            with pytest.raises(e.RetriesExhausted) as info:
                await gw.chat("ep", ChatRequest.of("Hi"))
            with pytest.raises(e.ConfigError) as unknown:
                await gw.chat("nope", ChatRequest.of("Hi"))
    assert any(event["event"] == "llm_retry" for event in logs)
    assert KEY not in repr(logs)
    for error in (info.value, info.value.__cause__, unknown.value):
        assert KEY not in str(error)
        assert KEY not in repr(error)


# --- over HTTP: the key is sent, and still never shown ---------------------------------------


class _Server:
    """An OpenAI-style server: first a 429 with retry-after-ms, then a 401 (not echoing the key)."""

    def __init__(self) -> None:
        self.seen_auth: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen_auth.append(request.headers.get("Authorization", ""))
        if len(self.seen_auth) == 1:
            return _error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "5"})
        return _error(401, "invalid_api_key", "Incorrect API key provided.", {})


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    body: dict[str, Any] = {"error": {"message": message, "type": "x", "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
    )


@asynccontextmanager
async def _serving() -> AsyncIterator[_Server]:
    fake = _Server()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        fake.url = str(server.make_url("/v1"))
        yield fake
    finally:
        await server.close()


async def test_http_transport_repr_hides_the_key() -> None:
    transport = await open_http_transport(
        endpoint_config(api_key=Secret(KEY), base_url="http://127.0.0.1:9/v1")
    )
    try:
        assert KEY not in repr(transport)
    finally:
        await transport.aclose()


async def test_the_key_is_sent_but_not_shown_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _serving() as server:
        config = endpoint_config(api_key=Secret(KEY), base_url=server.url)
        with capture_logs(caplog) as logs:
            async with open_gateway([config], clock=FakeClock(), rng=random.Random(0)) as gw:
                with pytest.raises(e.AuthenticationFailed) as info:
                    await gw.chat("ep", ChatRequest.of("Hi"))
    assert server.seen_auth == [f"Bearer {KEY}"] * 2
    assert [event["event"] for event in logs if event["event"] == "llm_retry"] == ["llm_retry"]
    assert KEY not in repr(logs)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
