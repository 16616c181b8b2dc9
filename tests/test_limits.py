"""TokenBucket and EndpointLimiter: pause gate, learned limits, concurrency, FIFO admission."""

from __future__ import annotations

import random

import anyio
import pytest

from pipeline._bucket import TokenBucket
from pipeline.clock import SystemClock
from pipeline.llm._limits import EndpointLimiter
from pipeline.llm._values import RateLimitInfo
from pipeline.sim.limits import RateLimiter
from tests.fakes import FakeClock, let_run


def limiter(
    clock: FakeClock,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    in_flight: int = 8,
    max_pause_s: float = 120.0,
) -> EndpointLimiter:
    return EndpointLimiter(
        rpm=rpm, tpm=tpm, max_in_flight=in_flight, clock=clock, max_pause_s=max_pause_s
    )


# --- TokenBucket -----------------------------------------------------------------------------


def test_bucket_starts_full_at_one_burst_of_the_rate() -> None:
    bucket = TokenBucket(600, clock=FakeClock().now, burst_s=2.0)
    assert bucket.rate == 10.0
    assert bucket.capacity == 20.0
    assert bucket.level() == 20.0


def test_bucket_capacity_is_at_least_one() -> None:
    assert TokenBucket(6, clock=FakeClock().now).capacity == 1.0


def test_wait_for_is_exactly_the_missing_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock.now)  # 10/s, capacity 10
    bucket.take(10)
    assert bucket.wait_for(5) == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.wait_for(5) == 0.0
    assert bucket.level() == pytest.approx(5.0)


def test_refill_is_clamped_at_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock.now)
    bucket.take(10)
    clock.advance(3600)
    assert bucket.level() == 10.0


def test_more_than_capacity_is_paid_from_a_full_bucket_and_leaves_a_debt() -> None:
    bucket = TokenBucket(600, clock=FakeClock().now)  # capacity 10
    assert bucket.wait_for(30) == 0.0
    bucket.take(30)
    assert bucket.level() == pytest.approx(-20.0)
    assert bucket.wait_for(10) == pytest.approx(3.0)  # the debt, then a full bucket, at 10/s


def test_refund_returns_tokens_up_to_capacity() -> None:
    bucket = TokenBucket(600, clock=FakeClock().now)
    bucket.take(8)
    bucket.refund(3)
    assert bucket.level() == pytest.approx(5.0)
    bucket.refund(100)
    assert bucket.level() == 10.0


def test_a_bucket_holding_a_share_of_the_servers_keeps_the_rest_as_a_margin() -> None:
    bucket = TokenBucket(600, clock=FakeClock().now, share=0.5)  # the server's bucket holds 10
    assert (bucket.capacity, bucket.margin, bucket.level()) == (5.0, 5.0, 5.0)
    bucket.tighten(7)  # the server has 7 left: 5 of them stay its margin
    assert bucket.level() == 2.0


def test_tighten_lowers_the_level_but_never_raises_it() -> None:
    bucket = TokenBucket(600, clock=FakeClock().now)
    bucket.tighten(3)
    assert bucket.level() == 3.0
    bucket.tighten(8)
    assert bucket.level() == 3.0


async def test_a_request_sleeps_on_the_injected_clock_for_the_tokens_it_lacks() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=1200)  # 20/s; it holds half of the server's 20: 10
    async with lim.slot(10):
        pass
    async with lim.slot(5):
        pass
    assert clock.sleeps == [pytest.approx(0.25)]


# --- EndpointLimiter: a margin below the server's bucket --------------------------------------


async def sent_at_full_speed(
    lim: EndpointLimiter, clock: FakeClock | SystemClock, count: int, tokens: int
) -> list[float]:
    """When each of ``count`` requests of ``tokens`` tokens was let through, one after another."""
    sent: list[float] = []
    for _ in range(count):
        async with lim.slot(tokens):
            sent.append(clock.now())
    return sent


def refused_by_server(
    sent: list[float], *, jitter_s: float, rpm: float | None, tpm: float | None, tokens: int
) -> int:
    """How many of the requests sent at ``sent`` a server with the same limits (the simulator's
    buckets: one second of refill, starting full) refuses when each arrives up to ``jitter_s``
    late (seeded), in the order they arrive."""
    rng = random.Random(0)
    clock = FakeClock()
    server = RateLimiter(rpm=rpm, tpm=tpm, burst_s=1.0, clock=clock.now)
    refused = 0
    for arrival in sorted(at + rng.uniform(0, jitter_s) for at in sent):
        clock.advance(arrival - clock.now())
        refused += not server.admit(tokens).allowed
    return refused


async def test_at_the_configured_rpm_jitter_never_finds_the_servers_bucket_empty() -> None:
    # requests/min run on aiolimiter, on the event loop's clock: real time, kept short; a slow
    # machine only spreads the sends out, which the server's bucket takes more easily
    clock = SystemClock()
    lim = EndpointLimiter(rpm=600, tpm=None, max_in_flight=1000, clock=clock)
    sent: list[float] = []
    for _ in range(2):
        sent += await sent_at_full_speed(lim, clock, 12, 1)
        await anyio.sleep(1.2)
    start = sent[0]
    sent = [at - start for at in sent]
    assert refused_by_server(sent, jitter_s=0.4, rpm=600, tpm=None, tokens=1) == 0


@pytest.mark.parametrize(("rpm", "tpm", "tokens"), [(None, 60_000.0, 100)])
async def test_at_the_configured_limit_jitter_never_finds_the_servers_bucket_empty(
    rpm: float | None, tpm: float | None, tokens: int
) -> None:
    # 10 requests a second either way; the server's bucket holds 10. Load comes and goes: after
    # each idle spell both buckets are full, and a burst from ours followed by requests at the
    # rate would overfill the server's wherever the burst arrives late and the rest on time.
    clock = FakeClock()
    lim = limiter(clock, rpm=rpm, tpm=tpm, in_flight=1000)
    sent: list[float] = []
    for _ in range(5):
        start = clock.now()
        sent += (phase := await sent_at_full_speed(lim, clock, 40, tokens))
        assert 40 / (phase[-1] - start) >= 10.0  # the configured rate, sustained
        await clock.sleep(2.0)
    assert refused_by_server(sent, jitter_s=0.4, rpm=rpm, tpm=tpm, tokens=tokens) == 0


# --- EndpointLimiter: pause gate -------------------------------------------------------------


async def test_pause_holds_new_slots_until_the_time_has_passed() -> None:
    clock = FakeClock(manual=True)
    lim = limiter(clock)
    lim.pause(2.0, reason="test")
    entered: list[float] = []

    async def request() -> None:
        async with lim.slot(1):
            entered.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await let_run()
        assert entered == []
        clock.advance(1.5)
        await let_run()
        assert entered == []
        clock.advance(0.6)
        await let_run()
        assert entered == [pytest.approx(2.1)]


def test_pause_is_capped_at_max_pause() -> None:
    lim = limiter(FakeClock(), max_pause_s=5.0)
    lim.pause(1000.0, reason="test")
    assert lim.state().paused_for_s == 5.0


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    lim = limiter(FakeClock())
    lim.pause(10.0, reason="a")
    lim.pause(1.0, reason="b")
    assert lim.state().paused_for_s == 10.0


# --- EndpointLimiter: learning from headers --------------------------------------------------


def test_observe_learns_unconfigured_limits() -> None:
    lim = limiter(FakeClock())
    lim.observe(RateLimitInfo(limit_requests=600, limit_tokens=60_000))
    state = lim.state()
    assert (state.rpm, state.tpm) == (600.0, 60_000.0)
    assert state.rpm_learned
    assert state.tpm_learned


def test_observe_never_raises_configured_limits() -> None:
    lim = limiter(FakeClock(), rpm=100, tpm=10_000)
    lim.observe(RateLimitInfo(limit_requests=600, limit_tokens=60_000))
    state = lim.state()
    assert (state.rpm, state.tpm) == (100.0, 10_000.0)
    assert not state.rpm_learned
    assert not state.tpm_learned


def test_observe_tightens_configured_limits() -> None:
    lim = limiter(FakeClock(), rpm=100, tpm=10_000)
    lim.observe(RateLimitInfo(limit_requests=50, limit_tokens=5_000))
    assert (lim.state().rpm, lim.state().tpm) == (50.0, 5_000.0)


def test_empty_headers_change_nothing() -> None:
    lim = limiter(FakeClock())
    lim.observe(RateLimitInfo())
    state = lim.state()
    assert (state.rpm, state.tpm, state.paused_for_s) == (None, None, 0.0)


@pytest.mark.parametrize(
    ("info", "pause"),
    [
        (RateLimitInfo(limit_requests=600, remaining_requests=0), 0.1),
        (RateLimitInfo(limit_requests=600, remaining_requests=0, reset_requests_s=0.05), 0.05),
        (RateLimitInfo(limit_requests=600, remaining_requests=0, reset_requests_s=30.0), 0.1),
        (RateLimitInfo(remaining_requests=0, reset_requests_s=0.3), 0.3),
    ],
)
def test_no_requests_remaining_pauses_about_one_request_refill(
    info: RateLimitInfo, pause: float
) -> None:
    lim = limiter(FakeClock())
    lim.observe(info)
    assert lim.state().paused_for_s == pytest.approx(pause)


def test_requests_remaining_does_not_pause() -> None:
    lim = limiter(FakeClock())
    lim.observe(RateLimitInfo(limit_requests=600, remaining_requests=1))
    assert lim.state().paused_for_s == 0.0


async def test_remaining_tokens_tighten_the_token_bucket() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)  # 100 tokens/s; the server's bucket holds 100, ours 50
    lim.observe(RateLimitInfo(remaining_tokens=70))  # 50 of them stay the server's margin
    async with lim.slot(50):
        pass
    assert clock.sleeps == [pytest.approx(0.3)]


async def test_settle_refunds_only_what_was_taken_and_unused() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)  # 100 tokens/s, capacity 100
    async with lim.slot(500):  # an estimate over capacity takes the whole bucket (100)
        pass
    lim.settle_tokens(500, 40)  # 60 of the 100 taken were not used
    async with lim.slot(100):
        pass
    assert clock.sleeps == [pytest.approx(0.4)]


async def test_settle_refunds_nothing_when_all_was_used() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)
    async with lim.slot(50):
        pass
    lim.settle_tokens(50, 80)
    async with lim.slot(100):
        pass
    assert clock.sleeps == [pytest.approx(0.5)]


# --- EndpointLimiter: concurrency and order --------------------------------------------------


async def test_max_in_flight_bounds_concurrency() -> None:
    lim = limiter(FakeClock(), in_flight=2)
    release = anyio.Event()
    current = peak = 0

    async def request() -> None:
        nonlocal current, peak
        async with lim.slot(1):
            current += 1
            peak = max(peak, current)
            await release.wait()
            current -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(request)
        await let_run()
        assert current == 2
        release.set()
    assert peak == 2


async def test_a_large_request_is_not_starved_by_later_small_ones() -> None:
    clock = FakeClock(manual=True)
    lim = limiter(clock, tpm=600)  # 10 tokens/s, capacity 10
    async with lim.slot(10):  # drain the bucket
        pass
    order: list[str] = []

    async def request(name: str, tokens: int) -> None:
        async with lim.slot(tokens):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request, "big", 10)
        await let_run()
        for i in range(5):
            tg.start_soon(request, f"small{i}", 1)
        await let_run()
        while len(order) < 6:
            clock.advance(0.05)
            await let_run()
    assert order == ["big", "small0", "small1", "small2", "small3", "small4"]


async def test_rpm_lets_half_the_servers_burst_through_at_once_then_the_rate() -> None:
    clock = SystemClock()
    lim = EndpointLimiter(rpm=600, tpm=None, max_in_flight=100, clock=clock)
    # 10 a second; the server's bucket holds 10, ours 5: 5 at once, then 10 more at 10 a second
    # (holding the server's whole bucket, the 15 would take 0.5 s)
    sent = await sent_at_full_speed(lim, clock, 15, 1)
    assert sent[-1] - sent[0] >= 0.9


async def test_a_learned_request_limit_starts_as_empty_as_the_server_says() -> None:
    clock = SystemClock()
    lim = EndpointLimiter(rpm=None, tpm=None, max_in_flight=50, clock=clock)
    # 1,200 RPM = 20 a second: the server's bucket holds 20 (ours 10); it has 12 left, 10 of
    # them its margin: 2 go at once, then 20 a second (started full, 6 would go at once)
    lim.observe(RateLimitInfo(limit_requests=1200, remaining_requests=12))
    sent = await sent_at_full_speed(lim, clock, 6, 1)
    assert sent[-1] - sent[0] >= 0.18


async def test_a_request_takes_no_rate_capacity_while_it_waits_for_a_slot() -> None:
    clock = FakeClock(manual=True)
    limiter = EndpointLimiter(rpm=None, tpm=1200, max_in_flight=1, clock=clock)  # 10 tokens
    release = anyio.Event()

    async def holder() -> None:
        async with limiter.slot(1):
            await release.wait()

    async def waiter() -> None:
        async with limiter.slot(5):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await let_run()
        tg.start_soon(waiter)
        await let_run()
        # capacity taken now would be spent in a burst later, when the slot frees up
        assert limiter.state().tokens_available == 9
        release.set()
    assert limiter.state().tokens_available == 4


async def entered(limiter: EndpointLimiter, requests: int, *, answer: bool) -> tuple[int, int]:
    """How many of ``requests`` concurrent requests got a slot at once, and how many after the
    first answer is observed (when ``answer``)."""
    inside = 0
    release = anyio.Event()

    async def request() -> None:
        nonlocal inside
        async with limiter.slot(1):
            inside += 1
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(requests):
            tg.start_soon(request)
        await let_run()
        before = inside
        if answer:
            limiter.observe(RateLimitInfo())  # the first answer, with or without headers
            await let_run()
        after = inside
        release.set()
    return before, after


async def test_an_unlimited_endpoint_sends_a_few_probes_until_its_first_answer() -> None:
    limiter = EndpointLimiter(rpm=None, tpm=None, max_in_flight=50, clock=SystemClock())
    assert await entered(limiter, 20, answer=True) == (8, 20)


async def test_configured_limits_need_no_probing() -> None:
    limiter = EndpointLimiter(rpm=6000, tpm=None, max_in_flight=50, clock=SystemClock())
    assert await entered(limiter, 20, answer=False) == (20, 20)
