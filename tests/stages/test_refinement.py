"""Stage 2, decay-controlled refinement: the step's word budget from the schedule, the
meta-prompt, and the optional reflection call on sampled errors of the current prompt."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pytest

from pipeline.llm._values import ChatRequest, Choice, TransportReply, Usage
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.tasks._data import Example
from stages.messages import Direction, Entry, Evaluated, MetaPrompt, Outcome, StepTicket
from stages.metaprompt import ShownPrompt
from stages.refinement import Refinement
from stages.strategy import Strategy, strategy
from tests.fakes import endpoint_config, open_test_gateway

CURRENT = "Let's think step by step."
FEEDBACK = "The prompt never asks for the final number."


def feedback(request: ChatRequest) -> TransportReply:
    return TransportReply(
        choices=(Choice(text=f"  {FEEDBACK}\n", finish_reason="stop"),),
        usage=Usage(input_tokens=10, output_tokens=8),
    )


def direction(plan: Strategy, *, t: int = 1, dev: int = 48, wrong: Sequence[int] = ()) -> Direction:
    """Step ``t`` (trajectory of length ``t``) of a job with ``dev`` dev examples, whose current
    prompt got the dev examples at ``wrong`` wrong and the others right."""
    job = Job(
        name="t",
        examples=tuple(Example(input=f"What is {i} + 1?", target=str(i + 1)) for i in range(60)),
        task_endpoint="ep",
        dev_size=dev,
        test_size=2,
        strategy=plan,
    )
    ctx = build_context(job, 0, OptimizerSettings(optimizer_max_tokens=64))
    outcomes = tuple(
        Outcome(index=i, correct=i not in wrong, output=f"The answer is {i}.", extracted=str(i))
        for i in range(dev)
    )
    score = 100.0 * (dev - len(wrong)) / dev
    trajectory = tuple(Entry(step=s, prompt=CURRENT, score=score) for s in range(t))
    ticket = StepTicket(
        context=ctx,
        step=t,
        trajectory=trajectory,
        current=Evaluated(prompt=CURRENT, score=score, outcomes=outcomes),
        seen=MappingProxyType({}),
    )
    return Direction(ticket=ticket, shown=(ShownPrompt(text="Add one.", score=33.3),))


async def refine(given: Direction, transport: FakeTransport | None = None) -> MetaPrompt:
    transport = transport or FakeTransport(chat=feedback)
    async with open_test_gateway(transport, config=endpoint_config(name="ep")) as gw:
        return await Refinement(gw).handle(given)


@pytest.mark.parametrize(("t", "expected"), [(1, 49), (2, 48), (5, 42), (9, 30), (18, 10)])
async def test_the_word_budget_follows_the_cosine_schedule(t: int, expected: int) -> None:
    meta = await refine(direction(strategy("gpo"), t=t))  # 48 dev examples: T = 18

    assert meta.word_budget == expected
    assert f"You may change up to {expected} words of the current prompt." in meta.text


async def test_a_fixed_schedule_keeps_the_same_budget() -> None:
    plan = strategy("gpo", schedule="fixed", budget_start=30)

    budgets = [(await refine(direction(plan, t=t))).word_budget for t in (1, 9, 18)]

    assert budgets == [30, 30, 30]


async def test_without_a_schedule_there_is_no_word_limit() -> None:
    meta = await refine(direction(strategy("opro")))

    assert meta.word_budget is None
    assert "change up to" not in meta.text


async def test_the_meta_prompt_shows_the_current_prompt_the_retrieved_ones_and_exemplars() -> None:
    given = direction(strategy("gpo"), t=2, wrong=range(12))

    meta = await refine(given)

    assert meta.shown == given.shown
    assert f"The current prompt is:\n{CURRENT}\nIt scores 75 out of 100." in meta.text
    assert "text:\nAdd one.\nscore:\n33" in meta.text
    exemplars = given.ticket.context.splits.exemplars
    assert len(exemplars) == 3
    assert all(f"Input:\n{e.input}\n<Prompt>\nOutput:\n{e.target}" in meta.text for e in exemplars)


async def test_without_reflection_no_optimizer_call_is_made() -> None:
    transport = FakeTransport(chat=feedback)

    meta = await refine(direction(strategy("gpo"), wrong=range(10)), transport)

    assert meta.reflection is None
    assert transport.requests == []


async def test_reflection_makes_one_call_on_sampled_errors_of_the_current_prompt() -> None:
    transport = FakeTransport(chat=feedback)
    wrong = [0, 2, 3, 5, 7]
    given = direction(strategy("apo"), dev=8, wrong=wrong)
    dev = given.ticket.context.splits.dev

    meta = await refine(given, transport)

    assert len(transport.requests) == 1
    request = transport.requests[0]
    assert isinstance(request, ChatRequest)
    assert request.temperature == 0.0
    asked = request.messages[-1].content
    shown_wrong = [i for i in wrong if f"Input:\n{dev[i].input}\n" in asked]
    assert len(shown_wrong) == 3  # reflection_errors
    assert all(f"Correct answer: {dev[i].target}" in asked for i in shown_wrong)
    assert all(f"Model output: The answer is {i}." in asked for i in shown_wrong)
    assert not any(dev[i].input in asked for i in range(8) if i not in wrong)
    assert meta.reflection == FEEDBACK
    assert FEEDBACK in meta.text


async def test_reflection_shows_every_error_when_there_are_few() -> None:
    transport = FakeTransport(chat=feedback)
    given = direction(strategy("apo", reflection_errors=3), dev=8, wrong=[4])

    await refine(given, transport)

    request = transport.requests[0]
    assert isinstance(request, ChatRequest)
    assert "Example 1:" in request.messages[-1].content
    assert "Example 2:" not in request.messages[-1].content


async def test_reflection_without_errors_makes_no_call() -> None:
    transport = FakeTransport(chat=feedback)

    meta = await refine(direction(strategy("apo"), dev=8), transport)

    assert meta.reflection is None
    assert transport.requests == []
    assert "Feedback" not in meta.text
