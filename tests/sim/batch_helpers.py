"""Shared helpers of the batch API tests: a hand-driven clock and a simulator over loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from pipeline.sim.server import SimConfig, Simulator, open_simulator

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


class WordyBrain:
    """Replies with 30 words drawn from ``rng``, then a fixed tail with a stop marker."""

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str:
        words = " ".join(rng.choice(WORDS) for _ in range(30))
        return f"{words} ### tail words"


class HandClock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Harness:
    sim: Simulator
    session: aiohttp.ClientSession
    clock: HandClock

    @property
    def root(self) -> str:
        return self.sim.base_url.removesuffix("/v1")

    async def call(self, method: str, path: str, body: object = None, **kw: Any) -> tuple[int, Any]:
        """``(status, JSON)`` of ``method path`` (``path`` from the root, e.g. ``/v1/batches``)."""
        url = path if path.startswith("http") else self.root + path
        json = None if body is None else body
        async with self.session.request(method, url, json=json, **kw) as response:
            return response.status, await response.json(content_type=None)

    async def raw(self, path: str) -> bytes:
        url = path if path.startswith("http") else self.root + path
        async with self.session.get(url) as response:
            assert response.status == 200, await response.text()
            return await response.read()

    async def jsonl(self, path: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in (await self.raw(path)).splitlines()]

    async def upload(self, lines: Sequence[object], *, raw: bytes | None = None) -> str:
        content = raw if raw is not None else b"".join(orjson.dumps(x) + b"\n" for x in lines)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="in.jsonl", content_type="application/jsonl")
        async with self.session.post(self.root + "/v1/files", data=form) as response:
            assert response.status == 200, await response.text()
            payload = await response.json()
        assert payload["object"] == "file"
        assert payload["bytes"] == len(content)
        return str(payload["id"])

    async def openai_batch(
        self, bodies: Sequence[dict[str, Any]], *, ids: Sequence[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Upload ``bodies`` as a batch input file and create a batch of it."""
        custom_ids = ids if ids is not None else [f"r{i}" for i in range(len(bodies))]
        lines = [line(custom_id, body) for custom_id, body in zip(custom_ids, bodies, strict=True)]
        file_id = await self.upload(lines)
        request = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **extra,
        }
        status, batch = await self.call("POST", "/v1/batches", request)
        assert status == 200, batch
        return dict(batch)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        status, batch = await self.call("GET", f"/v1/batches/{batch_id}")
        assert status == 200, batch
        return dict(batch)


@asynccontextmanager
async def harness(**options: Any) -> AsyncIterator[Harness]:
    clock = HandClock()
    async with (
        open_simulator(SimConfig(**options), brain=WordyBrain(), clock=clock) as sim,
        aiohttp.ClientSession() as session,
    ):
        yield Harness(sim=sim, session=session, clock=clock)


def chat_body(text: str = "Hi there.", **fields: Any) -> dict[str, Any]:
    return {"model": "sim-1", "messages": [{"role": "user", "content": text}], **fields}


def line(custom_id: str, body: object, **fields: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
        **fields,
    }
