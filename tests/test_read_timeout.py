"""The read timeout follows the endpoint's observed latency, between a floor and a ceiling; a
local server gets a larger floor; explicit settings bound it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline import errors as e
from pipeline.config._load import load_config
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._retry import ReadTimeout
from pipeline.llm._values import ChatRequest, TransportReply
from pipeline.llm.transports import FakeTransport
from pipeline.llm.transports._fake import echo_reply
from pipeline.llm.transports._http import open_http_transport
from tests.fakes import FakeClock, endpoint_config, open_test_gateway


def ep(
    base_url: str = "https://api.example.com/v1",
    *,
    timeout_s: float | None = None,
    max_timeout_s: float | None = None,
) -> EndpointConfig:
    return EndpointConfig(
        name="t", model="m", base_url=base_url, timeout_s=timeout_s, max_timeout_s=max_timeout_s
    )


@pytest.mark.parametrize(
    ("base_url", "floor"),
    [
        ("https://api.openai.com/v1", 120.0),
        ("http://127.0.0.1:8080/v1", 300.0),
        ("http://localhost:8080/v1", 300.0),
        ("http://[::1]:8080/v1", 300.0),
        ("http://192.168.1.20:8080/v1", 300.0),
        ("http://10.0.0.7/v1", 300.0),
        ("http://llama:8080/v1", 300.0),  # a single-label name: a container or LAN host
        ("http://host.docker.internal:8080/v1", 300.0),
        ("http://8.8.8.8/v1", 120.0),
    ],
)
def test_the_default_floor_is_larger_for_a_local_server(base_url: str, floor: float) -> None:
    config = ep(base_url)
    assert (config.timeout_floor_s, config.timeout_ceiling_s) == (floor, 600.0)


def test_explicit_timeouts_are_the_bounds() -> None:
    assert (ep(timeout_s=30).timeout_floor_s, ep(timeout_s=30).timeout_ceiling_s) == (30, 600)
    assert ep(timeout_s=900).timeout_ceiling_s == 900  # a floor above the default ceiling
    fixed = ep(timeout_s=45, max_timeout_s=45)
    assert (fixed.timeout_floor_s, fixed.timeout_ceiling_s) == (45, 45)
    assert ep(max_timeout_s=60).timeout_floor_s == 60  # a ceiling below the default floor


def test_a_ceiling_below_an_explicit_floor_is_a_config_error() -> None:
    with pytest.raises(e.ConfigError, match=r"t\.max_timeout_s: expected >= timeout_s"):
        ep(timeout_s=100, max_timeout_s=50)
    with pytest.raises(e.ConfigError, match=r"t\.max_timeout_s"):
        ep(max_timeout_s=0)


def local_config(tmp_path: Path, lines: str) -> Path:
    (tmp_path / "d.jsonl").write_text('{"input": "q", "target": "a"}\n', encoding="utf-8")
    path = tmp_path / "run.toml"
    endpoint = 'model = "m"\nbase_url = "http://127.0.0.1:8080/v1"\napi_key_env = ""'
    text = f'[endpoints.local]\n{endpoint}\n{lines}\n[[jobs]]\ndata = "d.jsonl"\n'
    path.write_text(text, encoding="utf-8")
    return path


def test_the_config_file_sets_both_bounds(tmp_path: Path) -> None:
    config = load_config(local_config(tmp_path, "timeout_s = 90\nmax_timeout_s = 900"), env={})
    endpoint = config.endpoint("local")
    assert (endpoint.timeout_floor_s, endpoint.timeout_ceiling_s) == (90, 900)
    default = load_config(local_config(tmp_path, ""), env={}).endpoint("local")
    assert (default.timeout_floor_s, default.timeout_ceiling_s) == (300, 600)


def test_the_config_file_refuses_a_ceiling_below_the_floor(tmp_path: Path) -> None:
    path = local_config(tmp_path, "timeout_s = 100\nmax_timeout_s = 50")
    message = "endpoints.local.max_timeout_s: expected a number >= timeout_s (100), found 50.0"
    with pytest.raises(e.ConfigError, match=re.escape(message)):
        load_config(path, env={})


def test_the_timeout_is_three_times_the_p95_of_recent_latencies_within_bounds() -> None:
    timeout = ReadTimeout(floor_s=120.0, ceiling_s=600.0)
    assert timeout.seconds() == 120.0
    for _ in range(20):
        timeout.observe(10.0)
    assert timeout.seconds() == 120.0  # 30 s is below the floor
    for _ in range(20):
        timeout.observe(100.0)
    assert timeout.seconds() == 300.0
    timeout.observe(500.0)
    assert timeout.seconds() == 300.0  # one outlier in 41 is above the p95
    for _ in range(2):
        timeout.observe(500.0)
    assert timeout.seconds() == 600.0  # capped


def test_old_latencies_leave_the_window() -> None:
    timeout = ReadTimeout(floor_s=1.0, ceiling_s=1000.0)
    timeout.observe(100.0)
    for _ in range(64):
        timeout.observe(2.0)
    assert timeout.seconds() == 6.0


def test_a_fixed_timeout_does_not_move() -> None:
    timeout = ReadTimeout(floor_s=45.0, ceiling_s=45.0)
    timeout.observe(200.0)
    assert timeout.seconds() == 45.0


async def test_the_gateway_raises_the_timeout_after_slow_answers() -> None:
    clock = FakeClock()

    async def slow(request: ChatRequest) -> TransportReply:
        await clock.sleep(150.0)
        return echo_reply(request)

    async with open_test_gateway(FakeTransport(chat=slow), clock=clock) as gw:
        assert gw.statistics()["ep"].read_timeout_s == 120.0
        await gw.chat("ep", ChatRequest.of("hi"))
        assert gw.statistics()["ep"].read_timeout_s == 450.0


async def test_a_timed_out_request_counts_as_a_latency_of_its_wait() -> None:
    clock = FakeClock()
    calls = 0

    async def times_out_once(request: ChatRequest) -> TransportReply:
        nonlocal calls
        calls += 1
        if calls == 1:
            await clock.sleep(120.0)
            raise e.RequestTimeout("no answer within 120.0s", endpoint="ep", maybe_billed=True)
        return echo_reply(request)

    config = endpoint_config(timeout_s=120.0)
    async with open_test_gateway(
        FakeTransport(chat=times_out_once), clock=clock, config=config
    ) as gw:
        await gw.chat("ep", ChatRequest.of("hi"))
        stats = gw.statistics()["ep"]
    assert stats.read_timeout_s == 360.0
    assert stats.retries == {"timeout": 1}


async def slow_handler(request: web.Request) -> web.Response:
    await anyio.sleep(5)
    return web.json_response({})


@pytest.fixture
async def slow_server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_the_http_transport_reads_its_timeout_for_each_request(
    slow_server: TestServer,
) -> None:
    config = ep(str(slow_server.make_url("/v1")), timeout_s=30)
    transport = await open_http_transport(config, read_timeout=lambda: 0.05)
    try:
        with pytest.raises(e.RequestTimeout, match=r"within 0\.05s"):
            await transport.chat(ChatRequest.of("hi", model="m"))
    finally:
        await transport.aclose()
