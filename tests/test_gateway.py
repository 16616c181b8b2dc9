"""The gateway over FakeTransport: retries, pauses, n top-up, cache, single-flight, budget."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from pipeline import errors as e
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._cache import MemoryCache, open_sqlite_cache
from pipeline.llm._endpoint import RetryPolicy
from pipeline.llm._gateway import open_gateway
from pipeline.llm._samples import sample_seed
from pipeline.llm._tokens import max_input_tokens
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    EmbeddingReply,
    EmbeddingRequest,
    Message,
    TransportReply,
    Usage,
)
from pipeline.llm.transports._fake import FakeTransport
from pipeline.llm.transports._openai import parse_chat
from tests.fakes import (
    PRICE,
    Blocking,
    FakeClock,
    Scripted,
    endpoint_config,
    fewer_choices,
    let_run,
    open_test_gateway,
    reply,
)

REQUEST = ChatRequest.of("What is 2+2?", system="Be brief.", max_tokens=16, seed=5)


def transient(kind: type[e.LLMError]) -> e.LLMError:
    return kind("transient failure", endpoint="ep")


def worst_case_usd(request: ChatRequest) -> float:
    assert request.max_tokens is not None
    return PRICE.cost(max_input_tokens(request.messages), request.n * request.max_tokens)


def worst_case_tokens(request: ChatRequest) -> int:
    assert request.max_tokens is not None
    return max_input_tokens(request.messages) + request.n * request.max_tokens


# --- the request as sent ---------------------------------------------------------------------


async def test_model_and_max_tokens_default_to_the_endpoint_config() -> None:
    fake = FakeTransport()
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", ChatRequest.of("Hi"))
    sent = fake.requests[0]
    assert isinstance(sent, ChatRequest)
    assert (sent.model, sent.max_tokens) == ("test-model", 16)
    assert completion.model == "test-model"


async def test_n_choices_come_from_one_request() -> None:
    fake = FakeTransport()
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
    assert len(fake.requests) == 1
    assert len(completion.choices) == 3
    assert (completion.requests, completion.attempts, completion.cached) == (1, 1, False)


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        e.RateLimited,
        e.ServerError,
        e.ConnectionFailed,
        e.MalformedResponse,
        e.RequestTimeout,
        e.Overloaded,
        e.Conflict,
    ],
)
async def test_transient_errors_are_retried_until_success(kind: type[e.LLMError]) -> None:
    fake = FakeTransport(chat=Scripted(transient(kind), transient(kind)))
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", REQUEST)
        stats = gw.statistics()["ep"]
    assert len(fake.requests) == 3
    assert completion.attempts == 3
    assert stats.retries == {kind.reason: 2}  # type: ignore[attr-defined]
    assert stats.failures == 0


async def test_persistent_transient_errors_end_in_retries_exhausted() -> None:
    fake = FakeTransport(chat=Scripted(*(transient(e.ServerError) for _ in range(10))))
    async with open_test_gateway(fake) as gw:
        with pytest.raises(e.RetriesExhausted) as info:
            await gw.chat("ep", REQUEST)
        stats = gw.statistics()["ep"]
    assert len(fake.requests) == 4  # max_attempts
    assert isinstance(info.value.__cause__, e.ServerError)
    assert not info.value.retryable
    assert stats.retries == {"server_error": 3}
    assert stats.failures == 1


async def test_no_wait_after_the_last_attempt() -> None:
    clock = FakeClock()
    fake = FakeTransport(chat=Scripted(*(transient(e.ServerError) for _ in range(10))))
    async with open_test_gateway(fake, clock=clock) as gw:
        with pytest.raises(e.RetriesExhausted):
            await gw.chat("ep", REQUEST)
    assert len(clock.sleeps) == 3  # between attempts 1-2, 2-3 and 3-4 only


@pytest.mark.parametrize(
    "error",
    [
        e.BadRequest("bad", endpoint="ep", status=400),
        e.AuthenticationFailed("no key", endpoint="ep", status=401),
        e.PermissionDenied("no", endpoint="ep", status=403),
        e.NotFound("no model", endpoint="ep", status=404),
        e.QuotaExceeded("quota", endpoint="ep", status=429, code="insufficient_quota"),
    ],
)
async def test_fatal_errors_are_not_retried(error: e.LLMError) -> None:
    clock = FakeClock()
    fake = FakeTransport(chat=Scripted(error))
    async with open_test_gateway(fake, clock=clock) as gw:
        with pytest.raises(type(error)):
            await gw.chat("ep", REQUEST)
        stats = gw.statistics()["ep"]
    assert len(fake.requests) == 1
    assert clock.sleeps == []
    assert (stats.retries, stats.failures) == ({}, 1)


async def test_every_retry_sends_an_identical_request() -> None:
    fake = FakeTransport(
        chat=Scripted(
            transient(e.ServerError), transient(e.RateLimited), transient(e.MalformedResponse)
        )
    )
    request = ChatRequest.of(
        "Q", model="", n=2, temperature=0.7, top_p=0.9, seed=42, stop=("END",), max_tokens=8
    )
    async with open_test_gateway(fake) as gw:
        await gw.chat("ep", request)
    assert len(fake.requests) == 4
    first = fake.requests[0]
    assert isinstance(first, ChatRequest)
    assert first == request.with_(model="test-model")
    assert all(sent == first for sent in fake.requests)


async def test_backoff_between_attempts_is_capped_exponential() -> None:
    clock = FakeClock()
    config = endpoint_config(retry=RetryPolicy(max_attempts=6, base_s=1.0, cap_s=4.0))
    fake = FakeTransport(chat=Scripted(*(transient(e.ServerError) for _ in range(5))))
    async with open_test_gateway(fake, config=config, clock=clock) as gw:
        await gw.chat("ep", REQUEST)
    assert len(clock.sleeps) == 5
    for attempt, wait in enumerate(clock.sleeps, start=1):
        assert 0.0 <= wait <= min(4.0, 2 ** (attempt - 1))


async def test_a_server_retry_after_is_waited_out_and_capped() -> None:
    clock = FakeClock()
    fake = FakeTransport(
        chat=Scripted(
            e.ServerError("busy", endpoint="ep", retry_after=3.0),
            e.ServerError("busy", endpoint="ep", retry_after=500.0),
        )
    )
    async with open_test_gateway(fake, clock=clock) as gw:
        await gw.chat("ep", REQUEST)
    assert clock.sleeps == [3.0, 10.0]  # retry_after_cap_s is 10


async def test_a_429_with_retry_after_pauses_the_whole_endpoint() -> None:
    clock = FakeClock(manual=True)
    script = Scripted(
        e.RateLimited("slow down", endpoint="ep", status=429, retry_after=2.0), clock=clock
    )
    fake = FakeTransport(chat=script)
    results: list[str] = []
    async with open_test_gateway(fake, clock=clock) as gw:

        async def call(prompt: str) -> None:
            results.append((await gw.chat("ep", ChatRequest.of(prompt))).text)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first")
            await let_run()
            assert len(fake.requests) == 1
            assert gw.limiter("ep").state().paused_for_s >= 2.0
            tg.start_soon(call, "second")  # another request, after the 429
            await let_run()
            assert len(fake.requests) == 1
            clock.advance(1.9)
            await let_run()
            assert len(fake.requests) == 1
            clock.advance(0.3)  # past 2 s plus at most 5 % jitter
            await let_run()
        assert gw.statistics()["ep"].rate_limited == 1
    assert len(fake.requests) == 3
    assert script.sent_at[0] == 0.0
    assert all(t >= 2.0 for t in script.sent_at[1:])
    assert sorted(results) == ["echo 0: first", "echo 0: second"]


async def test_a_429_without_retry_after_still_pauses_the_endpoint() -> None:
    clock = FakeClock(manual=True)
    fake = FakeTransport(chat=Scripted(e.RateLimited("slow down", endpoint="ep")))
    async with open_test_gateway(fake, clock=clock) as gw, anyio.create_task_group() as tg:
        tg.start_soon(gw.chat, "ep", REQUEST)
        await let_run()
        assert gw.limiter("ep").state().paused_for_s > 0.0
        assert len(fake.requests) == 1
        clock.advance(1.0)  # attempt 1 backoff is at most base_s (0.5) plus jitter
        await let_run()
    assert len(fake.requests) == 2


async def test_a_429_on_the_last_attempt_still_pauses_the_endpoint() -> None:
    config = endpoint_config(retry=RetryPolicy(max_attempts=1))
    fake = FakeTransport(chat=Scripted(e.RateLimited("slow down", endpoint="ep", retry_after=2.0)))
    async with open_test_gateway(fake, config=config) as gw:
        with pytest.raises(e.RetriesExhausted):
            await gw.chat("ep", REQUEST)
        assert gw.limiter("ep").state().paused_for_s == 2.0
        assert gw.statistics()["ep"].retries == {}


# --- n and top-ups ---------------------------------------------------------------------------


async def test_fewer_choices_than_n_are_topped_up_with_new_seeds() -> None:
    fake = FakeTransport(chat=fewer_choices(1))
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
    sent = [(r.n, r.seed) for r in fake.requests if isinstance(r, ChatRequest)]
    assert sent == [(3, 5), (2, sample_seed(5, 1)), (1, sample_seed(5, 2))]
    assert len(completion.choices) == 3
    assert len(set(completion.texts)) == 3
    assert completion.requests == 3


async def test_top_up_asks_only_for_the_remaining_choices() -> None:
    fake = FakeTransport(chat=fewer_choices(2))
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
    assert [r.n for r in fake.requests if isinstance(r, ChatRequest)] == [3, 1]
    assert len(completion.choices) == 3


async def test_extra_choices_beyond_n_are_dropped() -> None:
    fake = FakeTransport(chat=Scripted(reply("a", "b", "c", "d")))
    async with open_test_gateway(fake) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=2))
    assert completion.texts == ("a", "b")


async def test_without_n_support_each_choice_is_its_own_request() -> None:
    fake = FakeTransport()
    async with open_test_gateway(fake, config=endpoint_config(supports_n=False)) as gw:
        completion = await gw.chat("ep", REQUEST.with_(n=3))
    sent = [(r.n, r.seed) for r in fake.requests if isinstance(r, ChatRequest)]
    assert sent == [(1, 5), (1, sample_seed(5, 1)), (1, sample_seed(5, 2))]
    assert len(completion.choices) == 3


def test_sample_seed() -> None:
    assert sample_seed(5, 0) == 5
    assert sample_seed(None, 3) is None
    seeds = {sample_seed(5, i) for i in range(1, 100)}
    assert len(seeds) == 99
    assert all(s is not None and 0 <= s < 2**31 for s in seeds)
    assert sample_seed(5, 1) == sample_seed(5, 1) != sample_seed(6, 1)


# --- cache -----------------------------------------------------------------------------------


async def test_a_repeated_call_is_served_from_the_cache_for_free() -> None:
    fake = FakeTransport()
    async with open_test_gateway(fake) as gw:
        first = await gw.chat("ep", REQUEST)
        again = await gw.chat("ep", REQUEST)
        stats = gw.statistics()["ep"]
    assert len(fake.requests) == 1
    assert first.cost_usd > 0
    assert not first.cached
    assert again.cached
    assert (again.cost_usd, again.usage, again.requests) == (0.0, Usage(), 0)
    assert again.choices == first.choices
    assert stats.cache_hits == 1


async def test_samples_are_cached_per_index() -> None:
    fake = FakeTransport(chat=fewer_choices(5))
    async with open_test_gateway(fake) as gw:
        three = await gw.chat("ep", REQUEST.with_(n=3, temperature=1.0))
        two = await gw.chat("ep", REQUEST.with_(n=2, temperature=1.0))
        assert len(fake.requests) == 1
        four = await gw.chat("ep", REQUEST.with_(n=4, temperature=1.0))
    assert two.cached
    assert two.choices == three.choices[:2]
    sent = [(r.n, r.seed) for r in fake.requests if isinstance(r, ChatRequest)]
    assert sent == [(3, 5), (1, sample_seed(5, 3))]
    assert four.choices[:3] == three.choices
    assert not four.cached


async def test_a_null_content_reply_is_retried_and_never_cached() -> None:
    bodies = [
        b'{"choices": [{"index": 0, "message": {"content": null}, "finish_reason": "stop"}]}',
        b'{"choices": [{"index": 0, "message": {"content": "4"}, "finish_reason": "stop"}]}',
    ]
    fake = FakeTransport(chat=lambda _: parse_chat(bodies.pop(0), {}, endpoint="ep"))
    cache = MemoryCache()
    # Not empty: an empty MemoryCache is falsy, and open_gateway's `cache or MemoryCache()` would
    # put a fresh one in its place.
    await cache.put_many({"unrelated": b"{}"})
    async with open_test_gateway(fake, cache=cache) as gw:
        completion = await gw.chat("ep", REQUEST)
    assert [c.text for c in completion.choices] == ["4"]
    assert len(fake.requests) == 2
    assert len(cache) == 2  # the unrelated entry and the good answer, nothing for the null one
    async with open_test_gateway(FakeTransport(), cache=cache) as gw:
        again = await gw.chat("ep", REQUEST)
    assert again.cached
    assert again.choices == (Choice(text="4", finish_reason="stop"),)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other-model"},
        {"messages": (Message(role="user", content="What is 2+3?"),)},
        {"messages": (Message(role="system", content="What is 2+2?"),)},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"max_tokens": 17},
        {"seed": 6},
        {"seed": None},
        {"stop": ("\n",)},
    ],
)
async def test_changing_any_request_field_misses_the_cache(change: dict[str, object]) -> None:
    fake = FakeTransport()
    base = ChatRequest.of("What is 2+2?", max_tokens=16, seed=5)
    async with open_test_gateway(fake) as gw:
        await gw.chat("ep", base)
        changed = await gw.chat("ep", base.with_(**change))
    assert len(fake.requests) == 2
    assert not changed.cached


async def test_a_sqlite_cache_replays_a_finished_run_for_free(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with (
        open_sqlite_cache(path) as cache,
        open_test_gateway(FakeTransport(), cache=cache) as gw,
    ):
        first = await gw.chat("ep", REQUEST.with_(n=2))
    fake = FakeTransport()
    async with open_sqlite_cache(path) as cache, open_test_gateway(fake, cache=cache) as gw:
        again = await gw.chat("ep", REQUEST.with_(n=2))
    assert fake.requests == []
    assert again.cached
    assert again.choices == first.choices


async def test_identical_concurrent_chats_send_one_request() -> None:
    handler = Blocking()
    fake = FakeTransport(chat=handler)
    budget = Budget()
    async with open_test_gateway(fake, budget=budget) as gw:
        completions = []

        async def call() -> None:
            completions.append(await gw.chat("ep", REQUEST))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
            await let_run()
            handler.release.set()
    assert len(fake.requests) == 1
    assert len(completions) == 20
    assert sum(not c.cached for c in completions) == 1
    assert sum(c.cost_usd for c in completions) == pytest.approx(budget.state().spent_usd)
    assert len({c.choices for c in completions}) == 1


# --- embeddings ------------------------------------------------------------------------------


def embed_handler(request: EmbeddingRequest) -> EmbeddingReply:
    return EmbeddingReply(
        vectors=tuple((float(len(t)), float(ord(t[0]))) for t in request.inputs),
        usage=Usage(input_tokens=len(request.inputs)),
    )


async def test_embeddings_are_cached_per_text() -> None:
    fake = FakeTransport(embed=embed_handler)
    async with open_test_gateway(fake) as gw:
        first = await gw.embed("ep", ["alpha", "beta"])
        second = await gw.embed("ep", ["beta", "gamma", "alpha"])
    assert [r.inputs for r in fake.requests if isinstance(r, EmbeddingRequest)] == [
        ("alpha", "beta"),
        ("gamma",),
    ]
    assert second.vectors == (first.vectors[1], (5.0, 103.0), first.vectors[0])
    assert not second.cached


async def test_fully_cached_embeddings_send_nothing() -> None:
    fake = FakeTransport(embed=embed_handler)
    async with open_test_gateway(fake) as gw:
        await gw.embed("ep", ["alpha"])
        again = await gw.embed("ep", ["alpha", "alpha"])
    assert len(fake.requests) == 1
    assert again.cached
    assert again.cost_usd == 0.0
    assert again.vectors == ((5.0, 97.0), (5.0, 97.0))


async def test_duplicate_texts_are_sent_once() -> None:
    fake = FakeTransport(embed=embed_handler)
    async with open_test_gateway(fake) as gw:
        result = await gw.embed("ep", ["a", "b", "a"])
    assert [r.inputs for r in fake.requests if isinstance(r, EmbeddingRequest)] == [("a", "b")]
    assert result.vectors[0] == result.vectors[2]


async def test_an_embeddings_reply_of_the_wrong_length_fails() -> None:
    def short(request: EmbeddingRequest) -> EmbeddingReply:
        return EmbeddingReply(vectors=((1.0,),), usage=None)

    async with open_test_gateway(FakeTransport(embed=short)) as gw:
        with pytest.raises(e.RetriesExhausted, match="asked for 2 embeddings, got 1"):
            await gw.embed("ep", ["a", "b"])


# --- budget ----------------------------------------------------------------------------------


async def test_real_usage_is_charged_when_reported() -> None:
    usage = Usage(input_tokens=20, output_tokens=7)
    budget = Budget()
    fake = FakeTransport(chat=Scripted(reply("4", usage=usage)))
    async with open_test_gateway(fake, budget=budget) as gw:
        completion = await gw.chat("ep", REQUEST, job="j")
    assert completion.usage == usage
    assert completion.cost_usd == pytest.approx(PRICE.cost(20, 7))
    assert budget.state("job:j").spent_usd == pytest.approx(PRICE.cost(20, 7))
    assert budget.state().spent_tokens == 27


async def test_missing_usage_charges_the_whole_reservation() -> None:
    budget = Budget()
    fake = FakeTransport(chat=Scripted(TransportReply(choices=reply("4").choices, usage=None)))
    async with open_test_gateway(fake, budget=budget) as gw:
        completion = await gw.chat("ep", REQUEST)
    state = budget.state()
    assert state.spent_usd == pytest.approx(worst_case_usd(REQUEST))
    assert state.spent_tokens == worst_case_tokens(REQUEST)
    assert completion.cost_usd == pytest.approx(worst_case_usd(REQUEST))
    assert (state.reserved_usd, budget.open_reservations) == (0.0, 0)


async def test_maybe_billed_failures_charge_each_reservation() -> None:
    budget = Budget()
    billed = e.ConnectionFailed("dropped mid-answer", endpoint="ep", maybe_billed=True)
    config = endpoint_config(retry=RetryPolicy(max_attempts=2, base_s=0.0, cap_s=0.0))
    fake = FakeTransport(chat=Scripted(billed, billed))
    async with open_test_gateway(fake, config=config, budget=budget) as gw:
        with pytest.raises(e.RetriesExhausted):
            await gw.chat("ep", REQUEST)
    state = budget.state()
    assert state.spent_usd == pytest.approx(2 * worst_case_usd(REQUEST))
    assert (state.reserved_usd, budget.open_reservations) == (0.0, 0)


@pytest.mark.parametrize(
    "error",
    [e.ConnectionFailed("refused", endpoint="ep"), e.BadRequest("bad", endpoint="ep")],
)
async def test_failures_that_were_not_billed_release_the_reservation(error: e.LLMError) -> None:
    budget = Budget()
    config = endpoint_config(retry=RetryPolicy(max_attempts=2, base_s=0.0, cap_s=0.0))
    fake = FakeTransport(chat=Scripted(error, error))
    async with open_test_gateway(fake, config=config, budget=budget) as gw:
        with pytest.raises(e.LLMError):
            await gw.chat("ep", REQUEST)
    state = budget.state()
    assert (state.spent_usd, state.spent_tokens, state.reserved_usd) == (0.0, 0, 0.0)
    assert budget.open_reservations == 0


async def test_a_call_over_the_cap_is_refused_before_sending() -> None:
    budget = Budget(run_caps=Caps(usd=worst_case_usd(REQUEST) / 2))
    fake = FakeTransport()
    async with open_test_gateway(fake, budget=budget) as gw:
        with pytest.raises(e.BudgetExhausted) as info:
            await gw.chat("ep", REQUEST)
    assert info.value.scope == "run"
    assert fake.requests == []


async def test_a_job_cap_refuses_only_that_jobs_calls() -> None:
    budget = Budget(job_caps=Caps(tokens=worst_case_tokens(REQUEST)))
    budget.set_job_caps("poor", Caps(tokens=1))
    async with open_test_gateway(FakeTransport(), budget=budget) as gw:
        with pytest.raises(e.BudgetExhausted) as info:
            await gw.chat("ep", REQUEST, job="poor")
        await gw.chat("ep", REQUEST, job="rich")
    assert info.value.scope == "job:poor"


async def test_a_call_cancelled_in_flight_is_charged_in_full() -> None:
    budget = Budget()
    handler = Blocking()
    fake = FakeTransport(chat=handler)
    async with open_test_gateway(fake, budget=budget) as gw, anyio.create_task_group() as tg:
        tg.start_soon(gw.chat, "ep", REQUEST)
        await let_run()
        assert handler.entered == 1
        tg.cancel_scope.cancel()
    state = budget.state()
    assert state.spent_usd == pytest.approx(worst_case_usd(REQUEST))
    assert (state.reserved_usd, budget.open_reservations) == (0.0, 0)


async def test_a_call_waiting_for_rate_capacity_holds_no_budget() -> None:
    clock = FakeClock(manual=True)
    budget = Budget()
    fake = FakeTransport()
    async with open_test_gateway(fake, clock=clock, budget=budget) as gw:
        gw.limiter("ep").pause(10.0, reason="test")
        async with anyio.create_task_group() as tg:
            tg.start_soon(gw.chat, "ep", REQUEST)
            await let_run()
            assert budget.open_reservations == 0  # it reserves only when about to be sent
            tg.cancel_scope.cancel()
    assert fake.requests == []
    state = budget.state()
    assert (state.spent_usd, state.reserved_usd, budget.open_reservations) == (0.0, 0.0, 0)


# --- configuration ---------------------------------------------------------------------------


async def test_an_unknown_endpoint_is_a_config_error_naming_the_known_ones() -> None:
    async with open_test_gateway(FakeTransport()) as gw:
        with pytest.raises(e.ConfigError, match=r"unknown endpoint 'nope' \(configured: ep\)"):
            await gw.chat("nope", REQUEST)
        with pytest.raises(e.ConfigError):
            await gw.embed("nope", ["a"])


async def test_duplicate_endpoint_names_are_a_config_error() -> None:
    a, b = endpoint_config(), endpoint_config(model="other")
    fakes = {"ep": FakeTransport()}
    with pytest.raises(e.ConfigError, match="unique"):
        async with open_gateway([a, b], transports=fakes):
            pass


async def test_transports_are_closed_when_the_gateway_closes() -> None:
    fake = FakeTransport()
    async with open_test_gateway(fake) as gw:
        assert gw.endpoints == ("ep",)
        assert not fake.closed
    assert fake.closed


async def test_a_cache_shared_by_two_gateways_is_keyed_by_endpoint_kind() -> None:
    cache = MemoryCache()
    async with open_test_gateway(FakeTransport(), cache=cache) as gw:
        await gw.chat("ep", REQUEST.with_(model="shared-model"))
    fake = FakeTransport()
    config = endpoint_config(kind="anthropic")
    async with open_test_gateway(fake, cache=cache, config=config) as gw:
        await gw.chat("ep", REQUEST.with_(model="shared-model"))
    assert len(fake.requests) == 1


# --- usage that a server under-reports ---------------------------------------------------------


async def test_usage_of_one_choice_of_n_is_raised_to_what_the_texts_used() -> None:
    text = "The answer follows from adding the two numbers given. So the answer is 42."

    def one_choice_usage(request: ChatRequest) -> TransportReply:  # as llama.cpp's server does
        choices = tuple(Choice(text=text) for _ in range(request.n))
        return TransportReply(choices=choices, usage=Usage(input_tokens=30, output_tokens=18))

    budget = Budget()
    async with open_test_gateway(FakeTransport(chat=one_choice_usage), budget=budget) as gw:
        done = await gw.chat("ep", ChatRequest.of("what is 40 + 2?", n=4, max_tokens=100))
        stats = gw.statistics()["ep"]
    assert done.usage.output_tokens >= 4 * len(text) // 5  # at least what 4 such texts use
    assert done.usage.input_tokens == 30
    assert stats.usage_raised == 1
    assert stats.usage_raised_tokens == done.usage.output_tokens - 18
    assert budget.state().spent_tokens == done.usage.total


async def test_usage_of_one_choice_of_n_scales_by_the_servers_own_tokens_per_character() -> None:
    # llama.cpp's server reports the first choice's tokens; the other choices' tokens follow
    # from their lengths at that choice's tokens per character, not from a generic floor
    first, other = "x" * 40, "y" * 120  # 10 tokens for 40 characters: 4 characters a token

    def one_choice_usage(request: ChatRequest) -> TransportReply:
        choices = (Choice(text=first), Choice(text=other), Choice(text=other))
        return TransportReply(choices=choices, usage=Usage(input_tokens=5, output_tokens=10))

    async with open_test_gateway(FakeTransport(chat=one_choice_usage)) as gw:
        done = await gw.chat("ep", ChatRequest.of("go", n=3, max_tokens=100))
    assert done.usage.output_tokens == 10 + 30 + 30


async def test_usage_of_n_choices_reported_in_full_is_not_scaled() -> None:
    texts = ("a" * 40, "b" * 40)

    def full_usage(request: ChatRequest) -> TransportReply:
        choices = tuple(Choice(text=t) for t in texts)
        return TransportReply(choices=choices, usage=Usage(input_tokens=5, output_tokens=20))

    async with open_test_gateway(FakeTransport(chat=full_usage)) as gw:
        done = await gw.chat("ep", ChatRequest.of("go", n=2, max_tokens=100))
        assert gw.statistics()["ep"].usage_raised == 0
    assert done.usage.output_tokens == 20


async def test_usage_of_a_single_choice_is_taken_as_reported() -> None:
    def short_usage(request: ChatRequest) -> TransportReply:
        return TransportReply(
            choices=(Choice(text="x" * 400),), usage=Usage(input_tokens=3, output_tokens=1)
        )

    async with open_test_gateway(FakeTransport(chat=short_usage)) as gw:
        done = await gw.chat("ep", ChatRequest.of("hi", max_tokens=200))
        assert gw.statistics()["ep"].usage_raised == 0
    assert done.usage == Usage(input_tokens=3, output_tokens=1)


async def test_an_empty_cache_given_to_two_gateways_is_shared() -> None:
    cache = MemoryCache()  # empty, so falsy: it must still be the one used
    async with open_test_gateway(FakeTransport(), cache=cache) as gw:
        await gw.chat("ep", REQUEST)
    assert len(cache) == 1
    fake = FakeTransport()
    async with open_test_gateway(fake, cache=cache) as gw:
        assert (await gw.chat("ep", REQUEST)).cached
    assert fake.requests == []


# --- prices --------------------------------------------------------------------------------------


async def test_a_usd_cap_with_an_unknown_price_is_refused_before_any_call() -> None:
    config = endpoint_config(model="my-local-llama", price=None, base_url="http://127.0.0.1:9/v1")
    fake = FakeTransport()
    with pytest.raises(e.ConfigError, match=r"'ep'.*'my-local-llama'.*price"):
        async with open_test_gateway(fake, config=config, budget=Budget(run_caps=Caps(usd=1.0))):
            pass
    budget = Budget(job_caps=Caps(usd=1.0))
    with pytest.raises(e.ConfigError, match="no price is known"):
        async with open_test_gateway(fake, config=config, budget=budget):
            pass
    assert fake.requests == []


async def test_a_job_cap_in_usd_on_an_unpriced_endpoint_is_refused_at_its_first_call() -> None:
    config = endpoint_config(model="my-local-llama", price=None, base_url="http://127.0.0.1:9/v1")
    fake = FakeTransport()
    budget = Budget()
    async with open_test_gateway(fake, config=config, budget=budget) as gw:
        await gw.chat("ep", REQUEST, job="uncapped")  # no USD cap applies: allowed
        budget.set_job_caps("capped", Caps(usd=1.0))
        with pytest.raises(e.ConfigError, match="no price is known"):
            await gw.chat("ep", ChatRequest.of("another"), job="capped")
    assert len(fake.requests) == 1


async def test_a_model_the_price_database_knows_is_priced_without_configuration() -> None:
    config = endpoint_config(model="gpt-5-mini", price=None)  # at api.openai.com
    async with open_test_gateway(FakeTransport(), config=config) as gw:
        done = await gw.chat("ep", REQUEST)
    assert done.cost_usd > 0
    assert config.effective_price is not None
    assert config.effective_price.source.startswith("genai-prices")
