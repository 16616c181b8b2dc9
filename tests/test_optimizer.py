"""The optimizer runner on an in-memory transport: many jobs with tiny buffers, backpressure,
failures that end one job, budgets, cancellation, progress events, and GPO as DESIGN.md section 2
states it (one request for n candidates, the cosine word budget, integer scores, dev-only steps,
test scored once, reuse of duplicates, SGD-like selection, best-of-trajectory answer)."""

from __future__ import annotations

import asyncio
import functools
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pipeline.errors import ConfigError
from pipeline.llm._budget import Budget, Caps
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import Price
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    EmbeddingReply,
    EmbeddingRequest,
    TransportReply,
    Usage,
)
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import (
    BudgetUpdate,
    CandidateScored,
    Job,
    JobFinished,
    JobResult,
    JobStarted,
    OptimizerSettings,
    ProgressEvent,
    RunResult,
    StepFinished,
    build_context,
)
from pipeline.runner._results import RunMeta, results_document
from pipeline.runner._run import OptimizerRun, open_optimizer, optimize
from pipeline.tasks._data import Example, Splits, split_examples
from pipeline.tasks._metrics import custom_metric
from stages.edits import normalize_prompt
from stages.strategy import Strategy, strategy
from tests.fakes import FakeClock

ENDPOINT = "fake"
INITIAL = "Let's think step by step."
BBH_COSINE = [49, 48, 47, 45, 42, 40, 36, 33, 30, 26, 23, 20, 17, 14, 12, 11, 10, 10]
TINY = strategy("gpo", epochs=1, candidates=2)
_QUESTION = re.compile(r"^Task (\S+) question (\d+): what is \d+ plus zero\?$")
_QUALITY = re.compile(r"\[q=(\d+)\]")
_BUDGET = re.compile(r"You may change up to (\d+) words")

Proposer = Callable[[int, int], str]


def question(task: str, i: int) -> str:
    return f"Task {task} question {i}: what is {i} plus zero?"


def examples(task: str, count: int) -> tuple[Example, ...]:
    return tuple(Example(input=question(task, i), target=str(i)) for i in range(count))


def quality_of(prompt: str, default: int) -> int:
    """The share (0-100) of questions a prompt gets right: its "[q=K]" marker, else ``default``."""
    found = _QUALITY.search(prompt)
    return int(found.group(1)) if found else default


def right_under(index: int, quality: int) -> bool:
    return (index * 37) % 100 < quality


def random_proposer(rng: random.Random) -> Proposer:
    return lambda ask, i: f"<START>prompt {rng.random():.12f}<END>"


@dataclass
class FakeLLM:
    """A chat handler that plays both models.

    A meta-prompt (it asks for ``<START>``...``<END>``) gets ``n`` replies from ``propose(ask,
    choice)``, ``ask`` counting meta-prompts from 1. A task question gets "The answer is X.",
    right when ``right_under(question index, quality of the prompt)``. Usage is a few tokens per
    call, well under what the gateway reserves. ``delay`` seconds per call (else one checkpoint).
    """

    propose: Proposer = field(default_factory=lambda: random_proposer(random.Random(0)))
    default_quality: int = 100
    delay: float = 0.0
    seen: list[ChatRequest] = field(default_factory=list)
    meta: list[ChatRequest] = field(default_factory=list)
    tasks: list[ChatRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(self, request: ChatRequest) -> TransportReply:
        content = request.messages[-1].content
        self.seen.append(request)
        if "<START>" in content:
            self.meta.append(request)
            texts = [self.propose(len(self.meta), i) for i in range(request.n)]
            await self._pause()
            return _reply(content, texts)
        self.tasks.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._pause()
        finally:
            self.in_flight -= 1
        return _reply(content, [self.answer(content)] * request.n)

    async def _pause(self) -> None:
        if self.delay:
            await anyio.sleep(self.delay)
        else:
            await anyio.lowlevel.checkpoint()

    def answer(self, content: str) -> str:
        asked, prompt = _split(content)
        found = _QUESTION.match(asked)
        if found is None:
            return "No idea."
        index = int(found.group(2))
        right = right_under(index, quality_of(prompt, self.default_quality))
        return f"The answer is {index if right else index + 1}."

    def task_calls(self, questions: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(question, prompt) of every task call, only those on ``questions`` if given."""
        calls = [_split(r.messages[-1].content) for r in self.tasks]
        wanted = set(questions)
        return [c for c in calls if not wanted or c[0] in wanted]


def _split(content: str) -> tuple[str, str]:
    asked, _, prompt = content.partition("\n\n")
    return asked, prompt


def embed_letters(request: EmbeddingRequest) -> EmbeddingReply:
    """Letter counts as embeddings: similar spellings are close."""
    vectors = tuple(
        tuple(float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz")
        for text in request.inputs
    )
    tokens = sum(len(t) // 4 + 1 for t in request.inputs)
    return EmbeddingReply(vectors=vectors, usage=Usage(input_tokens=tokens))


def _reply(content: str, texts: Sequence[str]) -> TransportReply:
    usage = Usage(
        input_tokens=len(content) // 4 + 1, output_tokens=sum(len(t) // 4 + 1 for t in texts)
    )
    return TransportReply(
        choices=tuple(Choice(text=t, finish_reason="stop") for t in texts), usage=usage
    )


@asynccontextmanager
async def fake_gateway(
    llm: FakeLLM, *, price: Price | None = None, budget: Budget | None = None
) -> AsyncIterator[Gateway]:
    config = EndpointConfig(name=ENDPOINT, model="fake-model", price=price or Price())
    async with open_gateway(
        [config],
        transports={ENDPOINT: FakeTransport(chat=llm, embed=embed_letters)},
        budget=budget,
        rng=random.Random(0),
    ) as gateway:
        yield gateway


def job(name: str, *, count: int = 12, dev: int = 4, test: int = 2, **kwargs: Any) -> Job:
    return Job(
        name=name,
        examples=examples(name, count),
        task_endpoint=ENDPOINT,
        embedding_endpoint=ENDPOINT,
        dev_size=dev,
        test_size=test,
        **kwargs,
    )


def settings(plan: Strategy = TINY, **kwargs: Any) -> OptimizerSettings:
    fields: dict[str, Any] = {"scorer_max_tokens": 16, "optimizer_max_tokens": 64}
    fields.update(kwargs)
    return OptimizerSettings(strategy=plan, **fields)


async def run_jobs(
    llm: FakeLLM,
    jobs: Sequence[Job],
    options: OptimizerSettings,
    *,
    price: Price | None = None,
    budget: Budget | None = None,
) -> RunResult:
    # A deadlock fails here instead of hanging (1,000 jobs take 26 s at a load average of 12).
    with anyio.fail_after(240):
        async with fake_gateway(llm, price=price, budget=budget) as gateway:
            return await optimize(gateway, jobs, options)


def statuses(result: RunResult) -> dict[str, str]:
    return {j.name: j.status for j in result.jobs}


# --- admission control: no deadlock, backpressure ------------------------------------------


@pytest.mark.timeout(300)  # 26 s at a load average of 12 on 2 cores
@pytest.mark.parametrize("buffer_size", [1, 0])
async def test_a_thousand_jobs_through_tiny_buffers_all_finish(buffer_size: int) -> None:
    jobs = [job(f"j{i}", count=7, dev=2, test=2) for i in range(1000)]
    options = settings(buffer_size=buffer_size, max_active_jobs=50, call_workers=16)

    result = await run_jobs(FakeLLM(), jobs, options)

    assert Counter(statuses(result).values()) == {"finished": 1000}
    assert all(j.steps == 1 and j.best_test_score is not None for j in result.jobs)


async def test_call_workers_bound_the_concurrent_task_calls() -> None:
    llm = FakeLLM(delay=0.0005, default_quality=50)
    plan = strategy("gpo", epochs=1, batch_size=48, candidates=8)
    jobs = [job(f"j{i}", count=51, dev=48, test=0) for i in range(3)]

    result = await run_jobs(llm, jobs, settings(plan, call_workers=4, buffer_size=2))

    assert set(statuses(result).values()) == {"finished"}
    assert all(len(j.step_records[0].candidates) == 8 for j in result.jobs)
    assert len(llm.tasks) == 3 * (48 + 8 * 48)
    assert llm.max_in_flight == 4


# --- failures end one job ----------------------------------------------------------------


async def test_a_job_smaller_than_its_splits_refuses_the_run_before_any_call() -> None:
    llm = FakeLLM()
    jobs = [job("first"), job("short", count=8), job("last")]  # 3 exemplars + 4 dev + 2 test

    with pytest.raises(ConfigError) as caught:
        await run_jobs(llm, jobs, settings())

    assert str(caught.value) == (
        'job "short": needs 3 exemplars + 4 dev + 2 test = 9 examples, found 8 '
        "(set smaller dev_size/test_size, or small_splits = true to use what there is)"
    )
    assert llm.seen == []


async def test_open_optimizer_refuses_a_job_smaller_than_its_splits() -> None:
    llm = FakeLLM()
    with anyio.fail_after(30), pytest.raises(ConfigError, match='job "short": needs'):
        async with (
            fake_gateway(llm) as gateway,
            open_optimizer(gateway, [job("short", count=8)], settings()),
        ):
            pass
    assert llm.seen == []


async def test_small_splits_runs_a_job_on_what_there_is() -> None:
    llm = FakeLLM()
    short = job("short", count=8, small_splits=True)

    result = await run_jobs(llm, [short], settings())

    assert statuses(result) == {"short": "finished"}
    splits = build_context(short, 0, settings()).splits
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (3, 4, 1)


async def test_a_job_with_too_few_examples_fails_alone_before_spending() -> None:
    llm = FakeLLM()
    jobs = [job("first"), job("short", count=3, small_splits=True), job("last")]

    result = await run_jobs(llm, jobs, settings())

    assert statuses(result) == {"first": "finished", "short": "failed", "last": "finished"}
    short = result.job("short")
    assert short.error is not None
    assert short.error.startswith("ConfigError")
    assert "at least 5 examples" in short.error
    assert short.trajectory == ()
    assert not any("Task short " in q for q, _ in llm.task_calls())


async def test_a_job_whose_metric_raises_fails_alone() -> None:
    def broken(output: str, target: str) -> bool:
        raise ValueError("the metric broke")

    jobs = [job("first"), job("broken", metric=custom_metric(broken)), job("last")]

    result = await run_jobs(FakeLLM(), jobs, settings())

    assert statuses(result) == {"first": "finished", "broken": "failed", "last": "finished"}
    assert result.job("broken").error == "ValueError: the metric broke"


PRICE = Price(input_per_mtok=10.0, output_per_mtok=10.0)


async def test_a_job_out_of_its_own_budget_keeps_its_best_so_far_and_others_finish() -> None:
    plan = strategy("gpo", epochs=3, candidates=2)
    unlimited = await run_jobs(
        FakeLLM(default_quality=50), [job("alone")], settings(plan), price=PRICE
    )
    # Enough for the initial evaluation and one step's worst case, not for the whole job.
    cap = unlimited.job("alone").cost_usd * 0.9
    jobs = [job("first"), job("capped", budget=Caps(usd=cap)), job("last")]

    result = await run_jobs(FakeLLM(default_quality=50), jobs, settings(plan), price=PRICE)

    assert unlimited.job("alone").steps == 3
    assert statuses(result) == {
        "first": "finished",
        "capped": "budget_exhausted",
        "last": "finished",
    }
    capped = result.job("capped")
    assert capped.error is not None
    assert capped.error.startswith("BudgetExhausted")
    assert 0 < capped.cost_usd <= cap
    assert 1 <= capped.steps < 3
    assert len(capped.trajectory) == capped.steps + 1
    assert_best_of_trajectory(capped)


def assert_best_of_trajectory(result: JobResult) -> None:
    best = max(result.trajectory, key=lambda e: e.score)
    assert result.best_prompt == best.prompt
    assert result.best_dev_score == best.score
    assert result.initial_dev_score == result.trajectory[0].score


async def test_a_run_wide_cap_ends_the_run_cleanly_with_best_so_far() -> None:
    # Optimizer calls reserve far more than task calls (n x max_tokens at a high output price),
    # so once one is refused every later one is too: active jobs end at their next step.
    price = Price(input_per_mtok=1.0, output_per_mtok=200.0)
    plan = strategy("gpo", epochs=3, batch_size=1, candidates=2)
    cap = 0.12
    budget = Budget(run_caps=Caps(usd=cap))
    jobs = [job(f"j{i}", count=12, dev=4, test=2) for i in range(6)]
    options = settings(plan, max_active_jobs=2)

    result = await run_jobs(FakeLLM(default_quality=50), jobs, options, price=price, budget=budget)

    assert 0 < result.totals.cost_usd <= cap
    assert budget.state().spent_usd <= cap
    assert budget.open_reservations == 0
    started = [j for j in result.jobs if j.trajectory]
    unstarted = [j for j in result.jobs if not j.trajectory]
    assert len(started) >= 2
    assert unstarted
    for started_job in started:
        assert started_job.status == "budget_exhausted"
        assert 0 < started_job.steps < 12
        assert_best_of_trajectory(started_job)
    for never in unstarted:
        assert never.status == "budget_exhausted"
        assert never.error is not None
        assert "before this job started" in never.error
        assert never.cost_usd == 0


# --- cancellation ------------------------------------------------------------------------


async def test_cancelling_a_run_leaves_no_task_behind_and_the_gateway_usable() -> None:
    llm = FakeLLM(delay=0.05, default_quality=50)
    plan = strategy("gpo", epochs=3, candidates=4)
    jobs = [job(f"j{i}", count=20, dev=8, test=4) for i in range(8)]
    before = asyncio.all_tasks()
    async with fake_gateway(llm) as gateway:
        with anyio.move_on_after(0.3) as scope:
            async with open_optimizer(gateway, jobs, settings(plan, max_active_jobs=4)) as run:
                await run.result()
        calls_at_cancel = len(llm.tasks)
        assert scope.cancelled_caught
        assert asyncio.all_tasks() == before
        assert gateway.budget.open_reservations == 0

        completion = await gateway.chat(ENDPOINT, ChatRequest.of(question("after", 3)))

    assert completion.text == "The answer is 3."
    assert 0 < calls_at_cancel == len(llm.tasks) - 1


# --- progress events ----------------------------------------------------------------------


async def test_events_report_starts_steps_candidates_finishes_and_budget() -> None:
    plan = strategy("gpo", epochs=3, candidates=2)
    events: list[ProgressEvent] = []
    with anyio.fail_after(30):
        async with (
            fake_gateway(FakeLLM(default_quality=50)) as gateway,
            open_optimizer(gateway, [job("a"), job("b")], settings(plan)) as run,
        ):
            events = [event async for event in run.events()]
            result = await run.result()

    assert result.events_dropped == 0
    assert {(e.job, e.total_steps) for e in events if isinstance(e, JobStarted)} == {
        ("a", 3),
        ("b", 3),
    }
    steps = [(e.job, e.step) for e in events if isinstance(e, StepFinished)]
    assert sorted(steps) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    scored = [e for e in events if isinstance(e, CandidateScored)]
    assert len(scored) == sum(len(r.candidates) for j in result.jobs for r in j.step_records)
    finished = {e.job: e for e in events if isinstance(e, JobFinished)}
    assert {name: e.status for name, e in finished.items()} == {"a": "finished", "b": "finished"}
    assert {name: e.best_dev_score for name, e in finished.items()} == {
        j.name: j.best_dev_score for j in result.jobs
    }
    assert sum(isinstance(e, BudgetUpdate) for e in events) == len(steps)
    for name in ("a", "b"):
        mine = [e for e in events if getattr(e, "job", None) == name]
        assert isinstance(mine[0], JobStarted)
        assert isinstance(mine[-1], JobFinished)


async def test_step_and_finish_events_carry_the_initial_dev_score() -> None:
    events: list[ProgressEvent] = []
    with anyio.fail_after(30):
        async with (
            fake_gateway(FakeLLM(default_quality=50)) as gateway,
            open_optimizer(gateway, [job("a")], settings(TINY)) as run,
        ):
            events = [event async for event in run.events()]
            result = await run.result()

    initial = result.job("a").initial_dev_score
    assert initial is not None
    ended = [e for e in events if isinstance(e, StepFinished | JobFinished)]
    assert len(ended) > 1
    assert {e.initial_dev_score for e in ended} == {initial}


async def test_a_consumer_that_never_reads_does_not_block_the_run() -> None:
    jobs = [job(f"j{i}") for i in range(5)]
    with anyio.fail_after(30):
        async with (
            fake_gateway(FakeLLM()) as gateway,
            open_optimizer(gateway, jobs, settings(event_buffer=1)) as run,
        ):
            result = await run.result()  # nobody reads the events

    assert set(statuses(result).values()) == {"finished"}
    assert result.events_dropped > 0


async def test_a_job_failing_validation_is_reported_as_a_finished_event() -> None:
    with anyio.fail_after(30):
        async with (
            fake_gateway(FakeLLM()) as gateway,
            open_optimizer(gateway, [job("short", count=2, small_splits=True)], settings()) as run,
        ):
            events = [event async for event in run.events()]

    assert len(events) == 1
    assert isinstance(events[0], JobFinished)
    assert events[0].status == "failed"
    assert events[0].best_dev_score is None


# --- GPO, faithfully ----------------------------------------------------------------------
# One recorded GPO run on a BBH-sized task (48 dev examples, so T = 18 steps), shared by the
# tests below. Each candidate carries a "[q=K]" marker that fixes its accuracy; the initial
# prompt gets 50 %. At step 2 the last candidate restates a step-1 candidate in other case and
# punctuation: the same prompt once normalized.

GPO_DEV, GPO_TEST = 48, 8


def gpo_candidate(ask: int, i: int) -> str:
    quality = (ask * 31 + i * 17) % 90 + 5
    return f"Add zero carefully, variant {ask}.{i} [q={quality}]"


def gpo_proposer(ask: int, i: int) -> str:
    text = gpo_candidate(ask, i)
    if (ask, i) == (2, 7):
        text = gpo_candidate(1, 0).upper() + "."
    return f"<START>{text}<END>"


@dataclass(frozen=True)
class Recorded:
    llm: FakeLLM
    result: JobResult
    splits: Splits


@functools.cache
def gpo_run() -> Recorded:
    llm = FakeLLM(propose=gpo_proposer, default_quality=50)
    task = job("gpo", count=3 + GPO_DEV + GPO_TEST, dev=GPO_DEV, test=GPO_TEST)
    options = settings(strategy("gpo"))

    async def main() -> RunResult:
        return await run_jobs(llm, [task], options)

    result = anyio.run(main)
    splits = split_examples(task.examples, seed=options.seed, dev_size=GPO_DEV, test_size=GPO_TEST)
    return Recorded(llm=llm, result=result.job("gpo"), splits=splits)


def test_gpo_runs_the_paper_number_of_steps() -> None:
    result = gpo_run().result

    assert result.status == "finished"
    assert result.steps == 18
    assert len(result.trajectory) == 19


def test_gpo_asks_for_all_candidates_in_one_request_per_step_at_temperature_1() -> None:
    recorded = gpo_run()

    assert [(r.n, r.temperature) for r in recorded.llm.meta] == [(8, 1.0)] * 18
    assert all(r.reasks == 0 and r.parse_failures == 0 for r in recorded.result.step_records)


def test_gpo_scores_with_the_task_model_at_temperature_0() -> None:
    assert {r.temperature for r in gpo_run().llm.tasks} == {0.0}


def test_gpo_word_budget_follows_the_cosine_decay() -> None:
    recorded = gpo_run()
    asked = [_BUDGET.search(r.messages[-1].content) for r in recorded.llm.meta]

    assert [int(m.group(1)) if m else None for m in asked] == BBH_COSINE
    assert [r.word_budget for r in recorded.result.step_records] == BBH_COSINE


def test_gpo_meta_prompt_shows_scores_as_integers_from_0_to_100() -> None:
    recorded = gpo_run()

    for request, entry in zip(recorded.llm.meta, recorded.result.trajectory, strict=False):
        text = request.messages[-1].content
        assert f"It scores {round(entry.score)} out of 100." in text
        shown = re.findall(r"\nscore:\n(\S+)", text)
        assert all(s.isdigit() and 0 <= int(s) <= 100 for s in shown)
    fractional = [e.score for e in recorded.result.trajectory if e.score != int(e.score)]
    assert fractional  # the check above did meet scores that are not whole numbers


def test_gpo_shows_the_same_three_exemplars_at_every_step() -> None:
    recorded = gpo_run()
    sections = {
        r.messages[-1].content.split("Examples of the task")[1].split("\n\nStudy")[0]
        for r in recorded.llm.meta
    }

    assert len(sections) == 1
    shown = sections.pop()
    assert len(recorded.splits.exemplars) == 3
    assert all(f"Input:\n{e.input}\n<Prompt>\n" in shown for e in recorded.splits.exemplars)


def test_gpo_shows_the_current_prompt_and_two_retrieved_ones() -> None:
    records = gpo_run().result.step_records

    assert [len(r.shown) for r in records] == [0, 1] + [2] * 16


def test_gpo_scores_every_new_candidate_on_every_dev_example() -> None:
    recorded = gpo_run()
    dev = {e.input for e in recorded.splits.dev}
    by_prompt: dict[str, set[str]] = {}
    for asked, prompt in recorded.llm.task_calls(list(dev)):
        by_prompt.setdefault(prompt, set()).add(asked)

    new = [c for r in recorded.result.step_records for c in r.candidates if c.new]
    assert len(new) == 18 * 8 - 1
    assert all(by_prompt[c.prompt] == dev for c in new)
    assert {c.score for c in new} != {new[0].score}


def test_gpo_reuses_the_score_of_a_prompt_it_already_evaluated() -> None:
    recorded = gpo_run()
    first, second = recorded.result.step_records[:2]
    original = first.candidates[0]
    duplicate = second.candidates[7]

    assert normalize_prompt(duplicate.prompt) == normalize_prompt(original.prompt)
    assert duplicate.prompt != original.prompt
    assert not duplicate.new
    assert duplicate.score == original.score
    assert all(prompt != duplicate.prompt for _, prompt in recorded.llm.task_calls())


def test_gpo_scores_the_test_split_once_at_the_end_for_initial_and_best_only() -> None:
    recorded = gpo_run()
    result = recorded.result
    test = [e.input for e in recorded.splits.test]
    calls = recorded.llm.task_calls(test)
    order = [_split(r.messages[-1].content)[0] for r in recorded.llm.seen]
    first_test = min(order.index(q) for q in test)
    last_step = max(i for i, r in enumerate(recorded.llm.seen) if r in recorded.llm.meta)

    assert result.best_prompt != INITIAL
    assert Counter(p for _, p in calls) == {INITIAL: GPO_TEST, result.best_prompt: GPO_TEST}
    assert first_test > last_step
    assert result.initial_test_score is not None
    assert result.best_test_score is not None


def test_gpo_final_prompt_is_the_trajectory_entry_with_the_best_dev_score() -> None:
    result = gpo_run().result

    assert_best_of_trajectory(result)
    assert result.best_dev_score is not None
    assert result.best_dev_score > result.trajectory[0].score


async def test_gpo_moves_to_the_best_new_candidate_even_below_the_current_prompt() -> None:
    def worse(ask: int, i: int) -> str:
        return f"<START>Try variant {ask}.{i} [q={10 + (ask * 7 + i * 13) % 50}]<END>"

    llm = FakeLLM(propose=worse, default_quality=100)
    plan = strategy("gpo", epochs=3, candidates=4)

    result = (await run_jobs(llm, [job("down", count=21, dev=16, test=2)], settings(plan))).jobs[0]

    assert result.steps == 6
    for record, entry in zip(result.step_records, result.trajectory[1:], strict=True):
        best_new = max((c for c in record.candidates if c.new), key=lambda c: c.score)
        assert record.selected == entry.prompt == best_new.prompt
        assert entry.score == best_new.score
    assert result.trajectory[0].score == 100
    assert result.trajectory[1].score < 100
    assert result.best_prompt == INITIAL


async def test_events_after_the_end_are_an_empty_stream() -> None:
    with anyio.fail_after(30):
        async with fake_gateway(FakeLLM()) as gateway:
            async with open_optimizer(gateway, [job("a")], settings()) as run:
                await run.result()
            late = [event async for event in run.events()]
    assert late == []


async def test_queue_depths_show_the_evaluation_fan_out_backing_up() -> None:
    llm = FakeLLM(delay=0.01, default_quality=50)
    seen: list[int] = []
    with anyio.fail_after(30):
        async with (
            fake_gateway(llm) as gateway,
            open_optimizer(gateway, [job("a", count=40, dev=32)], settings(call_workers=1)) as run,
        ):
            # The initial evaluation: 32 calls of 10 ms through one worker. Polled (the queue is
            # the run's: no event to wait on) rather than slept on for a fixed time, which a busy
            # machine could stretch past the backlog.
            while not run.queue_depths().get("calls") and len(llm.tasks) < 32:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            seen.append(run.queue_depths()["calls"])
            depths = run.queue_depths()
            await run.result()
    assert set(depths) == {"retrieval", "refinement", "generation", "evaluation", "runner", "calls"}
    assert seen[0] > 0


async def test_the_run_wall_time_is_read_from_the_injected_clock() -> None:
    clock = FakeClock(start=100.0)
    with anyio.fail_after(30):
        async with fake_gateway(FakeLLM()) as gateway, anyio.create_task_group() as tg:
            run = OptimizerRun(gateway, [job("a")], settings(), clock=clock)
            tg.start_soon(run.run)
            await anyio.lowlevel.checkpoint()  # the run has started: it read the clock
            clock.advance(2.5)
            result = await run.result()
    assert result.totals.wall_s == 2.5


# --- what real small models break: replies that are no candidate, answers that cannot be read ----


@dataclass
class MumblingLLM(FakeLLM):
    """A task model that reads no answer out for prompts marked "[mute]"."""

    def answer(self, content: str) -> str:
        if "[mute]" in _split(content)[1]:
            return "I would need more information to answer that."
        return super().answer(content)


def unchanged_then_new(ask: int, i: int) -> str:
    """The first reply returns the current prompt: rejected, and asked for again."""
    first = {0: f"<START>{INITIAL}</END>", 1: "<START>Be careful. [mute]</END>"}
    return first[i] if ask == 1 else "<START>Be exact. [q=50]<END/>"


async def test_a_job_counts_dropped_replies_and_unread_outputs_into_its_results() -> None:
    llm = MumblingLLM(propose=unchanged_then_new)

    run = await run_jobs(llm, [job("a", dev=4, test=2)], settings())

    (result,) = run.jobs
    assert [c.prompt for c in result.step_records[0].candidates] == [
        "Be careful. [mute]",
        "Be exact. [q=50]",
    ]
    assert result.optimizer_replies == {
        "parse_failures": 0,
        "rejected_unchanged": 1,
        "rejected_exemplar_copy": 0,
    }
    # initial on dev (4) + two new candidates on dev (8) + the initial, still best, on test (2)
    assert (result.outputs_judged, result.unextractable) == (14, 4)
    document = results_document(
        run.jobs,
        meta=RunMeta(
            run_id="r", started_at="", finished_at="", status="", config_path="", strategy={}
        ),
        budget=Budget(),
        caps=Caps(),
        totals=run.totals,
        endpoints={},
    )
    written = document["jobs"][0]
    assert (written["outputs_judged"], written["unextractable"]) == (14, 4)
    assert written["unextractable_share"] == pytest.approx(4 / 14)
    assert written["optimizer_replies"]["rejected_unchanged"] == 1
    assert written["step_records"][0]["rejected_unchanged"] == 1
