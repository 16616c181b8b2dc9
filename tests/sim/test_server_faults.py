"""Injected faults seen through a raw aiohttp client: each does what it promises."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from pipeline.sim.faults import FaultSpec
from pipeline.sim.server import SimConfig, Simulator, open_simulator

CHAT = {"model": "sim-1", "messages": [{"role": "user", "content": "Hi."}], "n": 4, "seed": 1}
EMBED = {"model": "sim-embed-1", "input": "Hi."}


class EchoBrain:
    """Replies with a fixed sentence."""

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str:
        return "The answer is (A)."


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Client:
    sim: Simulator
    session: aiohttp.ClientSession

    async def post(self, route: str, body: object) -> Reply:
        async with self.session.post(f"{self.sim.base_url}/{route}", json=body) as response:
            raw = await response.read()
            return Reply(response.status, response.content_type, response.headers, raw)


@asynccontextmanager
async def faulty(spec: str, **options: Any) -> AsyncIterator[Client]:
    config = SimConfig(faults=FaultSpec.parse(spec), **options)
    async with (
        open_simulator(config, brain=EchoBrain()) as sim,
        aiohttp.ClientSession() as session,
    ):
        yield Client(sim, session)


async def test_reset_drops_the_connection() -> None:
    async with faulty("reset=1") as client:
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.post("chat/completions", CHAT)
    assert client.sim.stats.faults["reset"] == 1
    assert client.sim.stats.responses == {}


async def test_truncate_sends_unparseable_json_of_the_announced_length() -> None:
    async with faulty("truncate=1") as client:
        reply = await client.post("chat/completions", CHAT)
    assert reply.status == 200
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    with pytest.raises(orjson.JSONDecodeError):
        reply.json()
    assert client.sim.stats.faults["truncate"] == 1


async def test_fewer_choices_returns_fewer_than_n() -> None:
    async with faulty("fewer_choices=1") as client:
        choices = (await client.post("chat/completions", CHAT)).json()["choices"]
    assert 1 <= len(choices) < 4
    assert client.sim.stats.choices_served == len(choices)


async def test_no_usage_omits_usage() -> None:
    async with faulty("no_usage=1") as client:
        payload = (await client.post("chat/completions", CHAT)).json()
    assert "usage" not in payload
    assert len(payload["choices"]) == 4


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("500", "application/json"), ("502", "text/html"), ("503", "application/json")],
)
async def test_server_errors_have_their_status(kind: str, content_type: str) -> None:
    async with faulty(f"{kind}=1") as client:
        reply = await client.post("chat/completions", CHAT)
    assert (reply.status, reply.content_type) == (int(kind), content_type)
    assert client.sim.stats.faults[kind] == 1


async def test_injected_429_is_a_short_rate_limit() -> None:
    async with faulty("429=1") as client:
        reply = await client.post("embeddings", EMBED)
    assert reply.status == 429
    assert 50 <= int(reply.headers["retry-after-ms"]) <= 200
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert client.sim.stats.rate_limited == 0


@pytest.mark.parametrize("route", ["chat/completions", "embeddings"])
async def test_quota_exhaustion_refuses_every_call(route: str) -> None:
    async with faulty("quota") as client:
        reply = await client.post(route, CHAT | EMBED)
        async with client.session.get(f"{client.sim.base_url}/models") as response:
            assert response.status == 200
    error = reply.json()["error"]
    assert (reply.status, error["code"], error["type"]) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )


async def test_slow_adds_the_configured_delay() -> None:
    async with faulty("slow=1,slow_s=0.2") as client:
        started = time.monotonic()
        assert (await client.post("embeddings", EMBED)).status == 200
        assert time.monotonic() - started >= 0.2
    assert client.sim.stats.faults["slow"] == 1


async def test_latency_delays_answers() -> None:
    async with faulty("", latency_ms=30.0) as client:
        started = time.monotonic()
        for _ in range(5):
            assert (await client.post("embeddings", EMBED)).status == 200
        assert time.monotonic() - started >= 0.05


async def test_faults_follow_the_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        async with faulty("500=0.5", seed=seed) as client:
            return [(await client.post("embeddings", EMBED)).status for _ in range(16)]

    assert await statuses(3) == await statuses(3)
    assert {500, 200} <= set(await statuses(3))
