"""Racing of a step's candidates: the seeded order, the rounds, McNemar's bound, the round loop,
and the evaluation stage racing a step (fewer calls, the selection always full-dev scored)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import pytest

from pipeline._seeds import derive_seed
from pipeline.errors import ConfigError
from pipeline.llm._values import ChatRequest, Choice, Completion, Embeddings, Usage
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.runner._state import JobState
from pipeline.tasks._data import Example
from stages.edits import normalize_prompt
from stages.evaluation import Evaluation
from stages.messages import (
    Candidate,
    CandidateRecord,
    Candidates,
    Evaluated,
    JobContext,
    MetaPrompt,
    Outcome,
    StepOutcome,
    StepRecord,
    StepTicket,
)
from stages.racing import overtake_z, race, race_order, rounds_of, stopped
from stages.strategy import strategy

# --- the order and the rounds -------------------------------------------------------------------


def test_the_order_is_a_permutation_fixed_by_its_seed() -> None:
    order = race_order(48, 7)
    assert sorted(order) == list(range(48))
    assert race_order(48, 7) == order
    assert race_order(48, 8) != order
    assert order != tuple(range(48))


@pytest.mark.parametrize(("size", "rounds", "sizes"), [(48, 4, [12] * 4), (10, 4, [2, 3, 2, 3])])
def test_rounds_cut_the_order_into_even_consecutive_slices(
    size: int, rounds: int, sizes: list[int]
) -> None:
    order = race_order(size, 1)
    cut = rounds_of(order, rounds)
    assert [len(c) for c in cut] == sizes
    assert tuple(i for c in cut for i in c) == order


def test_more_rounds_than_examples_gives_one_example_a_round() -> None:
    assert rounds_of((2, 0, 1), 4) == ((2,), (0,), (1,))
    assert rounds_of((), 4) == ()


# --- the bound ----------------------------------------------------------------------------------


def test_the_gap_counts_only_the_examples_on_which_the_two_disagree() -> None:
    leader = [True] * 6 + [False] * 6
    other = [False] * 4 + [True] * 2 + [False] * 5 + [True]  # leader ahead on 4, behind on 1
    rate = (4 + 1 + 1) / (12 + 2)
    assert overtake_z(leader, other, 36) == pytest.approx(3 / math.sqrt(rate * 36))
    assert overtake_z(other, leader, 36) == 0.0  # ahead: nothing to catch up
    assert overtake_z(leader, leader, 36) == 0.0
    assert overtake_z(leader, other, 0) == math.inf  # behind with nothing left


@pytest.mark.parametrize(("left", "needed"), [(36, 7), (24, 3), (12, 2)])
def test_the_evidence_needed_shrinks_with_the_examples_left(left: int, needed: int) -> None:
    seen = 48 - left

    def behind(by: int) -> list[bool]:
        return [False] * by + [True] * (seen - by)

    assert stopped([[True] * seen, behind(needed)], 1.5, left) == {1}
    assert stopped([[True] * seen, behind(needed - 1)], 1.5, left) == frozenset()


def test_the_leader_is_never_stopped_and_the_first_of_equals_leads() -> None:
    a = [True] * 6 + [False] * 6
    b = [False] * 6 + [True] * 6  # as many right as a, on the other examples
    c = [False] * 6 + [True] + [False] * 5  # 5 behind both; 5 disagreements with b, 7 with a
    assert overtake_z(b, c, 12) > 2.0 > overtake_z(a, c, 12)
    assert stopped([a, b, c], 2.0, 12) == frozenset()  # a leads
    assert stopped([b, a, c], 2.0, 12) == {2}  # b leads
    assert stopped([[False] * 5], 0.1, 10) == frozenset()


# --- the round loop -----------------------------------------------------------------------------


class Scorer:
    """Scores prompts from a table of which dev indices each gets right; records every ask."""

    def __init__(self, right: dict[str, set[int]]) -> None:
        self.right = right
        self.asked: list[tuple[tuple[str, ...], tuple[int, ...]]] = []

    async def __call__(
        self, prompts: tuple[str, ...], at: tuple[int, ...]
    ) -> tuple[tuple[Outcome, ...], ...]:
        self.asked.append((prompts, at))
        return tuple(tuple(self.outcome(p, i) for i in at) for p in prompts)

    def outcome(self, prompt: str, index: int) -> Outcome:
        return Outcome(index=index, correct=index in self.right[prompt], output="", extracted="x")

    def calls(self) -> int:
        return sum(len(p) * len(at) for p, at in self.asked)


ROUNDS = rounds_of(tuple(range(16)), 4)


async def test_a_hopeless_candidate_stops_and_the_others_see_the_whole_dev_split() -> None:
    scorer = Scorer({"good": set(range(16)), "close": set(range(1, 16)), "bad": set()})

    raced = await race(("good", "close", "bad"), ROUNDS, scorer, 2.0)

    assert [(r.prompt, r.raced_out, len(r.outcomes)) for r in raced] == [
        ("good", False, 16),
        ("close", False, 16),
        ("bad", True, 8),  # 4 behind after round 1 (z = 1.26); 8 behind after 2 (z = 2.98)
    ]
    assert [o.index for o in raced[0].outcomes] == list(range(16))
    assert scorer.calls() == 16 + 16 + 8


async def test_once_one_candidate_is_left_its_remaining_examples_go_in_one_round() -> None:
    scorer = Scorer({"good": set(range(16)), "bad": set()})

    raced = await race(("good", "bad"), ROUNDS, scorer, 2.0)

    assert scorer.asked[2:] == [(("good",), tuple(range(8, 16)))]
    assert [o.index for o in raced[0].outcomes] == list(range(16))


async def test_a_stopped_candidate_keeps_the_outcomes_of_the_examples_it_was_asked() -> None:
    order = race_order(12, 3)
    scorer = Scorer({"good": set(range(12)), "bad": set()})

    raced = await race(("good", "bad"), rounds_of(order, 2), scorer, 2.0)

    bad = raced[1]
    assert bad.raced_out
    assert [o.index for o in bad.outcomes] == sorted(order[:6])  # in dev order


async def test_the_last_round_stops_no_one() -> None:
    scorer = Scorer({"good": set(range(4)), "bad": set()})

    raced = await race(("good", "bad"), rounds_of(tuple(range(4)), 2), scorer, 0.5)

    assert [r.raced_out for r in raced] == [False, True]  # stopped after round 1 of 2 ...
    raced = await race(("good", "bad"), rounds_of(tuple(range(4)), 1), scorer, 0.5)
    assert [r.raced_out for r in raced] == [False, False]  # ... not after the only round


# --- the evaluation stage -----------------------------------------------------------------------

_ASKED = re.compile(r"What is (\d+) \+ 1\?")


class Models:
    """A task model whose prompt ``NAME`` is right on the questions ``right[NAME]`` holds."""

    def __init__(self, right: dict[str, set[int]]) -> None:
        self.right = right
        self.asked: list[tuple[str, int]] = []

    async def chat(
        self,
        endpoint: str,
        request: ChatRequest,
        *,
        job: str | None = None,
        deferrable: bool = False,
    ) -> Completion:
        text = request.messages[-1].content
        found = _ASKED.search(text)
        assert found is not None
        number, prompt = int(found.group(1)), text.rsplit("\n\n", 1)[-1]
        self.asked.append((prompt, number))
        answer = number + 1 if number in self.right[prompt] else number
        return Completion(
            choices=(Choice(text=f"The answer is {answer}.", finish_reason="stop"),),
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


def racing_context(dev: int = 48) -> JobContext:
    job = Job(
        name="t",
        examples=tuple(Example(input=f"What is {i} + 1?", target=str(i + 1)) for i in range(60)),
        task_endpoint="ep",
        dev_size=dev,
        test_size=2,
        strategy=strategy("gpo", evaluation="racing"),
    )
    return build_context(job, 0, OptimizerSettings(scorer_max_tokens=16))


def numbers(ctx: JobContext, at: Sequence[int]) -> set[int]:
    """The questions' numbers of the dev examples at ``at``."""
    found = [_ASKED.search(ctx.splits.dev[i].input) for i in at]
    return {int(m.group(1)) for m in found if m}


def batch(ctx: JobContext, *prompts: str) -> Candidates:
    current = Evaluated(prompt="Current.", score=10.0, outcomes=())
    ticket = StepTicket(context=ctx, step=1, trajectory=(), current=current)
    meta = MetaPrompt(ticket=ticket, text="", word_budget=20, shown=())
    candidates = tuple(Candidate(prompt=p, edit_distance=1, over_budget=False) for p in prompts)
    return Candidates(
        meta=meta, candidates=candidates, parse_failures=0, reasks=0, rejected_over_budget=0
    )


async def race_step(ctx: JobContext, models: Models, *prompts: str) -> StepOutcome:
    stage = Evaluation(models, call_workers=4)
    async with stage.call_pool():
        outcome = await stage.handle(batch(ctx, *prompts))
    assert isinstance(outcome, StepOutcome)
    return outcome


async def test_a_racing_step_selects_a_full_dev_score_over_a_higher_partial_one() -> None:
    ctx = racing_context()
    order = race_order(48, derive_seed(ctx.seed, ctx.id, 1, "racing"))
    early = numbers(ctx, rounds_of(order, 4)[0])  # the first round's 12 questions
    # "Lead." is right on the first round only (12 of 48 = 25 on dev); "Fade." on 5 of the
    # first 12 (42 % of what it was asked), so it is 7 behind there and stops.
    models = Models({"Lead.": early, "Fade.": set(sorted(early)[:5])})

    outcome = await race_step(ctx, models, "Lead.", "Fade.")

    lead, fade = outcome.record.candidates
    assert (lead.raced_out, lead.examples_scored, lead.score) == (False, 48, 25.0)
    assert (fade.raced_out, fade.examples_scored) == (True, 12)
    assert fade.score == pytest.approx(100 * 5 / 12)
    assert (outcome.selected.prompt, outcome.selected.score) == ("Lead.", 25.0)
    assert len(outcome.selected.outcomes) == 48
    assert [e.prompt for e in outcome.evaluated] == ["Lead."]  # the full-dev scores only
    assert len(models.asked) == 48 + 12
    assert {n for p, n in models.asked if p == "Lead."} == numbers(ctx, range(48))
    assert outcome.record.judged == 48 + 12


async def test_full_evaluation_scores_every_candidate_on_every_dev_example() -> None:
    ctx = dataclasses.replace(racing_context(), strategy=strategy("gpo"))
    models = Models({"Lead.": numbers(ctx, range(12)), "Fade.": set()})

    outcome = await race_step(ctx, models, "Lead.", "Fade.")

    assert len(models.asked) == 2 * 48
    assert [(c.raced_out, c.examples_scored) for c in outcome.record.candidates] == [
        (False, 48),
        (False, 48),
    ]


async def test_racing_asks_the_same_calls_for_the_same_step_and_others_for_the_next() -> None:
    ctx = racing_context()
    right = {"Good.": numbers(ctx, range(48)), "Bad.": set()}
    asked = []
    for step in (1, 1, 2):
        models = Models(right)
        candidates = batch(ctx, "Good.", "Bad.")
        ticket = dataclasses.replace(candidates.ticket, step=step)
        meta = dataclasses.replace(candidates.meta, ticket=ticket)
        stage = Evaluation(models, call_workers=1)
        async with stage.call_pool():
            await stage.handle(dataclasses.replace(candidates, meta=meta))
        asked.append({n for p, n in models.asked if p == "Bad."})

    assert asked[0] == asked[1]  # a resumed step asks again what the cache holds
    assert asked[0] != asked[2]


def test_a_raced_out_candidate_never_joins_the_prompts_a_job_has_seen() -> None:
    ctx = racing_context()
    state = JobState(context=ctx)
    state.start(Evaluated(prompt="Start.", score=10.0, outcomes=()))
    outcome_record = dataclasses.replace(
        batch_record(), candidates=(record("Lead.", 25.0), record("Fade.", 58.3, raced_out=True))
    )

    state.replay_step(outcome_record, Evaluated(prompt="Lead.", score=25.0, outcomes=()))

    shown = {p.text: p.score for p in state.ticket().seen.values()}
    assert shown == {"Start.": 10.0, "Lead.": 25.0}
    assert [(e.prompt, e.score) for e in state.trajectory] == [("Start.", 10.0), ("Lead.", 25.0)]
    assert normalize_prompt("Fade.") not in state.seen


def record(prompt: str, score: float, *, raced_out: bool = False) -> CandidateRecord:
    return CandidateRecord(
        prompt=prompt,
        score=score,
        new=True,
        edit_distance=1,
        over_budget=False,
        raced_out=raced_out,
        examples_scored=12 if raced_out else 48,
    )


def batch_record() -> StepRecord:
    return StepRecord(
        step=1,
        word_budget=20,
        shown=(),
        reflection=None,
        candidates=(),
        selected="Lead.",
        selected_score=25.0,
        parse_failures=0,
        reasks=0,
        rejected_over_budget=0,
    )


# --- the knobs ----------------------------------------------------------------------------------


def test_racing_is_off_by_default_in_every_preset_and_can_be_set_in_any() -> None:
    assert strategy("gpo").evaluation == "full"
    for preset in ("gpo", "opro", "ape", "apo", "pe2", "baseline"):
        raced = strategy(preset, evaluation="racing", racing_rounds=3, racing_z=1.5)
        assert (raced.evaluation, raced.racing_rounds, raced.racing_z) == ("racing", 3, 1.5)


@pytest.mark.parametrize(
    ("knob", "value"),
    [("evaluation", "fast"), ("racing_rounds", 1), ("racing_z", 0), ("racing_z", math.inf)],
)
def test_bad_racing_knobs_are_refused(knob: str, value: object) -> None:
    with pytest.raises(ConfigError, match=knob):
        strategy("gpo", **{knob: value})
