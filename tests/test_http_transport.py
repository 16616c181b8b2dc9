"""The aiohttp transport: failures become the error tree, and secrets stay secret."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    NotFound,
    RequestTimeout,
)
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._secret import Secret
from pipeline.llm._values import ChatRequest
from pipeline.llm.transports._http import open_http_transport

KEY = "sk-live-abcdef0123456789"


async def echo_key_401(request: web.Request) -> web.Response:
    sent = request.headers.get("Authorization", "")
    return web.json_response(
        {"error": {"message": f"Incorrect API key provided: {sent}", "code": "invalid_api_key"}},
        status=401,
    )


async def slow(request: web.Request) -> web.Response:
    await anyio.sleep(5)
    return web.json_response({})


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo_key_401)
    app.router.add_post("/slow/chat/completions", slow)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


def config(base_url: str, **kw: object) -> EndpointConfig:
    return EndpointConfig(
        name="t",
        model="m",
        base_url=base_url,
        api_key=Secret(KEY),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_key_echoed_in_an_error_body_is_masked(server: TestServer) -> None:
    transport = await open_http_transport(config(str(server.make_url("/v1"))))
    try:
        with pytest.raises(AuthenticationFailed) as info:
            await transport.chat(ChatRequest.of("hi", model="m"))
    finally:
        await transport.aclose()
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.args)
    assert "***" in str(info.value)


async def test_no_answer_in_time_is_a_billable_timeout(server: TestServer) -> None:
    transport = await open_http_transport(config(str(server.make_url("/slow")), timeout_s=0.2))
    try:
        with pytest.raises(RequestTimeout) as info:
            await transport.chat(ChatRequest.of("hi", model="m"))
    finally:
        await transport.aclose()
    assert info.value.retryable
    assert info.value.maybe_billed


async def test_a_refused_connection_is_retryable_and_not_billed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = await open_http_transport(config(f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(ConnectionFailed) as info:
            await transport.chat(ChatRequest.of("hi", model="m"))
    finally:
        await transport.aclose()
    assert info.value.retryable
    assert not info.value.maybe_billed


async def test_preflight_passes_a_server_without_models_and_stops_a_dead_one(
    server: TestServer,
) -> None:
    from pipeline.llm._gateway import open_gateway

    alive = config(str(server.make_url("/v1")))  # no GET /models route: 404
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = EndpointConfig(name="dead", model="m", base_url=f"http://127.0.0.1:{port}/v1")
    async with open_gateway([alive, dead]) as gateway:
        await gateway.preflight(["t"])
        with pytest.raises(ConnectionFailed):
            await gateway.preflight(["dead"])


async def reject_body(request: web.Request) -> web.Response:
    return web.json_response({"detail": [{"msg": "Field required"}]}, status=422)


@pytest.fixture
async def routes() -> AsyncIterator[TestServer]:
    """``/emb``: an embeddings-only server; ``/get``: a chat route that only answers GET."""
    app = web.Application()
    app.router.add_post("/emb/embeddings", reject_body)
    app.router.add_get("/get/chat/completions", reject_body)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


async def test_the_route_check_passes_an_embeddings_only_server(routes: TestServer) -> None:
    transport = await open_http_transport(config(str(routes.make_url("/emb"))))
    try:
        await transport.check_route()
    finally:
        await transport.aclose()


async def test_the_route_check_refuses_a_chat_path_that_does_not_take_post(
    routes: TestServer,
) -> None:
    base = str(routes.make_url("/get"))
    transport = await open_http_transport(config(base))
    try:
        with pytest.raises(
            NotFound, match=f"no chat route at {base}/chat/completions \\(HTTP 405\\)"
        ):
            await transport.check_route()
    finally:
        await transport.aclose()


@pytest.mark.parametrize("key", ["sk-abc\n", " sk-abc", "sk-\x1babc"])
async def test_a_key_no_header_can_carry_is_a_config_error_that_never_shows_it(key: str) -> None:
    endpoint = EndpointConfig(name="ep", model="m", api_key=Secret(key))
    with pytest.raises(ConfigError, match="'ep': the API key has") as info:
        await open_http_transport(endpoint)
    assert "sk-" not in str(info.value)
