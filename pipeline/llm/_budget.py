"""The budget: reserve the worst case before a call, settle to real usage after.

Amounts are kept as integers (pico-dollars and tokens) so that no float drift can let the sum of
settled calls creep over a cap. A reservation is refused when it does not fit under every cap that
applies (the run's and the job's, in USD and in tokens), so **spend never exceeds a cap** as long
as each call's real usage is within its reservation, which the gateway ensures by reserving a
strict upper bound (see :func:`pipeline.llm._tokens.max_input_tokens`).

:meth:`Budget.acquire` is what the gateway uses just before it sends a request: a reservation
that does not fit *while other reservations are open* waits for them to settle (they usually
cost far less than their worst case), so a cap is spent, not hoarded; only when it does not fit
with nothing open is the budget exhausted. With a :class:`SpendLedger`, every reservation is
durable before :meth:`~Budget.acquire` returns, so a crash can never hide what was sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Protocol

import anyio

from pipeline.errors import BudgetExhausted

_PICO = 10**12
RUN = "run"


@dataclass(frozen=True, slots=True, kw_only=True)
class Caps:
    """Hard caps; None means uncapped."""

    usd: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.usd is not None and self.usd < 0:
            raise ValueError(f"a USD cap must be >= 0, got {self.usd}")
        if self.tokens is not None and self.tokens < 0:
            raise ValueError(f"a token cap must be >= 0, got {self.tokens}")


@dataclass(slots=True)
class _Account:
    cap_pusd: int | None
    cap_tokens: int | None
    spent_pusd: int = 0
    spent_tokens: int = 0
    reserved_pusd: int = 0
    reserved_tokens: int = 0

    def fits(self, pusd: int, tokens: int) -> bool:
        usd_ok = (
            self.cap_pusd is None or self.spent_pusd + self.reserved_pusd + pusd <= self.cap_pusd
        )
        tok_ok = (
            self.cap_tokens is None
            or self.spent_tokens + self.reserved_tokens + tokens <= self.cap_tokens
        )
        return usd_ok and tok_ok

    def hold(self, pusd: int, tokens: int, sign: int) -> None:
        self.reserved_pusd += sign * pusd
        self.reserved_tokens += sign * tokens

    def spend(self, pusd: int, tokens: int) -> None:
        self.spent_pusd += pusd
        self.spent_tokens += tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    scopes: tuple[str, ...]
    pusd: int
    tokens: int


class SpendLedger(Protocol):
    """Durable record of reservations and spend (see :mod:`pipeline.llm._ledger`)."""

    async def opened(self, reservation: Reservation) -> None:
        """Return once ``reservation`` is durable: its request may be sent then."""

    def settled(self, reservation: Reservation, pusd: int, tokens: int) -> None:
        """Replace the open ``reservation`` by real spend (durable with the next commit)."""


class SharedSpend(Protocol):
    """Accounts shared with other processes (``pipeline.coord``, over Redis): the caps hold
    across every process that reserves in them. Scopes are the budget's (``"run"``,
    ``"job:NAME"``); the implementation names them for its store."""

    async def reserve(
        self, rid: str, holds: Sequence[tuple[str, int | None, int | None]], pusd: int, tokens: int
    ) -> tuple[str, bool] | None:
        """Hold ``pusd``/``tokens`` in every ``(scope, cap_pusd, cap_tokens)`` at once, or
        nothing: None when held, else the refusing scope and whether reservations are open
        there (they may settle for less)."""

    def settle_soon(self, rid: str, pusd: int, tokens: int) -> None:
        """Replace reservation ``rid`` by real spend (applied shortly; until then it counts in
        full)."""


SHARED_POLL_S = 0.05
"""How often a reservation refused while others' are open (in any process) tries again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """Spent, reserved and remaining (None when uncapped) for one scope."""

    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None
    spent_tokens: int
    reserved_tokens: int
    remaining_tokens: int | None


@dataclass(slots=True)
class Budget:
    """Caps per run and per job, accounts per run, job and endpoint. Not thread-safe; one loop."""

    run_caps: Caps = field(default_factory=Caps)
    job_caps: Caps = field(default_factory=Caps)
    ledger: SpendLedger | None = None
    """Where reservations are written ahead and settlements recorded (None: memory only)."""
    shared: SharedSpend | None = None
    """Accounts shared with other processes, which then decide what fits (None: this one)."""
    _accounts: dict[str, _Account] = field(default_factory=dict)
    _open: dict[int, Reservation] = field(default_factory=dict)
    _ids: count[int] = field(default_factory=count)
    _settled: anyio.Event | None = None

    def __post_init__(self) -> None:
        self._accounts[RUN] = _account(self.run_caps)

    def set_job_caps(self, job: str, caps: Caps) -> None:
        """Give ``job`` its own caps instead of the default ``job_caps``."""
        account = self._account(f"job:{job}")
        account.cap_pusd, account.cap_tokens = _account(caps).cap_pusd, caps.tokens

    def reserve(
        self, *, usd: float, tokens: int, endpoint: str, job: str | None = None
    ) -> Reservation:
        """Hold a call's worst-case cost, or raise :class:`BudgetExhausted` (nothing held).
        Memory only: the gateway uses :meth:`acquire`."""
        pusd = math.ceil(usd * _PICO)
        scopes = _scopes(endpoint, job)
        refused = self._refusing(scopes, pusd, tokens)
        if refused is not None:
            raise BudgetExhausted(_refusal(refused, usd, tokens), scope=refused)
        return self._hold(scopes, pusd, tokens)

    async def acquire(
        self, *, usd: float, tokens: int, endpoint: str, job: str | None = None
    ) -> Reservation:
        """Reserve for a request about to be sent: wait while it does not fit but reservations
        are open in the scope that refuses it (they will settle); raise :class:`BudgetExhausted`
        when it does not fit with none open there. Durable in the ledger before it returns."""
        pusd = math.ceil(usd * _PICO)
        scopes = _scopes(endpoint, job)
        if self.shared is not None:
            reservation = await self._acquire_shared(self.shared, scopes, pusd, tokens)
            return await self._write_ahead(reservation)
        while (refused := self._refusing(scopes, pusd, tokens)) is not None:
            if (
                not self._account(refused).reserved_pusd
                and not self._account(refused).reserved_tokens
            ):
                raise BudgetExhausted(_refusal(refused, usd, tokens), scope=refused)
            self._settled = self._settled or anyio.Event()
            await self._settled.wait()
        return await self._write_ahead(self._hold(scopes, pusd, tokens))

    async def _write_ahead(self, reservation: Reservation) -> Reservation:
        if self.ledger is not None:
            try:
                await self.ledger.opened(reservation)
            except BaseException:
                self.release(reservation)  # not durable: the request must not be sent
                raise
        return reservation

    async def _acquire_shared(
        self, shared: SharedSpend, scopes: tuple[str, ...], pusd: int, tokens: int
    ) -> Reservation:
        """Reserve in the shared accounts (the caps of every process's spend), waiting while
        reservations are open where it does not fit; held here too, for this process's view."""
        holds = [
            (s, self._account(s).cap_pusd, self._account(s).cap_tokens)
            for s in scopes
            if not s.startswith("endpoint:")
        ]
        rid = next(self._ids)
        while True:
            refused = self._refused_here(scopes, pusd, tokens)
            if refused is None:
                refused = await shared.reserve(str(rid), holds, pusd, tokens)
            if refused is None:
                return self._hold(scopes, pusd, tokens, rid)
            scope, others_open = refused
            if not others_open:
                raise BudgetExhausted(_refusal(scope, pusd / _PICO, tokens), scope=scope)
            await anyio.sleep(SHARED_POLL_S)

    def _refused_here(
        self, scopes: tuple[str, ...], pusd: int, tokens: int
    ) -> tuple[str, bool] | None:
        """What this process's own accounts refuse (they hold what its ledger says was spent,
        which a shared store that lost its data would not)."""
        scope = self._refusing(scopes, pusd, tokens)
        if scope is None:
            return None
        account = self._account(scope)
        return scope, bool(account.reserved_pusd or account.reserved_tokens)

    def usd_capped(self, endpoint: str, job: str | None = None) -> bool:
        """Whether a USD cap applies to a call of ``job`` on ``endpoint``."""
        return any(self._account(s).cap_pusd is not None for s in _scopes(endpoint, job))

    def _refusing(self, scopes: tuple[str, ...], pusd: int, tokens: int) -> str | None:
        return next((s for s in scopes if not self._account(s).fits(pusd, tokens)), None)

    def _hold(
        self, scopes: tuple[str, ...], pusd: int, tokens: int, rid: int | None = None
    ) -> Reservation:
        reservation = Reservation(next(self._ids) if rid is None else rid, scopes, pusd, tokens)
        for scope in scopes:
            self._accounts[scope].hold(pusd, tokens, +1)
        self._open[reservation.id] = reservation
        return reservation

    def settle(self, reservation: Reservation, *, usd: float, tokens: int) -> None:
        """Turn a reservation into real spend (recorded as is, even above the reservation)."""
        if self._open.pop(reservation.id, None) is None:
            return
        pusd = round(usd * _PICO)
        for scope in reservation.scopes:
            account = self._accounts[scope]
            account.hold(reservation.pusd, reservation.tokens, -1)
            account.spend(pusd, tokens)
        if self.ledger is not None:
            self.ledger.settled(reservation, pusd, tokens)
        if self.shared is not None:
            self.shared.settle_soon(str(reservation.id), pusd, tokens)
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def preload(self, spent: Mapping[str, tuple[int, int]]) -> None:
        """Count what earlier runs of the same run directory spent: scope -> (pico-USD, tokens)."""
        for scope, (pusd, tokens) in spent.items():
            self._account(scope).spend(pusd, tokens)

    def settle_in_full(self, reservation: Reservation) -> None:
        """Charge the whole reservation: the call may have been billed but its usage is unknown."""
        self.settle(reservation, usd=reservation.pusd / _PICO, tokens=reservation.tokens)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back untouched: the call was never billed."""
        self.settle(reservation, usd=0.0, tokens=0)

    def state(self, scope: str = RUN) -> AccountState:
        """``"run"``, ``"job:NAME"`` or ``"endpoint:NAME"``."""
        a = self._account(scope)
        return AccountState(
            spent_usd=a.spent_pusd / _PICO,
            reserved_usd=a.reserved_pusd / _PICO,
            remaining_usd=None
            if a.cap_pusd is None
            else max(0, a.cap_pusd - a.spent_pusd - a.reserved_pusd) / _PICO,
            spent_tokens=a.spent_tokens,
            reserved_tokens=a.reserved_tokens,
            remaining_tokens=None
            if a.cap_tokens is None
            else max(0, a.cap_tokens - a.spent_tokens - a.reserved_tokens),
        )

    def scopes(self) -> tuple[str, ...]:
        return tuple(self._accounts)

    @property
    def open_reservations(self) -> int:
        return len(self._open)

    def _account(self, scope: str) -> _Account:
        if scope not in self._accounts:
            caps = self.job_caps if scope.startswith("job:") else Caps()
            self._accounts[scope] = _account(caps)
        return self._accounts[scope]


def _scopes(endpoint: str, job: str | None) -> tuple[str, ...]:
    return (RUN, f"endpoint:{endpoint}") + ((f"job:{job}",) if job is not None else ())


def _account(caps: Caps) -> _Account:
    cap_pusd = None if caps.usd is None else math.floor(caps.usd * _PICO)
    return _Account(cap_pusd=cap_pusd, cap_tokens=caps.tokens)


def _refusal(scope: str, usd: float, tokens: int) -> str:
    return (
        f"budget cap of {scope} reached: a call needing up to ${usd:.6f} "
        f"and {tokens} tokens does not fit"
    )
