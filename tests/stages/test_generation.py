"""Stage 3, candidate generation: one request for n candidates, strict tag parsing, bounded
re-asks for the missing number, de-duplication, and the word budget measured and enforced."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pytest

from pipeline.llm._values import ChatRequest, Choice, TransportReply, Usage
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.tasks._data import Example
from stages.generation import Generation
from stages.messages import Candidates, Entry, Evaluated, MetaPrompt, StepTicket
from stages.metaprompt import ShownPrompt
from stages.strategy import Strategy, strategy
from tests.fakes import endpoint_config, open_test_gateway

CURRENT = "Let's think step by step."


class Replies:
    """A chat handler answering the i-th request with ``batches[i]`` (the last one repeats),
    cut to the ``n`` the request asked for."""

    def __init__(self, *batches: Sequence[str]) -> None:
        self.batches = list(batches)
        self.asked: list[ChatRequest] = []

    def __call__(self, request: ChatRequest) -> TransportReply:
        batch = self.batches[min(len(self.asked), len(self.batches) - 1)]
        self.asked.append(request)
        texts = list(batch)[: request.n]
        return TransportReply(
            choices=tuple(Choice(text=t, finish_reason="stop") for t in texts),
            usage=Usage(input_tokens=10, output_tokens=len(texts)),
        )

    @property
    def n(self) -> list[int]:
        return [r.n for r in self.asked]


def meta_prompt(
    plan: Strategy, *, word_budget: int | None = None, shown: tuple[ShownPrompt, ...] = ()
) -> MetaPrompt:
    job = Job(
        name="t",
        examples=tuple(
            Example(input=f"Tom has {i} apples and buys one more. How many now?", target=str(i + 1))
            for i in range(10)
        ),
        task_endpoint="ep",
        dev_size=4,
        test_size=2,
        strategy=plan,
    )
    ctx = build_context(job, 0, OptimizerSettings(optimizer_max_tokens=64))
    ticket = StepTicket(
        context=ctx,
        step=1,
        trajectory=(Entry(step=0, prompt=CURRENT, score=50.0),),
        current=Evaluated(prompt=CURRENT, score=50.0, outcomes=()),
        seen=MappingProxyType({}),
    )
    text = "Write a new prompt between <START> and <END>."
    return MetaPrompt(ticket=ticket, text=text, word_budget=word_budget, shown=shown)


async def generate(handler: Replies, meta: MetaPrompt) -> Candidates:
    transport = FakeTransport(chat=handler)
    async with open_test_gateway(transport, config=endpoint_config(name="ep")) as gw:
        return await Generation(gw).handle(meta)


def prompts(batch: Candidates) -> list[str]:
    return [c.prompt for c in batch.candidates]


async def test_all_candidates_come_from_one_request_at_the_optimizer_temperature() -> None:
    handler = Replies([f"<START>Prompt {i}.<END>" for i in range(8)])

    batch = await generate(handler, meta_prompt(strategy("gpo")))

    assert prompts(batch) == [f"Prompt {i}." for i in range(8)]
    assert [(r.n, r.temperature) for r in handler.asked] == [(8, 1.0)]
    assert (batch.parse_failures, batch.reasks) == (0, 0)


async def test_replies_without_tags_are_counted_failures_never_used_whole() -> None:
    handler = Replies(
        ["<START>A.<END>", "Just be careful.", "<START>B.<END>", "<START>unclosed"],
        ["<START>C.<END>", "<START>D.<END>"],
    )

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=4)))

    assert prompts(batch) == ["A.", "B.", "C.", "D."]
    assert batch.parse_failures == 2


async def test_a_reask_asks_only_for_the_missing_number() -> None:
    handler = Replies(
        ["<START>A.<END>", "no tags", "<START>B.<END>", "no tags"],
        ["<START>C.<END>", "no tags"],
        ["<START>D.<END>"],
    )

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=4)))

    assert handler.n == [4, 2, 1]
    assert batch.reasks == 2
    assert prompts(batch) == ["A.", "B.", "C.", "D."]


async def test_reasks_stop_after_max_reasks() -> None:
    handler = Replies(["I would rather not."] * 4)

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=4, max_reasks=2)))

    assert handler.n == [4, 4, 4]
    assert batch.candidates == ()
    assert (batch.parse_failures, batch.reasks) == (12, 2)


async def test_no_reask_when_max_reasks_is_zero() -> None:
    handler = Replies(["<START>A.<END>", "no tags"])

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=2, max_reasks=0)))

    assert handler.n == [2]
    assert prompts(batch) == ["A."]


async def test_a_preamble_naming_the_tags_does_not_become_the_candidate() -> None:
    handler = Replies(["I will answer with <START> and <END>: <START>Add carefully.<END>"])

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=1)))

    assert prompts(batch) == ["Add carefully."]


async def test_duplicates_within_a_batch_are_removed_keeping_the_first_spelling() -> None:
    handler = Replies(
        [
            "<START>Be brief.<END>",
            "<START>be  BRIEF<END>",
            "<START>Be exact.<END>",
            "<START>Be brief!<END>",
        ]
    )

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=4)))

    assert prompts(batch) == ["Be brief.", "Be exact."]
    assert (batch.parse_failures, batch.reasks) == (0, 0)


async def test_each_candidate_records_its_word_edit_distance_to_the_current_prompt() -> None:
    handler = Replies(
        [
            "<START>Let's think, step by step.<END>",
            "<START>Let's think step by step carefully.<END>",
            "<START>Let us reason about it slowly and check.<END>",
        ]
    )

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=3), word_budget=2))

    assert [(c.edit_distance, c.over_budget) for c in batch.candidates] == [
        (0, False),
        (1, False),
        (8, True),
    ]
    assert batch.rejected_over_budget == 0


async def test_without_a_word_budget_nothing_is_over_budget() -> None:
    handler = Replies(["<START>Something completely different and much longer.<END>"])

    batch = await generate(handler, meta_prompt(strategy("opro", candidates=1)))

    assert [c.over_budget for c in batch.candidates] == [False]


async def test_reject_over_budget_drops_candidates_that_change_too_many_words() -> None:
    handler = Replies(
        [
            "<START>Let's think step by step carefully.<END>",
            "<START>Let us reason about it slowly and check.<END>",
        ]
    )
    plan = strategy("gpo", candidates=2, reject_over_budget=True)

    batch = await generate(handler, meta_prompt(plan, word_budget=2))

    assert prompts(batch) == ["Let's think step by step carefully."]
    assert batch.rejected_over_budget == 1


# --- replies that are tagged but no candidate ---------------------------------------------------


async def test_closing_tag_variants_of_small_models_are_read() -> None:
    handler = Replies(
        [
            "<START>Count each item once.</END>",
            "<START>Add the numbers carefully.<END/>",
            "<START>Check the total twice.<\\END>",
            "Here it is:\n<START>\nWrite the final count.\n</ END>",
            "<START>State the number.</START>",
        ]
    )

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=5)))

    assert prompts(batch) == [
        "Count each item once.",
        "Add the numbers carefully.",
        "Check the total twice.",
        "Write the final count.",
        "State the number.",
    ]
    assert batch.parse_failures == 0


def exemplar() -> str:
    plan = strategy("gpo", candidates=1)
    return meta_prompt(plan).ticket.context.splits.exemplars[0].input


COPIES = [
    pytest.param(f"Input:\n{exemplar()}\n<Prompt>\nOutput:\n3", id="exemplar block"),
    pytest.param("Input: the question\nOutput: the answer", id="input/output framing"),
    pytest.param(f"Solve this: {exemplar()}", id="an exemplar's input"),
    pytest.param("Solve it. <Prompt>", id="the placeholder"),
    pytest.param("text:\nCount the apples first.\nscore:\n61", id="trajectory entry"),
    pytest.param("Count the apples first. (Score: 61)", id="prompt with its score"),
    pytest.param("Count the apples first. It scores 61 out of 100.", id="score sentence"),
    pytest.param("count the apples FIRST", id="a shown prompt"),
    pytest.param("...", id="the output format's example"),
]


@pytest.mark.parametrize("copied", COPIES)
async def test_a_copy_of_the_meta_prompt_is_a_counted_rejection(copied: str) -> None:
    handler = Replies([f"<START>{copied}<END>"], ["<START>Add one to the count.<END>"])
    shown = (ShownPrompt(text="Count the apples first.", score=61.0),)

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=1), shown=shown))

    assert prompts(batch) == ["Add one to the count."]
    assert (batch.rejected_exemplar_copy, batch.rejected_unchanged) == (1, 0)
    assert (batch.parse_failures, batch.reasks) == (0, 1)


@pytest.mark.parametrize(
    "reply", [f"<START>{CURRENT}<END>", "<START>  let's think STEP by step <END>"]
)
async def test_the_current_prompt_back_is_a_counted_rejection_and_asked_again(reply: str) -> None:
    handler = Replies([reply, "<START>Add one to the count.<END>"], ["<START>Be exact.<END>"])

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=2)))

    assert handler.n == [2, 1]
    assert prompts(batch) == ["Add one to the count.", "Be exact."]
    assert (batch.rejected_unchanged, batch.rejected_exemplar_copy, batch.reasks) == (1, 0, 1)


async def test_rejections_are_reasked_no_more_than_max_reasks() -> None:
    handler = Replies([f"<START>{CURRENT}<END>", "<START>Input:\nx\nOutput:\ny<END>", "none"])

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=3, max_reasks=1)))

    assert handler.n == [3, 3]
    assert batch.candidates == ()
    counts = (batch.rejected_unchanged, batch.rejected_exemplar_copy, batch.parse_failures)
    assert counts == (2, 2, 2)


@pytest.mark.parametrize(
    "prompt",
    [
        "Output: only the number, nothing else.",
        "Read the input carefully, then give the score of each option.",
        "Think step by step, then answer.",
    ],
)
async def test_a_prompt_that_mentions_inputs_or_outputs_is_no_copy(prompt: str) -> None:
    handler = Replies([f"<START>{prompt}<END>"])

    batch = await generate(handler, meta_prompt(strategy("gpo", candidates=1)))

    assert prompts(batch) == [prompt]
