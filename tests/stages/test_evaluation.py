"""Stage 4, evaluation: fan-out of prompt x example calls through call workers, fan-in of the
scores (mean correctness x 100), where the prompt goes, reuse of scored prompts, selection."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType

import pytest

from pipeline.llm._values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingReply,
    EmbeddingRequest,
    Embeddings,
    Message,
    TransportReply,
    Usage,
)
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.tasks._data import Example
from pipeline.tasks._metrics import custom_metric
from stages.edits import normalize_prompt
from stages.evaluation import Evaluation, task_messages
from stages.messages import (
    Candidate,
    Candidates,
    EvalDone,
    EvalRequest,
    Evaluated,
    JobContext,
    MetaPrompt,
    Placement,
    Split,
    StepOutcome,
    StepTicket,
    Tally,
)
from stages.metaprompt import ShownPrompt
from stages.strategy import strategy
from tests.fakes import endpoint_config, open_test_gateway

_ASKED = re.compile(r"What is (\d+) \+ 1\?")
_RIGHT = re.compile(r"\[right=(\d+)\]")


def answer(request: ChatRequest) -> TransportReply:
    """Right on questions 0..K-1 for a prompt marked "[right=K]" (every question unmarked)."""
    text = "\n".join(m.content for m in request.messages)
    asked = _ASKED.search(text)
    assert asked is not None
    number = int(asked.group(1))
    marker = _RIGHT.search(text)
    right = marker is None or number < int(marker.group(1))
    reply = f"The answer is {number + 1 if right else number}."
    return TransportReply(
        choices=(Choice(text=reply, finish_reason="stop"),), usage=Usage(input_tokens=9)
    )


def embed(request: EmbeddingRequest) -> EmbeddingReply:
    vectors = tuple((float(len(text)), 1.0) for text in request.inputs)
    return EmbeddingReply(vectors=vectors, usage=Usage(input_tokens=len(request.inputs)))


def context(
    *, placement: Placement = "after", dev: int = 4, embeddings: bool = False
) -> JobContext:
    job = Job(
        name="t",
        examples=tuple(Example(input=f"What is {i} + 1?", target=str(i + 1)) for i in range(20)),
        task_endpoint="ep",
        embedding_endpoint="ep" if embeddings else None,
        dev_size=dev,
        test_size=2,
        placement=placement,
    )
    return build_context(job, 0, OptimizerSettings(scorer_max_tokens=16))


@asynccontextmanager
async def evaluation(
    transport: FakeTransport, *, workers: int = 3, buffer: int = 1
) -> AsyncIterator[Evaluation]:
    async with open_test_gateway(transport, config=endpoint_config(name="ep")) as gw:
        stage = Evaluation(gw, call_workers=workers, buffer_size=buffer)
        async with stage.call_pool():
            yield stage


def dev_numbers(ctx: JobContext) -> list[int]:
    found = [_ASKED.search(e.input) for e in ctx.splits.dev]
    return [int(m.group(1)) for m in found if m]


async def test_a_score_is_the_mean_correctness_times_100() -> None:
    ctx = context(dev=8)
    cut = sorted(dev_numbers(ctx))[3]  # three dev questions are below the cut
    prompts = ("Add one.", f"Add one. [right={cut}]")

    async with evaluation(FakeTransport(chat=answer)) as stage:
        scored = await stage.evaluate(ctx, prompts, "dev")

    assert [(e.prompt, e.score) for e in scored] == [(prompts[0], 100.0), (prompts[1], 37.5)]
    outcomes = scored[1].outcomes
    assert [o.index for o in outcomes] == list(range(8))
    assert [o.correct for o in outcomes] == [n < cut for n in dev_numbers(ctx)]
    assert all(o.extracted is not None for o in outcomes)


async def test_every_prompt_is_asked_every_example_of_the_split_at_temperature_0() -> None:
    ctx = context(dev=6)
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        await stage.evaluate(ctx, ("One.", "Two."), "test")

    asked = [r for r in transport.requests if isinstance(r, ChatRequest)]
    assert len(asked) == 2 * len(ctx.splits.test)
    assert {r.temperature for r in asked} == {0.0}
    assert {r.messages[-1].content for r in asked} == {
        f"{e.input}\n\n{p}" for e in ctx.splits.test for p in ("One.", "Two.")
    }


def broken(request: ChatRequest) -> TransportReply:
    raise RuntimeError("the task model is down")


@pytest.mark.parametrize("split", ["dev", "test"])
async def test_a_failing_call_fails_the_whole_evaluation(split: Split) -> None:
    async with evaluation(FakeTransport(chat=broken)) as stage:
        with pytest.raises(RuntimeError, match="the task model is down"):
            await stage.evaluate(context(), ("One.",), split)


async def test_after_a_failing_call_the_evaluation_sends_no_more_calls() -> None:
    transport = FakeTransport(chat=broken)

    async with evaluation(transport, workers=1, buffer=16) as stage:
        with pytest.raises(RuntimeError):
            await stage.evaluate(context(dev=8), ("One.", "Two."), "dev")

    assert len(transport.requests) == 1  # of 16: those queued when it failed are skipped


class Models:
    """The stages' model protocol without a gateway: every task question answered right."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    async def chat(
        self,
        endpoint: str,
        request: ChatRequest,
        *,
        job: str | None = None,
        deferrable: bool = False,
    ) -> Completion:
        assert deferrable  # evaluation's calls may wait for a provider batch
        self.asked.append((endpoint, job))
        choice = answer(request).choices[0]
        return Completion(
            choices=(choice,),
            usage=Usage(),
            cost_usd=0.0,
            latency_s=0.0,
            attempts=1,
            requests=1,
            cached=False,
        )

    async def embed(
        self, endpoint: str, texts: Sequence[str], *, job: str | None = None
    ) -> Embeddings:
        raise AssertionError("not asked for embeddings")


async def test_the_stage_needs_only_chat_and_embed_of_its_models() -> None:
    models = Models()
    stage = Evaluation(models, call_workers=2)

    async with stage.call_pool():
        scored = await stage.evaluate(context(dev=4), ("One.",), "dev")

    assert [e.score for e in scored] == [100.0]
    assert models.asked == [("ep", "t")] * 4


async def test_a_failing_call_raises_its_own_error_while_prompts_are_embedded() -> None:
    transport = FakeTransport(chat=broken, embed=embed)

    async with evaluation(transport) as stage:
        with pytest.raises(RuntimeError, match="the task model is down"):
            await stage.evaluate(context(embeddings=True), ("One.",), "dev")


async def test_new_dev_prompts_are_embedded_for_the_next_retrieval() -> None:
    transport = FakeTransport(chat=answer, embed=embed)

    async with evaluation(transport) as stage:
        await stage.evaluate(context(embeddings=True), ("One.", "Two."), "dev")

    embedded = [r for r in transport.requests if isinstance(r, EmbeddingRequest)]
    assert [set(r.inputs) for r in embedded] == [{"One.", "Two."}]


async def test_an_eval_request_is_answered_with_its_results() -> None:
    ctx = context()
    request = EvalRequest(context=ctx, purpose="initial", prompts=("One.",), split="dev")

    async with evaluation(FakeTransport(chat=answer)) as stage:
        done = await stage.handle(request)

    assert isinstance(done, EvalDone)
    assert done.request is request
    assert [e.score for e in done.results] == [100.0]


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        ("after", (Message(role="user", content="What is 2 + 1?\n\nBe exact."),)),
        ("before", (Message(role="user", content="Be exact.\n\nWhat is 2 + 1?"),)),
        (
            "system",
            (
                Message(role="system", content="Be exact."),
                Message(role="user", content="What is 2 + 1?"),
            ),
        ),
    ],
)
def test_task_messages_place_the_prompt(placement: str, expected: tuple[Message, ...]) -> None:
    assert task_messages("Be exact.", "What is 2 + 1?", placement) == expected


@pytest.mark.parametrize("placement", ["after", "before", "system"])
def test_an_empty_prompt_sends_the_question_alone(placement: str) -> None:
    assert task_messages("  ", "What is 2 + 1?", placement) == (
        Message(role="user", content="What is 2 + 1?"),
    )


async def test_the_job_placement_reaches_the_task_model() -> None:
    ctx = context(placement="system")
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        await stage.evaluate(ctx, ("Be exact.",), "dev")

    asked = [r for r in transport.requests if isinstance(r, ChatRequest)]
    assert {r.messages[0] for r in asked} == {Message(role="system", content="Be exact.")}


def step(ctx: JobContext, current: Evaluated, seen: dict[str, float], *new: str) -> Candidates:
    ticket = StepTicket(
        context=ctx,
        step=1,
        trajectory=(),
        current=current,
        seen=MappingProxyType(
            {normalize_prompt(p): ShownPrompt(text=p, score=s) for p, s in seen.items()}
        ),
    )
    meta = MetaPrompt(ticket=ticket, text="", word_budget=20, shown=())
    candidates = tuple(Candidate(prompt=p, edit_distance=1, over_budget=False) for p in new)
    return Candidates(
        meta=meta, candidates=candidates, parse_failures=0, reasks=0, rejected_over_budget=0
    )


async def test_a_step_scores_new_candidates_only_and_reuses_seen_scores() -> None:
    ctx = context(dev=4)
    low = sorted(dev_numbers(ctx))[1]
    current = Evaluated(prompt="Current.", score=75.0, outcomes=())
    batch = step(ctx, current, {"Old one.": 90.0}, "OLD ONE", f"New. [right={low}]")
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        outcome = await stage.handle(batch)

    assert isinstance(outcome, StepOutcome)
    records = outcome.record.candidates
    assert [(r.prompt, r.score, r.new) for r in records] == [
        ("OLD ONE", 90.0, False),
        (f"New. [right={low}]", 25.0, True),
    ]
    assert len(transport.requests) == 4
    assert [e.prompt for e in outcome.evaluated] == [f"New. [right={low}]"]


async def test_a_step_selects_the_best_new_candidate_even_below_the_current_one() -> None:
    ctx = context(dev=4)
    numbers = sorted(dev_numbers(ctx))
    current = Evaluated(prompt="Current.", score=100.0, outcomes=())
    worse, better = f"Worse. [right={numbers[1]}]", f"Better. [right={numbers[3]}]"
    batch = step(ctx, current, {"Seen.": 95.0}, worse, "seen", better)

    async with evaluation(FakeTransport(chat=answer)) as stage:
        outcome = await stage.handle(batch)

    assert isinstance(outcome, StepOutcome)
    assert (outcome.selected.prompt, outcome.selected.score) == (better, 75.0)
    assert (outcome.record.selected, outcome.record.selected_score) == (better, 75.0)
    assert len(outcome.selected.outcomes) == 4


async def test_a_step_with_no_candidates_stays_on_the_current_prompt() -> None:
    ctx = context()
    current = Evaluated(prompt="Current.", score=60.0, outcomes=())
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        outcome = await stage.handle(step(ctx, current, {}))

    assert isinstance(outcome, StepOutcome)
    assert outcome.selected is current
    assert transport.requests == []


async def test_a_reused_selection_gets_its_answers_back_for_reflection() -> None:
    reflecting = dataclasses.replace(context(dev=4), strategy=strategy("apo"))
    current = Evaluated(prompt="Current.", score=20.0, outcomes=())
    batch = step(reflecting, current, {"Seen. [right=0]": 60.0}, "seen. [right=0]")
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        outcome = await stage.handle(batch)

    assert isinstance(outcome, StepOutcome)
    assert outcome.selected.score == 60.0  # the score first measured is kept
    assert len(outcome.selected.outcomes) == 4
    assert not any(o.correct for o in outcome.selected.outcomes)  # [right=0]: all wrong
    assert outcome.evaluated == ()  # nothing new was scored


async def test_without_reflection_a_reused_selection_costs_no_call() -> None:
    current = Evaluated(prompt="Current.", score=20.0, outcomes=())
    batch = step(context(dev=4), current, {"Seen.": 60.0}, "seen")
    transport = FakeTransport(chat=answer)

    async with evaluation(transport) as stage:
        outcome = await stage.handle(batch)

    assert isinstance(outcome, StepOutcome)
    assert outcome.selected.outcomes == ()
    assert transport.requests == []


def mumble(request: ChatRequest) -> TransportReply:
    """No number at all for a prompt that says "Mumble."; the right answer otherwise."""
    if "Mumble." in request.messages[0].content:
        reply = "I am not sure how to work this out."
        return TransportReply(choices=(Choice(text=reply, finish_reason="stop"),), usage=Usage())
    return answer(request)


async def test_an_evaluation_tallies_the_outputs_with_no_answer_to_read() -> None:
    ctx = context(dev=4)

    async with evaluation(FakeTransport(chat=mumble)) as stage:
        scored = await stage.evaluate(ctx, ("Mumble.", "Add one."), "dev")

    assert [e.tally for e in scored] == [Tally(4, 4), Tally(4, 0)]


async def test_outputs_judged_by_a_custom_metric_are_not_tallied() -> None:
    ctx = dataclasses.replace(context(dev=4), metric=custom_metric(lambda output, target: False))

    async with evaluation(FakeTransport(chat=mumble)) as stage:
        scored = await stage.evaluate(ctx, ("Mumble.",), "dev")

    assert scored[0].tally == Tally()  # a bare bool says nothing about reading an answer


async def test_a_step_record_counts_its_new_outputs_and_the_replies_generation_dropped() -> None:
    ctx = context(dev=4)
    current = Evaluated(prompt="Current.", score=50.0, outcomes=())
    batch = dataclasses.replace(
        step(ctx, current, {"Seen.": 90.0}, "Mumble.", "Add one.", "seen"),
        parse_failures=3,
        rejected_unchanged=2,
        rejected_exemplar_copy=1,
    )

    async with evaluation(FakeTransport(chat=mumble)) as stage:
        outcome = await stage.handle(batch)

    assert isinstance(outcome, StepOutcome)
    record = outcome.record
    assert (record.judged, record.unextractable) == (8, 4)
    assert (record.parse_failures, record.rejected_unchanged, record.rejected_exemplar_copy) == (
        3,
        2,
        1,
    )
