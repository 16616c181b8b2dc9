"""One endpoint's requests/min and tokens/min buckets and its endpoint-wide pause, shared in Redis
by every process that uses the endpoint (an account's limit is the server's, not a process's).

The buckets follow :class:`pipeline._bucket.TokenBucket` exactly (refill ``per_minute / 60`` a
second; hold ``share`` of the server's ``burst_s`` of refill; start full; a request larger than
the capacity is paid from a full bucket and leaves debt), but their level and stamp live in a
Redis hash and every change is one Lua script: a process never sees a half-made change, and
taking a request and its tokens is one step (never one without the other). The scripts read the
Redis server's clock (``TIME``; Redis 7 replicates a script's effects, so this is allowed), so
every process refills on one clock.

Limits: each process passes its configured limits; limits learned from headers are shared (the
lowest any process learned), and the effective limit is the lower of the two. Keys expire after
:data:`IDLE_S` of idleness (a bucket in debt only once it is full again), so Redis does not fill
with endpoints nobody uses any more.

Every exchange goes through :func:`~pipeline.coord._conn.retrying`: a restarting Redis is ridden
out. A script whose reply was lost may have run; taking twice is the safe side (slower, never
over the limit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from pipeline.coord._conn import retrying

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

IDLE_S = 300.0
"""Seconds of idleness after which an endpoint's keys expire (a full bucket, no pause)."""

MAX_SLEEP_S = 1.0
"""The longest :meth:`SharedRate.admit` sleeps before asking again, so that a pause or a lower
limit set meanwhile by another process is seen within this time."""

JITTER = 0.1
"""Waiters sleep up to this fraction longer than the refill they need, at random: processes that
need the same refill would otherwise all wake at once, and the one nearest to Redis would win
every time. The refill is not lost meanwhile (the bucket keeps it), only the wake is spread.
"""

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local idle_ms = tonumber(ARGV[5])
local burst, share = tonumber(ARGV[3]), tonumber(ARGV[4])

local function num(s)
  if s == false or s == nil or s == '' then return nil end
  return tonumber(s)
end

local function fmt(x) return string.format('%.17g', x) end

-- the lower of this process's configured limit and the shared learned one (nil: unlimited)
local function effective(configured, field)
  local learned = num(redis.call('HGET', KEYS[4], field))
  if configured == nil then return learned end
  if learned == nil then return configured end
  return math.min(configured, learned)
end

-- the bucket at KEYS[i], refilled to now (full when it has no state)
local function bucket(key, per_minute)
  if per_minute == nil then return nil end
  local rate = per_minute / 60
  local server = math.max(1, rate * burst)
  local cap = math.max(1, server * share)
  local b = {key = key, rate = rate, cap = cap, margin = server - cap, level = cap}
  local v = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = num(v[1]), num(v[2])
  if level ~= nil and stamp ~= nil then
    b.level = math.min(cap, level + math.max(0, now - stamp) * rate)
  end
  return b
end

-- write the level; the key lives until the bucket is full again, plus the idle time
local function save(b)
  redis.call('HSET', b.key, 'level', fmt(b.level), 'stamp', fmt(now))
  local full_ms = math.max(0, (b.cap - b.level) / b.rate) * 1000
  redis.call('PEXPIRE', b.key, math.ceil(full_ms + idle_ms))
end

-- seconds until the bucket can pay amount (a request over the capacity needs a full bucket)
local function wait_for(b, amount)
  local missing = math.min(amount, b.cap) - b.level
  if missing > 1e-9 * b.cap then return missing / b.rate end
  return 0
end

local function paused_for()
  local until_ = num(redis.call('GET', KEYS[3]))
  if until_ == nil or until_ <= now then return 0 end
  return until_ - now
end
"""

_ADMIT = """
local pause = paused_for()
if pause > 0 then return fmt(pause) end
local req = bucket(KEYS[1], effective(num(ARGV[1]), 'rpm'))
local tok = bucket(KEYS[2], effective(num(ARGV[2]), 'tpm'))
local amount = tonumber(ARGV[6])
local wait = 0
if req then wait = math.max(wait, wait_for(req, 1)) end
if tok then wait = math.max(wait, wait_for(tok, amount)) end
if wait > 0 then return fmt(wait) end
if req then req.level = req.level - 1; save(req) end
if tok then tok.level = tok.level - amount; save(tok) end
redis.call('PEXPIRE', KEYS[4], idle_ms)
return '0'
"""

_REFUND = """
local tok = bucket(KEYS[2], effective(num(ARGV[2]), 'tpm'))
if tok then tok.level = math.min(tok.cap, tok.level + tonumber(ARGV[6])); save(tok) end
return 0
"""

_TIGHTEN = """
local tok = bucket(KEYS[2], effective(num(ARGV[2]), 'tpm'))
if tok then tok.level = math.min(tok.level, tonumber(ARGV[6]) - tok.margin); save(tok) end
return 0
"""

_PAUSE = """
local seconds = tonumber(ARGV[6])
local until_ = now + seconds
local current = num(redis.call('GET', KEYS[3]))
if current ~= nil and current >= until_ then return 0 end
redis.call('SET', KEYS[3], fmt(until_), 'PX', math.max(1, math.ceil(seconds * 1000)))
return 1
"""

_LEARN = """
local function lower(field, given)
  if given == nil then return end
  local current = num(redis.call('HGET', KEYS[4], field))
  if current == nil or given < current then redis.call('HSET', KEYS[4], field, fmt(given)) end
end
lower('rpm', num(ARGV[6]))
lower('tpm', num(ARGV[7]))
redis.call('PEXPIRE', KEYS[4], idle_ms)
return 0
"""

_STATE = """
local rpm = effective(num(ARGV[1]), 'rpm')
local tpm = effective(num(ARGV[2]), 'tpm')
local tok = bucket(KEYS[2], tpm)
return {rpm and fmt(rpm) or '', tpm and fmt(tpm) or '', fmt(paused_for()),
        tok and fmt(tok.level) or ''}
"""


@dataclass(frozen=True, slots=True)
class SharedRateState:
    """What an endpoint's shared limits are now, as this process sees them."""

    rpm: float | None
    tpm: float | None
    paused_for_s: float
    tokens_available: float | None


def _arg(value: float | None) -> str:
    """A limit as a script argument ('' is unlimited)."""
    return "" if value is None else repr(float(value))


def _number(raw: bytes | str) -> float | None:
    """A script's float reply ('' is None)."""
    return float(raw) if raw not in (b"", "") else None


class _Scripts:
    """The scripts, registered on one client (EVALSHA, loaded again after a Redis restart)."""

    def __init__(self, redis: Redis) -> None:
        def register(body: str) -> AsyncScript:
            return redis.register_script(_PRELUDE + body)

        self.admit = register(_ADMIT)
        self.refund = register(_REFUND)
        self.tighten = register(_TIGHTEN)
        self.pause = register(_PAUSE)
        self.learn = register(_LEARN)
        self.state = register(_STATE)


class SharedRate:
    """The requests/min and tokens/min buckets and the pause of the endpoint named ``key``,
    shared by every process on the same Redis; ``rpm``/``tpm`` are this process's configured
    limits (None: unlimited unless one is learned)."""

    def __init__(
        self,
        redis: Redis,
        *,
        url: str,
        key: str,
        rpm: float | None,
        tpm: float | None,
        burst_s: float = 1.0,
        share: float = 0.5,
        max_pause_s: float = 120.0,
    ) -> None:
        _check(rpm=rpm, tpm=tpm, burst_s=burst_s, share=share)
        self._url = url
        self._max_pause_s = max_pause_s
        prefix = f"gpo:rate:{key}"
        self._keys = [f"{prefix}:{part}" for part in ("requests", "tokens", "pause", "learned")]
        self._common = [_arg(rpm), _arg(tpm), repr(burst_s), repr(share), str(int(IDLE_S * 1000))]
        self._scripts = _Scripts(redis)

    async def admit(self, tokens: int) -> None:
        """Wait until no pause is active, a request is left and ``tokens`` (at most the
        capacity) are, then take the request and the tokens in one step."""
        while True:
            wait = await self._run(self._scripts.admit, tokens)
            if wait <= 0:
                return
            await anyio.sleep(min(wait, MAX_SLEEP_S) * random.uniform(1.0, 1.0 + JITTER))

    async def refund(self, tokens: int) -> None:
        """Give back tokens taken and not used (up to the capacity)."""
        if tokens > 0:
            await self._run(self._scripts.refund, tokens)

    async def pause(self, seconds: float) -> None:
        """Hold every process's new requests for ``seconds`` (capped at ``max_pause_s``); a
        pause already running longer is kept."""
        seconds = min(seconds, self._max_pause_s)
        if seconds > 0:
            await self._run(self._scripts.pause, seconds)

    async def learn(self, rpm: float | None, tpm: float | None) -> None:
        """Limits a server stated: the shared limits only ever go down, and every process's
        next admission follows them."""
        rpm, tpm = _positive(rpm), _positive(tpm)
        if rpm is not None or tpm is not None:
            await self._run(self._scripts.learn, _arg(rpm), _arg(tpm))

    async def tighten_tokens(self, remaining: float) -> None:
        """The server says only ``remaining`` tokens are left: never believe there are more than
        that, less the margin kept below the server's bucket."""
        await self._run(self._scripts.tighten, remaining)

    async def state(self) -> SharedRateState:
        """The effective limits, the pause left and the shared token level, read in one script
        so that they belong together (for the progress display and LimitState)."""
        raw = await retrying(
            lambda: self._scripts.state(keys=self._keys, args=self._common),
            url=self._url,
            what="rate limit",
        )
        rpm, tpm, paused, tokens = (_number(item) for item in raw)
        return SharedRateState(
            rpm=rpm, tpm=tpm, paused_for_s=paused or 0.0, tokens_available=tokens
        )

    async def _run(self, script: AsyncScript, *args: float | str) -> float:
        """One script with the common arguments and ``args``, retried while Redis is away;
        its reply as a number."""
        argv = [*self._common, *(a if isinstance(a, str) else repr(float(a)) for a in args)]
        reply = await retrying(
            lambda: script(keys=self._keys, args=argv), url=self._url, what="rate limit"
        )
        return float(reply)


def _positive(value: float | None) -> float | None:
    """A stated limit, or None when there is none (a header saying 0 is no limit to learn)."""
    return value if value is not None and value > 0 else None


def _check(*, rpm: float | None, tpm: float | None, burst_s: float, share: float) -> None:
    """Refuse limits the buckets cannot represent, as :class:`~pipeline._bucket.TokenBucket`
    does, before anything reaches Redis."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0 or None, got {value}")
    if burst_s <= 0 or not 0 < share <= 1:
        raise ValueError(f"burst_s must be > 0 and share in (0, 1], got {burst_s}, {share}")
