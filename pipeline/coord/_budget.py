"""Budget accounts shared by several processes over Redis: **spend never exceeds a cap across
processes**.

Each account (``run:<id>``, ``job:<id>:<job>``, ``team:<name>``, ``endpoint:...``) is the hash
``gpo:budget:<account>`` of four integers: spent and reserved pico-dollars (``sp``, ``rp``) and
tokens (``st``, ``rt``). Every change is one atomic Lua script, so no two processes can both fit
a reservation into the last room under a cap:

* :meth:`SharedAccounts.reserve` checks, for every account a call is held in, that spent +
  reserved + the new worst case stays within each cap, and only then adds it to ``reserved`` in
  all of them and records the reservation under the session (``gpo:res:<session>``, field
  ``rid`` -> JSON ``[pusd, tokens, account key, ...]``).
* a settlement (:meth:`~SharedAccounts.settle_soon`) moves the reservation to ``spent`` at the
  real amounts; settling an unknown (or already settled) reservation does nothing, so a retried
  exchange never counts twice.
* a session is alive while its key ``gpo:live:<session>`` (PX ``ttl_s``, refreshed every
  ``heartbeat_s``) exists; :meth:`~SharedAccounts.reap` charges the open reservations of dead
  sessions **in full** (their calls may have been billed) and forgets them, in one script, so
  any number of processes may reap at once without charging twice.

**Caps.** Redis keeps the cap each live session last passed for an account
(``gpo:caps:<account>``, field session -> ``"pusd tokens"``, ``-`` for none) and a reservation
must fit under *every* one of them: the tightest cap of any running process holds (the minimum),
from its first reservation in that account. A session's caps are forgotten when it closes or is
reaped, so a resumed run with a raised cap is not held to the old one.

**Exact integers.** Redis's Lua numbers are doubles (exact only up to 2**53 pico-dollars, about
9,007 USD), so the scripts never add amounts as numbers: Redis adds them (``HINCRBY`` on the
decimal strings, 64-bit), and the cap checks compare sums of 9-digit limbs.

**Write-ahead.** :meth:`~SharedAccounts.reserve` returns only once Redis acknowledged the script,
so the reservation exists before its request leaves. That acknowledgement survives a crash of
the Redis host only with ``appendonly yes`` and ``appendfsync always`` (Redis 7.0 has no
``WAITAOF``; with ``everysec`` up to a second of acknowledged reservations can be lost, and a
failover to an asynchronous replica can lose them too). Only a standalone Redis (or a primary) is
supported: the scripts touch keys named in the data, which Redis Cluster does not allow.

**Redis away.** Every exchange goes through :func:`pipeline.coord._conn.retrying`. A settlement
that could not be written stays queued for the next :meth:`~SharedAccounts.flush`; if it never
is, its reservation stays open and is reaped in full once the session is dead: spend can be
over-counted, never under-counted.

**Run lock.** :meth:`~SharedAccounts.lock` takes ``gpo:lock:<name>`` for this session with the
same ``ttl_s``, refreshed by the heartbeat: a dead holder's lock expires by itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from pipeline._log import get_logger
from pipeline.coord._conn import retrying

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger("gpo.coord")
T = TypeVar("T")

SESSIONS = "gpo:sessions"
"""The set of sessions that may hold reservations or caps (what :meth:`reap` looks at)."""
LIVE = "gpo:live:"
RESERVATIONS = "gpo:res:"
CAPS_OF = "gpo:capsof:"
_MAX = 2**62
"""Amounts above this are refused in Python: Redis's 64-bit counters must never overflow."""

_LIB = """
local B = 1000000000
-- a decimal string (or false: 0) as {high, low} limbs of 9 digits, each exact in a double
local function num(s)
  s = s or '0'
  local sign = 1
  if string.sub(s, 1, 1) == '-' then sign = -1; s = string.sub(s, 2) end
  local n = #s
  local hi = 0
  if n > 9 then hi = tonumber(string.sub(s, 1, n - 9)) end
  return {sign * hi, sign * tonumber(string.sub(s, math.max(1, n - 8)))}
end
-- whether the sum of the limb pairs in parts is <= cap (a limb pair of a number >= 0)
local function fits(parts, cap)
  local hi, lo = 0, 0
  for _, p in ipairs(parts) do hi = hi + p[1]; lo = lo + p[2] end
  local carry = math.floor(lo / B)
  hi = hi + carry; lo = lo - carry * B
  return hi < cap[1] or (hi == cap[1] and lo <= cap[2])
end
local function neg(s)
  if s == '0' then return '0' end
  return '-' .. s
end
-- a reservation record {pusd, tokens, account key...} becomes spend of (pusd, tokens)
local function settle(record, pusd, tokens)
  for i = 3, #record do
    redis.call('HINCRBY', record[i], 'rp', neg(record[1]))
    redis.call('HINCRBY', record[i], 'rt', neg(record[2]))
    redis.call('HINCRBY', record[i], 'sp', pusd)
    redis.call('HINCRBY', record[i], 'st', tokens)
  end
end
local function forget_caps(session, caps_of)
  for _, caps in ipairs(redis.call('SMEMBERS', caps_of)) do redis.call('HDEL', caps, session) end
  redis.call('DEL', caps_of)
end
"""

_RESERVE = (
    _LIB
    + """
-- KEYS: reservations, sessions, caps-of, then (account, caps) per hold
-- ARGV: session, rid, pusd, tokens, record, then "cap_pusd cap_tokens" per hold
local session, rid = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[1], rid) == 1 then return nil end  -- held already (a retry)
redis.call('SADD', KEYS[2], session)
local holds = (#KEYS - 3) / 2
for h = 1, holds do
  redis.call('HSET', KEYS[3 + 2 * h], session, ARGV[5 + h])
  redis.call('SADD', KEYS[3], KEYS[3 + 2 * h])
end
local new_pusd, new_tokens = num(ARGV[3]), num(ARGV[4])
for h = 1, holds do
  local t = redis.call('HMGET', KEYS[2 + 2 * h], 'sp', 'rp', 'st', 'rt')
  local pusd = {num(t[1]), num(t[2]), new_pusd}
  local tokens = {num(t[3]), num(t[4]), new_tokens}
  for _, c in ipairs(redis.call('HVALS', KEYS[3 + 2 * h])) do
    local cp, ct = string.match(c, '^(%S+) (%S+)$')
    if (cp ~= '-' and not fits(pusd, num(cp))) or (ct ~= '-' and not fits(tokens, num(ct))) then
      local open = 0
      if (t[2] or '0') ~= '0' or (t[4] or '0') ~= '0' then open = 1 end
      return {h, open}
    end
  end
end
for h = 1, holds do
  redis.call('HINCRBY', KEYS[2 + 2 * h], 'rp', ARGV[3])
  redis.call('HINCRBY', KEYS[2 + 2 * h], 'rt', ARGV[4])
end
redis.call('HSET', KEYS[1], rid, ARGV[5])
return nil
"""
)

_SETTLE = (
    _LIB
    + """
-- KEYS: reservations; ARGV: rid, pusd, tokens
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
settle(cjson.decode(record), ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
)

_REAP = (
    _LIB
    + """
-- KEYS: sessions; ARGV: prefixes of the liveness, reservations and caps-of keys
local reaped = 0
for _, s in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. s) == 0 then
    for _, rec in ipairs(redis.call('HVALS', ARGV[2] .. s)) do
      local record = cjson.decode(rec)
      settle(record, record[1], record[2])
      reaped = reaped + 1
    end
    redis.call('DEL', ARGV[2] .. s)
    forget_caps(s, ARGV[3] .. s)
    redis.call('SREM', KEYS[1], s)
  end
end
return reaped
"""
)

_HEARTBEAT = """
-- KEYS: liveness, then the locks held; ARGV: session, ttl ms. Returns {was alive, lost locks}
local was = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET')
local lost = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i - 1
  end
end
local alive = 0
if was then alive = 1 end
return {alive, lost}
"""

_LOCK = """
-- KEYS: lock; ARGV: session, ttl ms. nil when held by session now, else the holder
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return nil
"""

_UNLOCK = """
-- KEYS: locks; ARGV: session. Deletes those this session holds
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
"""

_CLOSE = (
    _LIB
    + """
-- KEYS: liveness, caps-of, reservations, sessions; ARGV: session
redis.call('DEL', KEYS[1])
forget_caps(ARGV[1], KEYS[2])
if redis.call('HLEN', KEYS[3]) == 0 then redis.call('SREM', KEYS[4], ARGV[1]) end
return 0
"""
)


@dataclass(frozen=True, slots=True)
class Hold:
    """One account a reservation must fit in, with the caps this process sets on it (None:
    no cap from this process)."""

    account: str
    cap_pusd: int | None
    cap_tokens: int | None

    def __post_init__(self) -> None:
        for cap in (self.cap_pusd, self.cap_tokens):
            if cap is not None and not 0 <= cap < _MAX:
                raise ValueError(f"a cap of {self.account} must be in [0, 2**62), got {cap}")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first account it does not fit in. ``others_open``:
    reservations are open there (they may settle for less: wait and try again); False: the
    account is exhausted."""

    account: str
    others_open: bool


@dataclass(frozen=True, slots=True)
class AccountTotals:
    """One account as Redis holds it now (pico-dollars and tokens)."""

    spent_pusd: int
    spent_tokens: int
    reserved_pusd: int
    reserved_tokens: int


def budget_key(account: str) -> str:
    """The Redis hash of ``account``."""
    return f"gpo:budget:{account}"


def caps_key(account: str) -> str:
    """The Redis hash of the caps live sessions set on ``account``."""
    return f"gpo:caps:{account}"


def lock_key(name: str) -> str:
    """The Redis key of the lock ``name``."""
    return f"gpo:lock:{name}"


class SharedAccounts:
    """The budget accounts of one session (one process) over a shared Redis. Call :meth:`start`
    first and :meth:`close` last. One event loop; :meth:`settle_soon` is synchronous."""

    def __init__(
        self,
        redis: Redis,
        *,
        url: str,
        session: str,
        heartbeat_s: float = 2.0,
        ttl_s: float = 10.0,
    ) -> None:
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"need 0 < heartbeat_s < ttl_s, got {heartbeat_s} and {ttl_s}")
        self.session = session
        self._redis = redis
        self._url = url
        self._heartbeat_s = heartbeat_s
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._live = LIVE + session
        self._reservations = RESERVATIONS + session
        self._caps_of = CAPS_OF + session
        self._scripts = {
            name: redis.register_script(source)
            for name, source in (
                ("reserve", _RESERVE),
                ("settle", _SETTLE),
                ("reap", _REAP),
                ("heartbeat", _HEARTBEAT),
                ("lock", _LOCK),
                ("unlock", _UNLOCK),
                ("close", _CLOSE),
            )
        }
        self._queue: list[tuple[str, int, int]] = []
        self._wake = anyio.Event()
        self._flushing = anyio.Lock()
        self._locks: set[str] = set()
        self._background = anyio.CancelScope()
        self._beaten = False

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Register the session (its liveness key), reap dead sessions once, and start the
        heartbeat (which also reaps) and the flusher of settlements in ``tg``. Either raises
        :class:`~pipeline.coord._conn.CoordinationError` into ``tg`` when Redis stays away."""
        await self._beat()
        await self.reap()
        tg.start_soon(self._run_background)

    async def reserve(
        self, rid: str, holds: Sequence[Hold], pusd: int, tokens: int
    ) -> Refusal | None:
        """Hold ``pusd`` and ``tokens`` in every account of ``holds``, or nothing at all. None:
        held, and acknowledged by Redis. ``rid`` must be new in this session (a reservation
        already held under ``rid`` counts as held: that is how a retried exchange is safe). If
        this raises or is cancelled, the reservation may or may not be held: ``settle_soon(rid,
        0, 0)`` releases it either way."""
        _check_amounts(pusd, tokens)
        accounts = [h.account for h in holds]
        if len(set(accounts)) != len(accounts):
            raise ValueError(f"an account is held twice: {accounts}")
        record = json.dumps([str(pusd), str(tokens), *map(budget_key, accounts)])
        keys = [self._reservations, SESSIONS, self._caps_of]
        keys += [k for a in accounts for k in (budget_key(a), caps_key(a))]
        args = [self.session, rid, pusd, tokens, record, *map(_caps_arg, holds)]
        reply = await self._run("reserve", keys, args)
        if reply is None:
            return None
        index, others_open = reply
        return Refusal(accounts[int(index) - 1], bool(int(others_open)))

    def settle_soon(self, rid: str, pusd: int, tokens: int) -> None:
        """Queue the settlement of ``rid`` at the real amounts (counted as is, even above the
        reservation); the flusher writes it within milliseconds. Unknown ``rid``: no effect."""
        _check_amounts(pusd, tokens)
        self._queue.append((rid, pusd, tokens))
        self._wake.set()

    async def flush(self) -> None:
        """Write every queued settlement now (and wait for one being written)."""
        async with self._flushing:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._retrying(functools.partial(self._settle_batch, batch))
                except BaseException:
                    self._queue[:0] = batch  # for a later flush; else reaped in full
                    raise

    async def spent(self, account: str) -> AccountTotals:
        """The totals of ``account`` now."""
        reply = await self._retrying(
            lambda: self._redis.hmget(budget_key(account), ["sp", "st", "rp", "rt"])
        )
        sp, st, rp, rt = (int(v or 0) for v in reply)
        return AccountTotals(spent_pusd=sp, spent_tokens=st, reserved_pusd=rp, reserved_tokens=rt)

    async def reap(self) -> int:
        """Charge in full, and forget, the open reservations of sessions whose liveness key has
        expired; how many. Atomic: concurrent reapers never charge one twice."""
        args = [LIVE, RESERVATIONS, CAPS_OF]
        return int(await self._run("reap", [SESSIONS], args))

    async def close(self) -> None:
        """Stop the heartbeat, write queued settlements, release this session's locks and end
        it (any reservation still open is reaped in full later, as a dead session's)."""
        self._background.cancel()
        with anyio.CancelScope(shield=True):
            await self.flush()
            await self._release(sorted(self._locks))
            keys = [self._live, self._caps_of, self._reservations, SESSIONS]
            await self._run("close", keys, [self.session])

    async def lock(self, name: str) -> str | None:
        """Take the lock ``name`` for this session: **None when this session holds it** (now or
        already), else the session id of its holder. Held while the heartbeat runs; expires
        ``ttl_s`` after this session stops."""
        holder = await self._run("lock", [lock_key(name)], [self.session, self._ttl_ms])
        if holder is None:
            self._locks.add(name)
            return None
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    async def unlock(self, name: str) -> None:
        """Release the lock ``name`` if this session holds it (else nothing)."""
        await self._release([name])

    async def _release(self, names: list[str]) -> None:
        if names:
            await self._run("unlock", [lock_key(n) for n in names], [self.session])
        self._locks.difference_update(names)

    async def _run_background(self) -> None:
        with self._background:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._flush_loop)

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat_s)
            await self._beat()
            await self.reap()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def _beat(self) -> None:
        """Refresh the liveness key and the locks held; log what was lost meanwhile."""
        locks = sorted(self._locks)
        keys = [self._live, *map(lock_key, locks)]
        alive, lost = await self._run("heartbeat", keys, [self.session, self._ttl_ms])
        if not int(alive) and self._beaten:
            log.warning("budget_session_lapsed", session=self.session)  # may have been reaped
        self._beaten = True
        for index in lost:
            name = locks[int(index) - 1]
            self._locks.discard(name)
            log.error("lock_lost", session=self.session, lock=name)

    async def _settle_batch(self, batch: list[tuple[str, int, int]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for rid, pusd, tokens in batch:
                await self._scripts["settle"](
                    [self._reservations], [rid, pusd, tokens], client=pipe
                )
            await pipe.execute()

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, tried again while Redis is away."""
        call = self._scripts[script]
        return await self._retrying(lambda: call(keys, args))

    async def _retrying(self, exchange: Callable[[], Awaitable[T]]) -> T:
        return await retrying(exchange, url=self._url, what="budget")


def _caps_arg(hold: Hold) -> str:
    pusd = "-" if hold.cap_pusd is None else str(hold.cap_pusd)
    tokens = "-" if hold.cap_tokens is None else str(hold.cap_tokens)
    return f"{pusd} {tokens}"


def _check_amounts(pusd: int, tokens: int) -> None:
    if not (0 <= pusd < _MAX and 0 <= tokens < _MAX):
        raise ValueError(f"amounts must be in [0, 2**62), got {pusd} pusd and {tokens} tokens")
