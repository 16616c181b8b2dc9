"""A distributed run's jobs and journal in Redis.

One run is a handful of keys under ``gpo:run:{RUN}:``: ``spec`` (what a worker needs to join:
the config's path and the simulator's address), ``jobs`` (a stream with the consumer group
``workers``: one entry a job still to end), ``journal`` (a list of journal lines, the events of
every worker in the order they were stored) and ``done`` (set when the coordinator is finished).
The set ``gpo:runs`` names the runs open for workers to join.

A worker takes entries with ``XREADGROUP``; an entry stays pending (owned by that worker) until
the job's ``ended`` event is in the journal, then it is acknowledged and deleted, so the stream's
length is the number of jobs not yet ended. A worker renews its entries every third of
``reclaim_s``; an entry idle for longer (its worker died or lost Redis) is taken over by another
worker with ``XAUTOCLAIM`` and resumed from the journal.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

from pipeline.coord._conn import retrying

if TYPE_CHECKING:
    from redis.asyncio import Redis

GROUP = "workers"
RUNS = "gpo:runs"
CHUNK = 10_000
"""Journal lines a ``LRANGE`` (and jobs a pipelined ``XADD``)."""

_KEEP = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100000, ARGV[2])
local mine = {}
for _, entry in ipairs(pending) do mine[entry[1]] = true end
local kept = {}
for i = 3, #ARGV do
  if mine[ARGV[i]] then table.insert(kept, ARGV[i]) end
end
if #kept > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(kept))
end
return kept
"""
"""Renew this consumer's entries among those named (reset their idle time); the ones still its
own. Atomic: an entry another worker took over is never taken back."""


@dataclass(frozen=True, slots=True)
class Taken:
    """A job taken from the stream: its entry id, its name, and whether it must resume from the
    journal (taken over from another worker, or begun by an earlier session of the run)."""

    entry: str
    job: str
    resume: bool


def _key(run: str, what: str) -> str:
    return f"gpo:run:{run}:{what}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobQueue:
    """One process's handle on a distributed run (coordinator or worker)."""

    def __init__(
        self, redis: Redis, *, url: str, run: str, consumer: str, reclaim_s: float = 30.0
    ) -> None:
        self._redis = redis
        self._url = url
        self.run = run
        self.consumer = consumer
        self.reclaim_s = reclaim_s
        self._stream = _key(run, "jobs")
        self._journal = _key(run, "journal")
        self._keep = redis.register_script(_KEEP)

    async def _do(self, what: str, exchange: Any) -> Any:
        return await retrying(exchange, url=self._url, what=what)

    # -- the coordinator's side --------------------------------------------------------------

    async def publish(self, spec: dict[str, Any]) -> None:
        """Open the run for workers: its spec, and its name in ``gpo:runs``."""

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_key(self.run, "spec"), orjson.dumps(spec))
                pipe.delete(_key(self.run, "done"))
                pipe.sadd(RUNS, self.run)
                await pipe.execute()

        await self._do("publishing the run", go)

    async def enqueue(self, jobs: Sequence[tuple[str, bool]]) -> None:
        """Replace the run's stream by these ``(job, resume)`` entries, in order."""

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._stream)
                pipe.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
                for job, resume in jobs:
                    pipe.xadd(self._stream, {"job": job, "resume": "1" if resume else "0"})
                await pipe.execute()

        await self._do("queueing the jobs", go)

    async def seed(self, lines: Sequence[bytes]) -> int:
        """Replace the run's journal by ``lines`` (the history of jobs resumed); its length."""

        async def go() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._journal)
                for start in range(0, len(lines), CHUNK):
                    pipe.rpush(self._journal, *lines[start : start + CHUNK])
                await pipe.execute()
            return int(await self._redis.llen(self._journal))

        return cast(int, await self._do("seeding the journal", go))

    async def remaining(self) -> int:
        """Jobs not yet ended (queued or in work)."""
        return int(await self._do("counting jobs", lambda: self._redis.xlen(self._stream)))

    async def finish(self) -> None:
        """Close the run: workers leave, and it is no longer offered to join."""

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_key(self.run, "done"), b"1")
                pipe.srem(RUNS, self.run)
                await pipe.execute()

        await self._do("closing the run", go)

    # -- the worker's side -------------------------------------------------------------------

    @staticmethod
    async def runs(redis: Redis, *, url: str) -> list[str]:
        """The runs open for workers, by name."""
        members = await retrying(lambda: redis.smembers(RUNS), url=url, what="listing runs")
        return sorted(_text(m) for m in members)

    async def spec(self) -> dict[str, Any] | None:
        raw = await self._do("reading the run", lambda: self._redis.get(_key(self.run, "spec")))
        return None if raw is None else cast(dict[str, Any], orjson.loads(raw))

    async def done(self) -> bool:
        found = await self._do(
            "reading the run", lambda: self._redis.exists(_key(self.run, "done"))
        )
        return bool(found)

    async def take(self, count: int, *, block_s: float = 1.0) -> list[Taken]:
        """Up to ``count`` jobs: first those idle for ``reclaim_s`` (their worker stopped
        renewing them), then new ones, waiting up to ``block_s`` for any."""
        taken = await self._reclaim(count)
        if len(taken) < count:
            taken += await self._read(count - len(taken), block_s if not taken else 0.0)
        return taken

    async def _reclaim(self, count: int) -> list[Taken]:
        reply = await self._do(
            "taking over jobs",
            lambda: self._redis.xautoclaim(
                self._stream, GROUP, self.consumer, int(self.reclaim_s * 1000), "0-0", count=count
            ),
        )
        return [_taken(entry, fields, True) for entry, fields in reply[1] if fields]

    async def _read(self, count: int, block_s: float) -> list[Taken]:
        block = int(block_s * 1000) or None
        reply = await self._do(
            "taking jobs",
            lambda: self._redis.xreadgroup(
                GROUP, self.consumer, {self._stream: ">"}, count=count, block=block
            ),
        )
        return [_taken(e, f, False) for _, entries in reply or [] for e, f in entries]

    async def keep(self, taken: Sequence[Taken]) -> list[Taken]:
        """Renew ``taken``; the ones another worker has taken over (lost to this one)."""
        if not taken:
            return []
        ids = [t.entry for t in taken]
        kept = await self._do(
            "renewing jobs",
            lambda: self._keep(keys=[self._stream], args=[GROUP, self.consumer, *ids]),
        )
        mine = {_text(k) for k in kept}
        return [t for t in taken if t.entry not in mine]

    async def ack(self, taken: Taken) -> None:
        """The job ended (its ``ended`` event is in the journal): off the stream for good."""

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, GROUP, taken.entry)
                pipe.xdel(self._stream, taken.entry)
                await pipe.execute()

        await self._do("acknowledging a job", go)

    # -- the journal ---------------------------------------------------------------------------

    async def append(self, lines: Sequence[bytes]) -> None:
        """Store journal lines (returns once Redis acknowledged them)."""
        if lines:
            await self._do("writing the journal", lambda: self._redis.rpush(self._journal, *lines))

    async def read(self, start: int = 0) -> list[bytes]:
        """The journal's lines from index ``start`` on."""
        lines: list[bytes] = []
        while True:
            first = start + len(lines)
            chunk = await self._do(
                "reading the journal",
                functools.partial(self._redis.lrange, self._journal, first, first + CHUNK - 1),
            )
            lines += chunk
            if len(chunk) < CHUNK:
                return lines


def _taken(entry: Any, fields: dict[Any, Any], reclaimed: bool) -> Taken:
    values = {_text(k): _text(v) for k, v in fields.items()}
    return Taken(
        entry=_text(entry), job=values["job"], resume=reclaimed or values.get("resume") == "1"
    )
