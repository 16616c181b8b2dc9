"""Budget: reservations, settlement, caps per run and per job; spend never exceeds a cap."""

from __future__ import annotations

import random
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BudgetExhausted
from pipeline.llm._budget import AccountState, Budget, Caps
from pipeline.llm._pricing import Price
from pipeline.llm._tokens import max_input_tokens
from pipeline.llm._values import ChatRequest, Choice, TransportReply, Usage
from pipeline.llm.transports._fake import FakeTransport
from tests.fakes import FakeClock, endpoint_config, open_test_gateway

# --- units -----------------------------------------------------------------------------------


def test_settle_records_real_spend_and_frees_the_reservation() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    r = budget.reserve(usd=0.5, tokens=500, endpoint="ep")
    budget.settle(r, usd=0.125, tokens=100)
    state = budget.state()
    assert (state.spent_usd, state.spent_tokens) == (0.125, 100)
    assert (state.reserved_usd, state.reserved_tokens) == (0.0, 0)
    assert state.remaining_usd == pytest.approx(0.875)


def test_reservations_count_against_the_cap_until_settled() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    budget.reserve(usd=0.6, tokens=0, endpoint="ep")
    assert budget.state().remaining_usd == pytest.approx(0.4)
    with pytest.raises(BudgetExhausted):
        budget.reserve(usd=0.6, tokens=0, endpoint="ep")


def test_refused_usd_reservation_names_the_run_scope_and_holds_nothing() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    budget.reserve(usd=0.7, tokens=10, endpoint="ep")
    before = budget.state()
    with pytest.raises(BudgetExhausted) as info:
        budget.reserve(usd=0.4, tokens=10, endpoint="ep")
    assert info.value.scope == "run"
    assert budget.state() == before
    assert budget.open_reservations == 1


def test_token_cap_refuses_a_reservation() -> None:
    budget = Budget(run_caps=Caps(tokens=1000))
    budget.reserve(usd=0.0, tokens=900, endpoint="ep")
    with pytest.raises(BudgetExhausted) as info:
        budget.reserve(usd=0.0, tokens=101, endpoint="ep")
    assert info.value.scope == "run"
    budget.reserve(usd=0.0, tokens=100, endpoint="ep")
    assert budget.state().remaining_tokens == 0


def test_default_job_caps_apply_to_each_job_separately() -> None:
    budget = Budget(job_caps=Caps(usd=1.0))
    budget.reserve(usd=0.8, tokens=0, endpoint="ep", job="a")
    with pytest.raises(BudgetExhausted) as info:
        budget.reserve(usd=0.3, tokens=0, endpoint="ep", job="a")
    assert info.value.scope == "job:a"
    budget.reserve(usd=0.8, tokens=0, endpoint="ep", job="b")
    assert budget.state("job:b").reserved_usd == pytest.approx(0.8)


def test_job_refusal_holds_nothing_in_the_run_account() -> None:
    budget = Budget(run_caps=Caps(usd=10.0), job_caps=Caps(usd=1.0))
    with pytest.raises(BudgetExhausted):
        budget.reserve(usd=2.0, tokens=5, endpoint="ep", job="a")
    assert budget.state().reserved_usd == 0.0
    assert budget.state("endpoint:ep").reserved_tokens == 0


def test_calls_without_a_job_ignore_job_caps() -> None:
    budget = Budget(job_caps=Caps(usd=0.1))
    budget.reserve(usd=5.0, tokens=0, endpoint="ep")
    assert budget.state().reserved_usd == pytest.approx(5.0)


def test_set_job_caps_overrides_the_default_for_that_job_only() -> None:
    budget = Budget(job_caps=Caps(usd=1.0))
    budget.set_job_caps("big", Caps(usd=5.0, tokens=50))
    budget.reserve(usd=4.0, tokens=50, endpoint="ep", job="big")
    with pytest.raises(BudgetExhausted) as info:
        budget.reserve(usd=0.0, tokens=1, endpoint="ep", job="big")
    assert info.value.scope == "job:big"
    with pytest.raises(BudgetExhausted):
        budget.reserve(usd=4.0, tokens=0, endpoint="ep", job="small")


def test_settle_in_full_charges_the_whole_reservation() -> None:
    budget = Budget()
    r = budget.reserve(usd=0.25, tokens=300, endpoint="ep", job="a")
    budget.settle_in_full(r)
    for scope in ("run", "job:a", "endpoint:ep"):
        state = budget.state(scope)
        assert (state.spent_usd, state.spent_tokens) == (0.25, 300)
        assert state.reserved_usd == 0.0


def test_release_gives_the_reservation_back_untouched() -> None:
    budget = Budget(run_caps=Caps(usd=1.0, tokens=100))
    r = budget.reserve(usd=0.9, tokens=90, endpoint="ep")
    budget.release(r)
    state = budget.state()
    assert (state.spent_usd, state.spent_tokens) == (0.0, 0)
    assert (state.remaining_usd, state.remaining_tokens) == (1.0, 100)
    assert budget.open_reservations == 0


def test_a_reservation_settles_only_once() -> None:
    budget = Budget()
    r = budget.reserve(usd=0.5, tokens=10, endpoint="ep")
    budget.settle(r, usd=0.1, tokens=5)
    budget.settle_in_full(r)
    budget.release(r)
    assert budget.state().spent_usd == pytest.approx(0.1)
    assert budget.state().spent_tokens == 5


def test_uncapped_scopes_report_no_remaining() -> None:
    budget = Budget()
    budget.reserve(usd=1.0, tokens=1, endpoint="ep")
    state = budget.state()
    assert (state.remaining_usd, state.remaining_tokens) == (None, None)


def test_endpoint_scope_tracks_spend_per_endpoint() -> None:
    budget = Budget()
    budget.settle(budget.reserve(usd=0.2, tokens=2, endpoint="a"), usd=0.2, tokens=2)
    budget.settle(budget.reserve(usd=0.3, tokens=3, endpoint="b"), usd=0.3, tokens=3)
    assert budget.state("endpoint:a").spent_tokens == 2
    assert budget.state("endpoint:b").spent_tokens == 3
    assert budget.state().spent_tokens == 5


def test_a_free_call_fits_under_a_zero_usd_cap() -> None:
    budget = Budget(run_caps=Caps(usd=0.0))
    budget.reserve(usd=0.0, tokens=10, endpoint="ep")
    with pytest.raises(BudgetExhausted):
        budget.reserve(usd=1e-9, tokens=0, endpoint="ep")


@pytest.mark.parametrize("caps", [{"usd": -0.01}, {"tokens": -1}])
def test_negative_caps_are_rejected(caps: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        Caps(**caps)  # type: ignore[arg-type]


# --- property: many concurrent tasks --------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    job: str | None
    input_tokens: int
    output_tokens: int
    used: float
    outcome: str
    checkpoints_before: int
    checkpoints_held: int


_calls = st.builds(
    _Call,
    job=st.sampled_from([None, "a", "b"]),
    input_tokens=st.integers(0, 5000),
    output_tokens=st.integers(0, 5000),
    used=st.floats(0.0, 1.0),
    outcome=st.sampled_from(["settle", "in_full", "release"]),
    checkpoints_before=st.integers(0, 4),
    checkpoints_held=st.integers(0, 4),
)
_usd_caps = st.none() | st.floats(0.0, 0.5, allow_nan=False)
_token_caps = st.none() | st.integers(0, 40_000)
_prices = st.builds(
    Price,
    input_per_mtok=st.floats(0.0, 100.0, allow_nan=False),
    output_per_mtok=st.floats(0.0, 100.0, allow_nan=False),
)


class _Ledger:
    """What the budget must report, kept independently of it."""

    def __init__(self, budget: Budget, caps: dict[str, Caps]) -> None:
        self.budget = budget
        self.caps = caps
        self.spent_usd: dict[str, float] = {}
        self.spent_tokens: dict[str, int] = {}

    def charge(self, scopes: tuple[str, ...], usd: float, tokens: int) -> None:
        for scope in scopes:
            self.spent_usd[scope] = self.spent_usd.get(scope, 0.0) + usd
            self.spent_tokens[scope] = self.spent_tokens.get(scope, 0) + tokens

    def check_caps(self) -> None:
        for scope, caps in self.caps.items():
            state = self.budget.state(scope)
            if caps.usd is not None:
                assert state.spent_usd <= caps.usd
                assert state.spent_usd + state.reserved_usd <= caps.usd + 1e-9
            if caps.tokens is not None:
                assert state.spent_tokens + state.reserved_tokens <= caps.tokens


def _snapshot(budget: Budget) -> dict[str, AccountState]:
    return {scope: budget.state(scope) for scope in budget.scopes()}


async def _one_call(call: _Call, price: Price, ledger: _Ledger, refused: list[str]) -> None:
    budget = ledger.budget
    for _ in range(call.checkpoints_before):
        await anyio.lowlevel.checkpoint()
    usd = price.cost(call.input_tokens, call.output_tokens)
    tokens = call.input_tokens + call.output_tokens
    before = _snapshot(budget)
    try:
        r = budget.reserve(usd=usd, tokens=tokens, endpoint="ep", job=call.job)
    except BudgetExhausted as exc:
        after = _snapshot(budget)
        assert {s: after[s] for s in before} == before, "a refusal held something"
        state = before.get(exc.scope) or budget.state(exc.scope)
        no_usd = state.remaining_usd is not None and state.remaining_usd < usd + 1e-12
        no_tokens = state.remaining_tokens is not None and state.remaining_tokens < tokens
        assert no_usd or no_tokens, "a reservation that fits was refused"
        refused.append(exc.scope)
        return
    ledger.check_caps()
    for _ in range(call.checkpoints_held):
        await anyio.lowlevel.checkpoint()
    if call.outcome == "settle":
        real_in, real_out = int(call.input_tokens * call.used), int(call.output_tokens * call.used)
        real_usd = price.cost(real_in, real_out)
        budget.settle(r, usd=real_usd, tokens=real_in + real_out)
        ledger.charge(r.scopes, real_usd, real_in + real_out)
    elif call.outcome == "in_full":
        budget.settle_in_full(r)
        ledger.charge(r.scopes, usd, tokens)
    else:
        budget.release(r)
    ledger.check_caps()


@settings(max_examples=150, deadline=None, database=None)
@given(
    price=_prices,
    run_caps=st.builds(Caps, usd=_usd_caps, tokens=_token_caps),
    job_caps=st.builds(Caps, usd=_usd_caps, tokens=_token_caps),
    b_caps=st.none() | st.builds(Caps, usd=_usd_caps, tokens=_token_caps),
    calls=st.lists(_calls, min_size=1, max_size=40),
)
def test_concurrent_spend_never_exceeds_a_cap(
    price: Price, run_caps: Caps, job_caps: Caps, b_caps: Caps | None, calls: list[_Call]
) -> None:
    budget = Budget(run_caps=run_caps, job_caps=job_caps)
    caps = {"run": run_caps, "job:a": job_caps, "job:b": b_caps or job_caps}
    if b_caps is not None:
        budget.set_job_caps("b", b_caps)
    ledger = _Ledger(budget, caps)
    refused: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(_one_call, call, price, ledger, refused)

    anyio.run(main)

    ledger.check_caps()
    assert budget.open_reservations == 0
    for scope in budget.scopes():
        state = budget.state(scope)
        assert (state.reserved_usd, state.reserved_tokens) == (0.0, 0)
        assert state.spent_tokens == ledger.spent_tokens.get(scope, 0)
        assert state.spent_usd == pytest.approx(ledger.spent_usd.get(scope, 0.0), abs=1e-9)


# --- property: through the gateway ----------------------------------------------------------


@settings(max_examples=25, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    calls=st.integers(4, 40),
    price=st.builds(
        Price,
        input_per_mtok=st.floats(0.01, 50.0, allow_nan=False),
        output_per_mtok=st.floats(0.01, 50.0, allow_nan=False),
    ),
    cap_fraction=st.floats(0.05, 0.5),
)
def test_gateway_spend_stays_under_a_small_usd_cap(
    seed: int, calls: int, price: Price, cap_fraction: float
) -> None:
    rng = random.Random(seed)
    requests = [
        ChatRequest.of(
            f"question {i} " + "x" * rng.randint(0, 300),
            n=rng.randint(1, 3),
            max_tokens=rng.randint(1, 200),
        )
        for i in range(calls)
    ]
    worst = sum(
        price.cost(max_input_tokens(r.messages), r.n * (r.max_tokens or 0)) for r in requests
    )
    cap = worst * cap_fraction

    async def handler(request: ChatRequest) -> TransportReply:
        for _ in range(rng.randint(1, 4)):
            await anyio.lowlevel.checkpoint()
        assert request.max_tokens is not None
        usage = Usage(
            input_tokens=rng.randint(0, max_input_tokens(request.messages)),
            output_tokens=rng.randint(0, request.n * request.max_tokens),
        )
        choices = tuple(Choice(text=f"answer {i}") for i in range(request.n))
        return TransportReply(choices=choices, usage=usage)

    budget = Budget(run_caps=Caps(usd=cap))
    refused: list[int] = []
    costs: list[float] = []

    async def main() -> None:
        async with open_test_gateway(
            FakeTransport(chat=handler),
            config=endpoint_config(price=price),
            clock=FakeClock(),
            budget=budget,
        ) as gateway:

            async def one(i: int) -> None:
                try:
                    costs.append((await gateway.chat("ep", requests[i])).cost_usd)
                except BudgetExhausted:
                    refused.append(i)

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(one, i)

    anyio.run(main)

    state = budget.state()
    assert state.spent_usd <= cap
    for i in refused:  # refused only when its worst case did not fit with nothing in flight
        request = requests[i]
        assert request.max_tokens is not None
        worst_i = price.cost(max_input_tokens(request.messages), request.n * request.max_tokens)
        assert worst_i > cap - state.spent_usd
    assert (state.reserved_usd, state.reserved_tokens) == (0.0, 0)
    assert budget.open_reservations == 0
    assert state.spent_usd == pytest.approx(sum(costs), abs=1e-9)


# --- acquire: reserve just before sending, wait while others may still free room ---------------


async def test_acquire_waits_for_open_reservations_then_fits() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    first = await budget.acquire(usd=0.8, tokens=0, endpoint="ep")
    got: list[float] = []

    async def second() -> None:
        got.append((await budget.acquire(usd=0.5, tokens=0, endpoint="ep")).pusd / 1e12)

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.lowlevel.checkpoint()
        assert got == []  # does not fit while the first is open, but is not refused either
        budget.settle(first, usd=0.1, tokens=0)  # the first cost far less than its worst case
    assert got == [0.5]


async def test_acquire_is_refused_when_it_does_not_fit_with_nothing_open() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    budget.settle(await budget.acquire(usd=0.9, tokens=0, endpoint="ep"), usd=0.8, tokens=0)
    with pytest.raises(BudgetExhausted) as info:
        await budget.acquire(usd=0.5, tokens=0, endpoint="ep")
    assert info.value.scope == "run"
    assert budget.open_reservations == 0


async def test_waiters_are_refused_once_the_last_open_reservation_leaves_no_room() -> None:
    budget = Budget(run_caps=Caps(usd=1.0))
    first = await budget.acquire(usd=0.8, tokens=0, endpoint="ep")
    refused: list[str] = []

    async def waiter() -> None:
        try:
            await budget.acquire(usd=0.5, tokens=0, endpoint="ep", job="a")
        except BudgetExhausted as exc:
            refused.append(exc.scope)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await anyio.lowlevel.checkpoint()
        budget.settle(first, usd=0.75, tokens=0)
    assert refused == ["run", "run"]


async def test_a_job_waits_only_on_its_own_open_reservations() -> None:
    budget = Budget(job_caps=Caps(usd=1.0))
    await budget.acquire(usd=0.8, tokens=0, endpoint="ep", job="other")  # never settled
    mine = await budget.acquire(usd=0.8, tokens=0, endpoint="ep", job="mine")
    budget.settle(mine, usd=0.8, tokens=0)
    with pytest.raises(BudgetExhausted) as info:  # nothing of its own open: refused at once
        await budget.acquire(usd=0.5, tokens=0, endpoint="ep", job="mine")
    assert info.value.scope == "job:mine"


def test_a_cap_is_spent_not_hoarded_by_calls_waiting_for_a_slot() -> None:
    """Many concurrent calls, few slots, real usage a tenth of the worst case: the run stops
    only when the next call's worst case does not fit with nothing in flight."""
    price = Price(input_per_mtok=1.0, output_per_mtok=1.0)
    requests = [ChatRequest.of(f"question {i}", max_tokens=1000) for i in range(200)]
    worst = price.cost(max_input_tokens(requests[0].messages), 1000)
    cap = 8 * worst

    async def handler(request: ChatRequest) -> TransportReply:
        await anyio.lowlevel.checkpoint()
        return TransportReply(
            choices=(Choice(text="42"),), usage=Usage(input_tokens=10, output_tokens=90)
        )

    budget = Budget(run_caps=Caps(usd=cap))
    refused: list[int] = []

    async def main() -> None:
        async with open_test_gateway(
            FakeTransport(chat=handler),
            config=endpoint_config(price=price, max_in_flight=4),
            clock=FakeClock(),
            budget=budget,
        ) as gateway:

            async def one(i: int) -> None:
                try:
                    await gateway.chat("ep", requests[i])
                except BudgetExhausted:
                    refused.append(i)

            async with anyio.create_task_group() as tg:
                for i in range(len(requests)):
                    tg.start_soon(one, i)

    anyio.run(main)
    spent = budget.state().spent_usd
    assert spent <= cap
    assert spent > cap - worst  # refused only when even one more worst case did not fit
    assert refused
