"""The gateway's provider batches, against an in-memory provider (tests/fakes_batch.py):
coalescing, batch pricing, the cap, retries and fallbacks, max wait, and the journal that lets
a resumed session adopt a batch instead of submitting it again."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline import errors as e
from pipeline.clock import SystemClock
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._cache import MemoryCache, ResponseCache
from pipeline.llm._endpoint import BatchPolicy, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._tokens import max_input_tokens
from pipeline.llm._values import ChatRequest
from pipeline.llm.batch import BatchLog, MemoryBatchLog, open_batch_log
from pipeline.llm.transports._fake import echo_reply
from tests.fakes import PRICE, endpoint_config
from tests.fakes_batch import FakeBatchProvider

FAST = {"linger_s": 0.05, "poll_s": 0.01, "max_poll_s": 0.02}


def policy(**overrides: Any) -> BatchPolicy:
    return BatchPolicy(**{"mode": "eval", **FAST, **overrides})


@asynccontextmanager
async def gateway(
    provider: FakeBatchProvider,
    *,
    batch: BatchPolicy | None = None,
    journal: BatchLog | None = None,
    budget: Budget | None = None,
    cache: ResponseCache | None = None,
    price: Price = PRICE,
) -> AsyncIterator[Gateway]:
    config = endpoint_config(
        batch=batch or policy(),
        price=price,
        retry=RetryPolicy(max_attempts=3, base_s=0.0, cap_s=0.0, retry_after_cap_s=0.0),
    )
    async with open_gateway(
        [config],
        transports={"ep": provider},
        clock=SystemClock(),
        budget=budget,
        cache=cache,
        rng=random.Random(0),
        batch_log=journal,
    ) as gw:
        yield gw


def question(i: int) -> ChatRequest:
    return ChatRequest.of(f"question {i}", max_tokens=16, seed=1)


async def ask_all(gw: Gateway, count: int, *, deferrable: bool = True) -> list[Any]:
    answers: list[Any] = [None] * count

    async def one(i: int) -> None:
        answers[i] = await gw.chat("ep", question(i), job=f"job{i % 3}", deferrable=deferrable)

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i)
    return answers


async def test_calls_of_every_job_share_one_batch_at_half_price() -> None:
    provider = FakeBatchProvider()
    async with gateway(provider) as gw:
        answers = await ask_all(gw, 40)
        stats = gw.statistics()["ep"]
    assert len(provider.batches) == 1
    assert len(provider.batches[0].items) == 40
    assert provider.requests == []  # nothing realtime
    for i, completion in enumerate(answers):
        assert completion.text == f"echo 0: question {i}"
        usage = completion.usage
        half = PRICE.cost(usage.input_tokens, usage.output_tokens) / 2
        assert completion.cost_usd == pytest.approx(half)
    assert stats.batches == 1
    assert stats.batch_requests == 40
    assert gw.budget.state().spent_usd == pytest.approx(sum(a.cost_usd for a in answers))
    assert gw.budget.open_reservations == 0


async def test_answers_come_from_the_cache_afterwards_and_never_enter_a_batch() -> None:
    provider = FakeBatchProvider()
    cache = MemoryCache()
    async with gateway(provider, cache=cache) as gw:
        await ask_all(gw, 5)
    async with gateway(provider, cache=cache) as gw:
        again = await ask_all(gw, 5)
    assert len(provider.batches) == 1
    assert all(c.cached and c.cost_usd == 0 for c in again)


async def test_only_deferrable_calls_batch_in_eval_mode_and_every_call_in_all_mode() -> None:
    provider = FakeBatchProvider()
    async with gateway(provider) as gw:
        await ask_all(gw, 3, deferrable=False)
    assert provider.batches == []
    assert len(provider.requests) == 3
    provider = FakeBatchProvider()
    async with gateway(provider, batch=policy(mode="all")) as gw:
        await ask_all(gw, 3, deferrable=False)
    assert len(provider.batches) == 1
    assert provider.requests == []


async def test_a_full_queue_becomes_a_batch_at_once_and_the_rest_another() -> None:
    provider = FakeBatchProvider()
    async with gateway(provider, batch=policy(max_requests=10, linger_s=30.0)) as gw:
        with anyio.fail_after(10):  # a 30 s linger: only "full" can flush the first 20
            await ask_all(gw, 20)
    assert [len(b.items) for b in provider.batches] == [10, 10]


async def test_a_batch_stays_within_the_providers_byte_limit() -> None:
    provider = FakeBatchProvider(batch_max_bytes=1000)  # about 4 requests of ~210 bytes
    async with gateway(provider) as gw:
        await ask_all(gw, 10)
    sizes = [sum(provider.batch_item_bytes(i) for i in b.items) for b in provider.batches]
    assert len(provider.batches) >= 3
    assert all(size <= 950 for size in sizes)
    assert sum(len(b.items) for b in provider.batches) == 10


async def test_n_choices_go_as_one_request_or_one_per_choice_without_n() -> None:
    provider = FakeBatchProvider()
    request = ChatRequest.of("pick", max_tokens=8, n=3, seed=2)
    async with gateway(provider, batch=policy(mode="all")) as gw:
        completion = await gw.chat("ep", request)
    assert len(completion.choices) == 3
    assert len(provider.batches[0].items) == 1
    provider = FakeBatchProvider()
    config_n = policy(mode="all")
    async with gateway(provider, batch=config_n) as gw:
        gw._endpoints["ep"].supports_n = False
        completion = await gw.chat("ep", request)
    assert len(completion.choices) == 3
    assert [i.request.n for i in provider.batches[0].items] == [1, 1, 1]


async def test_a_failed_batch_is_sent_again_in_a_new_batch() -> None:
    provider = FakeBatchProvider(fail_batches=1)
    async with gateway(provider) as gw:
        answers = await ask_all(gw, 4)
        stats = gw.statistics()["ep"]
    assert len(provider.batches) == 2
    assert all(a.text.startswith("echo") for a in answers)
    assert stats.batch_retries == 4
    assert gw.budget.open_reservations == 0


async def test_a_request_failing_inside_a_batch_is_retried_alone() -> None:
    provider = FakeBatchProvider()
    provider.error_ids["placeholder"] = e.ServerError("x", endpoint="ep")
    async with gateway(provider) as gw:
        tag_errors = provider.error_ids
        tag_errors.clear()

        async def fail_first_item() -> None:  # name the first request once its batch exists
            await provider.created.wait()
            first = provider.batches[0].items[0].custom_id
            tag_errors[first] = e.ServerError("overloaded", endpoint="ep")

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail_first_item)
            await ask_all(gw, 3)
    assert [len(b.items) for b in provider.batches] == [3, 1]


async def test_after_the_retries_a_request_goes_realtime_when_the_user_chose_so() -> None:
    provider = FakeBatchProvider(fail_batches=5)
    async with gateway(provider, batch=policy(retries=1, fallback="realtime")) as gw:
        answers = await ask_all(gw, 2)
        stats = gw.statistics()["ep"]
    assert len(provider.batches) == 2
    assert len(provider.requests) == 2
    assert all(a.text.startswith("echo") for a in answers)
    assert stats.batch_realtime == 2
    assert gw.budget.open_reservations == 0


async def test_after_the_retries_a_request_fails_when_batches_are_the_only_way() -> None:
    provider = FakeBatchProvider(fail_batches=5)
    async with gateway(provider, batch=policy(retries=1)) as gw:
        with pytest.raises(e.RetriesExhausted):
            await gw.chat("ep", question(0), deferrable=True)
        assert gw.budget.state().spent_usd == 0  # not run: nothing billed
    assert len(provider.batches) == 2
    assert provider.requests == []


async def test_a_bad_request_in_a_batch_fails_its_caller_only() -> None:
    provider = FakeBatchProvider()
    outcomes: dict[int, object] = {}
    async with gateway(provider) as gw:

        async def reject_second() -> None:
            await provider.created.wait()
            bad = provider.batches[0].items[1].custom_id
            provider.error_ids[bad] = e.BadRequest("bad", endpoint="ep", status=400)

        async def ask(i: int) -> None:
            try:
                outcomes[i] = await gw.chat("ep", question(i), deferrable=True)
            except e.BadRequest as exc:
                outcomes[i] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(reject_second)
            tg.start_soon(ask, 0)
            await anyio.sleep(0.001)
            tg.start_soon(ask, 1)
    assert isinstance(outcomes[1], e.BadRequest)
    assert not isinstance(outcomes[0], Exception)
    assert len(provider.batches) == 1  # a fatal error is not retried


async def test_past_max_wait_the_batch_is_cancelled_and_the_run_goes_realtime() -> None:
    provider = FakeBatchProvider(never_end=True)
    async with gateway(provider, batch=policy(max_wait_s=0.1)) as gw:
        answers = await ask_all(gw, 3)
        later = await gw.chat("ep", question(9), deferrable=True)
        stats = gw.statistics()["ep"]
    assert provider.cancelled == [provider.batches[0].id]
    assert len(provider.batches) == 1
    assert len(provider.requests) == 4
    assert later.text == "echo 0: question 9"
    assert all(a.text.startswith("echo") for a in answers)
    assert stats.batch_realtime == 3


async def test_the_cap_holds_at_the_batch_price() -> None:
    worst = PRICE.cost(max_input_tokens(question(0).messages), 16) / 2  # one request, batched
    budget = Budget(run_caps=Caps(usd=worst * 2.5))
    provider = FakeBatchProvider()
    async with gateway(provider, budget=budget) as gw:
        results: list[object] = []

        async def one_call(i: int) -> None:
            try:
                results.append(await gw.chat("ep", question(i), deferrable=True))
            except e.BudgetExhausted as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one_call, i)
        spent = gw.budget.state().spent_usd
    answered = sum(not isinstance(r, Exception) for r in results)
    assert 0 < spent <= worst * 2.5
    assert answered >= 2  # two fit at the worst case; settled below it, room for more
    assert len(provider.requests_batched) == answered


async def test_a_lost_create_answer_adopts_the_batch_by_its_tag_instead_of_creating_twice() -> None:
    provider = FakeBatchProvider(lose_create_answer=1)
    async with gateway(provider) as gw:
        answers = await ask_all(gw, 3)
    assert len(provider.batches) == 1
    assert all(a.text.startswith("echo") for a in answers)


async def test_a_killed_session_leaves_its_batch_to_the_next_which_adopts_it(
    tmp_path: Path,
) -> None:
    provider = FakeBatchProvider(never_end=True)
    cache = MemoryCache()
    async with (
        open_batch_log(tmp_path / "batches.sqlite") as journal,
        gateway(provider, journal=journal, cache=cache) as gw,
    ):
        with anyio.move_on_after(0.3):  # the kill: the callers go, the batch stays
            await ask_all(gw, 3)
    assert len(provider.batches) == 1
    provider.never_end = False
    async with open_batch_log(tmp_path / "batches.sqlite") as journal:
        assert [b.batch_id for b in journal.unfinished()] == [provider.batches[0].id]
        async with gateway(provider, journal=journal, cache=cache) as gw:
            answers = await ask_all(gw, 3)
            stats = gw.statistics()["ep"]
    assert len(provider.batches) == 1  # adopted, not submitted twice
    assert [a.text for a in answers] == [f"echo 0: question {i}" for i in range(3)]
    assert all(a.cached for a in answers)  # answered from what the adopted batch wrote
    assert stats.batches_adopted == 1
    async with open_batch_log(tmp_path / "batches.sqlite") as journal:
        assert journal.unfinished() == []


async def test_a_batch_created_but_not_journaled_is_found_by_its_tag(tmp_path: Path) -> None:
    provider = FakeBatchProvider()
    journal = MemoryBatchLog()
    async with gateway(provider, journal=journal) as gw:
        await ask_all(gw, 2)
    created = provider.batches[0]
    # As if the session died between creating the batch and journaling its id:
    intent = journal.batches[created.tag]
    journal2 = MemoryBatchLog()
    await journal2.intent(intent.__class__(**{**_fields(intent), "batch_id": None}))
    cache = MemoryCache()
    async with gateway(provider, journal=journal2, cache=cache) as gw:
        answers = await ask_all(gw, 2)
    assert len(provider.batches) == 1
    assert all(a.cached for a in answers)


async def test_an_intent_never_created_is_abandoned_and_its_requests_sent_anew() -> None:
    provider = FakeBatchProvider()
    journal = MemoryBatchLog()
    from pipeline.llm.batch import JournaledBatch

    await journal.intent(
        JournaledBatch(tag="gpo-dead-0", endpoint="ep", since=0.0, items={"x": ("k",)})
    )
    async with gateway(provider, journal=journal) as gw:
        answers = await ask_all(gw, 2)
    assert len(provider.batches) == 1
    assert all(not a.cached for a in answers)
    assert journal.states["gpo-dead-0"] == "abandoned"


async def test_a_caller_cancelled_before_its_batch_exists_releases_its_reservation() -> None:
    provider = FakeBatchProvider()
    async with gateway(provider, batch=policy(linger_s=30.0)) as gw:
        with anyio.move_on_after(0.1):
            await gw.chat("ep", question(0), deferrable=True)
        assert gw.budget.open_reservations == 0
    assert provider.batches == []


async def test_an_endpoint_without_a_batch_api_is_refused_in_batch_mode() -> None:
    from pipeline.llm.transports._fake import FakeTransport

    config = endpoint_config(batch=policy())
    with pytest.raises(e.ConfigError, match="no batch API"):
        async with open_gateway(
            [config], transports={"ep": FakeTransport(echo_reply)}, clock=SystemClock()
        ):
            pass


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
