"""The run journal: nothing appended is lost on exit, and it reads back what was written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio

from pipeline.journal import open_journal, read_journal
from stages.messages import CandidateRecord, Evaluated, Outcome, StepRecord

OUTCOME = Outcome(index=0, correct=False, output="So the answer is 3.", extracted="3")


def record(step: int) -> StepRecord:
    candidate = CandidateRecord(
        prompt=f"p{step}", score=50.0, new=True, edit_distance=2, over_budget=False
    )
    return StepRecord(
        step=step,
        word_budget=49,
        shown=("a",),
        reflection=None,
        candidates=(candidate,),
        selected=f"p{step}",
        selected_score=50.0,
        parse_failures=1,
        reasks=0,
        rejected_over_budget=0,
    )


async def test_lines_appended_just_before_exit_are_written(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with open_journal(path) as journal:
        journal.append({"event": "a"})
        await anyio.sleep(0.05)
        journal.append({"event": "b"})
        journal.append({"event": "c"})
    _, events = read_journal(path)
    assert [e["event"] for e in events] == ["a", "b", "c"]


async def test_lines_survive_a_cancelled_block(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with anyio.move_on_after(0.05):
        async with open_journal(path) as journal:
            journal.append({"event": "a"})
            await anyio.sleep(1)
    _, events = read_journal(path)
    assert [e["event"] for e in events] == ["a"]


async def test_a_job_history_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    initial = Evaluated(prompt="start", score=25.0, outcomes=(OUTCOME,))
    async with open_journal(path) as journal:
        journal.job_started("j", initial, keep_outputs=True)
        journal.append(
            {
                "event": "step",
                "job": "j",
                "record": dataclasses.asdict(record(1)),
                "selected": {"prompt": "p1", "score": 50.0, "outcomes": []},
            }
        )
        journal.job_tested("j", {"start": 20.0, "p1": 40.0})
        journal.job_ended("j", "finished", None)
    jobs, _ = read_journal(path)
    history = jobs["j"]
    assert history.initial == initial
    assert history.steps == [(record(1), Evaluated(prompt="p1", score=50.0, outcomes=()))]
    assert history.test_scores == {"start": 20.0, "p1": 40.0}
    assert (history.status, history.error) == ("finished", None)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event": "ended", "job": "j", "status": "finished"}\n{"event": "st')
    jobs, other = read_journal(path)
    assert jobs["j"].status == "finished"
    assert other == []
