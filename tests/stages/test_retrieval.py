"""Stage 1, trajectory retrieval: which past prompts the optimizer is shown, in which order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType

import pytest

from pipeline.llm._gateway import Gateway
from pipeline.llm._values import EmbeddingReply, EmbeddingRequest, Usage
from pipeline.llm.transports._fake import FakeTransport
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.tasks._data import Example
from stages.edits import normalize_prompt
from stages.messages import Entry, Evaluated, StepTicket
from stages.metaprompt import ShownPrompt
from stages.retrieval import Retrieval
from stages.strategy import Strategy, strategy
from tests.fakes import endpoint_config, open_test_gateway

CURRENT = "Think step by step and check the sum."
# Oldest first; lexically, the first is the most similar to CURRENT and the third the next most.
PAST = (
    ("Think step by step and check each sum.", 40.0),
    ("Write only the final number.", 45.0),
    ("Think step by step.", 50.0),
    ("Check the sum twice.", 55.0),
)
# Embeddings that disagree with the words: the second past prompt is the closest, then the fourth.
VECTORS = {
    CURRENT: (1.0, 0.0, 0.0),
    "Write only the final number.": (0.9, 0.1, 0.0),
    "Check the sum twice.": (0.6, 0.4, 0.0),
}


def embed(request: EmbeddingRequest) -> EmbeddingReply:
    vectors = tuple(VECTORS.get(text, (0.0, 0.0, 1.0)) for text in request.inputs)
    return EmbeddingReply(vectors=vectors, usage=Usage(input_tokens=len(request.inputs)))


@asynccontextmanager
async def gateway(transport: FakeTransport) -> AsyncIterator[Gateway]:
    async with open_test_gateway(transport, config=endpoint_config(name="ep")) as gw:
        yield gw


def ticket(
    plan: Strategy,
    *,
    embeddings: bool = False,
    seen: Sequence[tuple[str, float]] = (),
) -> StepTicket:
    job = Job(
        name="t",
        examples=tuple(Example(input=f"What is {i} + 1?", target=str(i + 1)) for i in range(10)),
        task_endpoint="ep",
        embedding_endpoint="ep" if embeddings else None,
        dev_size=4,
        test_size=2,
        strategy=plan,
    )
    ctx = build_context(job, 0, OptimizerSettings())
    history = (*PAST, (CURRENT, 60.0))
    trajectory = tuple(Entry(step=i, prompt=p, score=s) for i, (p, s) in enumerate(history))
    shown = {normalize_prompt(p): ShownPrompt(text=p, score=s) for p, s in seen}
    return StepTicket(
        context=ctx,
        step=len(trajectory),
        trajectory=trajectory,
        current=Evaluated(prompt=CURRENT, score=60.0, outcomes=()),
        seen=MappingProxyType(shown),
    )


async def retrieve(step: StepTicket, transport: FakeTransport | None = None) -> list[str]:
    async with gateway(transport or FakeTransport()) as gw:
        direction = await Retrieval(gw).handle(step)
    assert direction.ticket is step
    return [p.text for p in direction.shown]


async def test_lexical_relevance_shows_the_most_similar_past_prompts_most_similar_last() -> None:
    transport = FakeTransport()
    plan = strategy("gpo", relevance_backend="lexical")

    shown = await retrieve(ticket(plan), transport)

    assert shown == ["Think step by step.", "Think step by step and check each sum."]
    assert transport.requests == []


async def test_relevance_without_an_embedding_endpoint_falls_back_to_words() -> None:
    shown = await retrieve(ticket(strategy("gpo")), FakeTransport(embed=embed))

    assert shown == ["Think step by step.", "Think step by step and check each sum."]


async def test_embedding_relevance_ranks_by_cosine_over_vectors() -> None:
    transport = FakeTransport(embed=embed)

    shown = await retrieve(ticket(strategy("gpo"), embeddings=True), transport)

    assert shown == ["Check the sum twice.", "Write only the final number."]
    assert len(transport.requests) == 1
    request = transport.requests[0]
    assert isinstance(request, EmbeddingRequest)
    assert set(request.inputs) == {CURRENT, *(p for p, _ in PAST)}


async def test_relevance_shows_k_minus_one_prompts() -> None:
    plan = strategy("gpo", relevance_backend="lexical", k=4)

    shown = await retrieve(ticket(plan))

    assert shown == [
        "Check the sum twice.",
        "Think step by step.",
        "Think step by step and check each sum.",
    ]


async def test_recency_shows_the_latest_past_prompts_oldest_first() -> None:
    shown = await retrieve(ticket(strategy("pe2")))

    assert shown == ["Think step by step.", "Check the sum twice."]


async def test_importance_shows_the_best_seen_prompts_in_ascending_score_order() -> None:
    seen = [("A.", 40.0), ("B.", 70.0), ("C.", 55.0), ("D.", 80.0), (CURRENT, 90.0)]

    shown = await retrieve(ticket(strategy("opro", k=3), seen=seen))

    assert shown == ["B.", "D."]


async def test_importance_shows_every_seen_prompt_but_the_current_up_to_k_minus_one() -> None:
    seen = [("A.", 40.0), ("B.", 70.0), ("C.", 55.0), (CURRENT, 90.0)]

    shown = await retrieve(ticket(strategy("opro"), seen=seen))

    assert shown == ["A.", "C.", "B."]


@pytest.mark.parametrize("preset", ["ape", "apo", "baseline"])
async def test_no_trajectory_shows_nothing_and_asks_nothing(preset: str) -> None:
    transport = FakeTransport(embed=embed)

    shown = await retrieve(ticket(strategy(preset), embeddings=True), transport)

    assert shown == []
    assert transport.requests == []


async def test_the_first_step_has_no_past_prompt_to_show() -> None:
    step = ticket(strategy("gpo", relevance_backend="lexical"))
    first = StepTicket(
        context=step.context, step=1, trajectory=step.trajectory[-1:], current=step.current
    )

    assert await retrieve(first) == []
