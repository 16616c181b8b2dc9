"""The run journal: nothing appended is lost on exit, and it reads back what was written."""

from __future__ import annotations

import dataclasses
import errno
import io
import sys
from pathlib import Path
from typing import IO, Any, cast

import anyio
import orjson

from pipeline.errors import StorageError
from pipeline.rundir._journal import Journal, open_journal, read_journal
from pipeline.runner._jobs import Job, OptimizerSettings, build_context
from pipeline.runner._state import JobState
from pipeline.tasks._data import Example
from stages.messages import CandidateRecord, Evaluated, Outcome, StepRecord, Tally
from tests.fakes import FakeClock

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


async def test_each_line_is_stamped_with_seconds_since_opening_on_the_injected_clock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    clock = FakeClock(start=100.0)
    async with open_journal(path, clock=clock) as journal:
        journal.append({"event": "a"})
        clock.advance(1.25)
        journal.append({"event": "b"})
    _, events = read_journal(path)
    assert [(e["event"], e["t"]) for e in events] == [("a", 0.0), ("b", 1.25)]


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


async def test_a_resumed_job_keeps_its_rejection_and_extraction_counts(tmp_path: Path) -> None:
    examples = tuple(Example(input=f"q{i}", target="1") for i in range(12))
    job = Job(name="j", examples=examples, task_endpoint="ep", dev_size=4, test_size=2)
    ctx = build_context(job, 0, OptimizerSettings())
    step = dataclasses.replace(
        record(1), rejected_unchanged=2, rejected_exemplar_copy=1, judged=4, unextractable=3
    )
    initial = Evaluated(prompt="start", score=25.0, outcomes=(OUTCOME,), tally=Tally(4, 1))
    selected = Evaluated(prompt="p1", score=50.0, outcomes=())
    before = JobState(context=ctx)
    before.start(initial)
    before.replay_step(step, selected)
    before.tested((Evaluated(prompt="p1", score=50.0, outcomes=(), tally=Tally(2, 2)),))
    path = tmp_path / "journal.jsonl"
    async with open_journal(path) as journal:  # outputs not kept: the tallies must be
        journal.job_started("j", initial, keep_outputs=False)
        selected_line = {"prompt": "p1", "score": 50.0, "outcomes": []}
        step_line = {"record": dataclasses.asdict(step), "selected": selected_line}
        journal.append({"event": "step", "job": "j", **step_line})
        journal.job_tested("j", before.test_scores, before.test_tally)

    after = JobState(context=ctx)
    after.restore(read_journal(path)[0]["j"])

    assert after.records == before.records
    assert (
        (after.tally, after.test_tally)
        == (Tally(10, 6), Tally(2, 2))
        == (
            before.tally,
            before.test_tally,
        )
    )


def test_a_journal_written_before_tallies_existed_reads_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = [
        {"event": "initial", "job": "j", "prompt": "start", "score": 25.0, "outcomes": []},
        {"event": "tested", "job": "j", "scores": {"start": 20.0}},
    ]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    history = read_journal(path)[0]["j"]
    assert history.initial is not None
    assert (history.initial.tally, history.test_tally) == (Tally(), Tally())


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event": "ended", "job": "j", "status": "finished"}\n{"event": "st')
    jobs, other = read_journal(path)
    assert jobs["j"].status == "finished"
    assert other == []


async def test_a_line_torn_by_a_crash_is_cut_before_new_lines_are_appended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event": "run_started"}\n{"event": "initial", "job": "a", "pro')
    async with open_journal(path) as journal:
        journal.append({"event": "run_ended", "status": "finished"})
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["event"] for line in lines] == ["run_started", "run_ended"]


class FullDisk(io.RawIOBase):
    """A file on a disk that fills up after ``room`` bytes: then a write fails (ENOSPC)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.data = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = bytes(data[: self.room])
        self.data += taken
        self.room -= len(taken)
        return len(taken)

    def fileno(self) -> int:
        return sys.stderr.fileno()  # fsync of a terminal or pipe is harmless here


async def test_a_full_disk_is_a_recorded_fault_and_nothing_more_is_written() -> None:
    disk = FullDisk(room=30)
    faults: list[StorageError] = []
    journal = Journal(
        cast(IO[bytes], disk), path=Path("runs/x/journal.jsonl"), on_fault=faults.append
    )
    journal.append({"event": "run_started"})
    journal.append({"event": "step", "job": "a", "padding": "x" * 100})
    await journal.sync()  # does not raise: the run is told through on_fault
    assert journal.fault is not None
    assert faults == [journal.fault]
    assert "runs/x/journal.jsonl" in str(journal.fault)
    assert "No space left" in str(journal.fault)
    written = disk.data
    disk.room = 10_000  # space freed: this session still writes nothing more
    journal.append({"event": "run_ended"})
    await journal.sync()
    assert disk.data == written


async def test_a_raced_out_candidate_reads_back_with_its_flag_and_examples(tmp_path: Path) -> None:
    raced = CandidateRecord(
        prompt="p9",
        score=25.0,
        new=True,
        edit_distance=3,
        over_budget=False,
        raced_out=True,
        examples_scored=12,
    )
    step = dataclasses.replace(record(1), candidates=(*record(1).candidates, raced))
    path = tmp_path / "journal.jsonl"
    line = dataclasses.asdict(step)
    for key in ("raced_out", "examples_scored"):  # the first as journaled before racing existed
        del line["candidates"][0][key]
    async with open_journal(path) as journal:
        selected = {"prompt": "p1", "score": 50.0, "outcomes": []}
        journal.append({"event": "step", "job": "j", "record": line, "selected": selected})

    (read, _), *_ = read_journal(path)[0]["j"].steps
    assert read == step
    assert (read.candidates[1].raced_out, read.candidates[1].examples_scored) == (True, 12)
    assert (read.candidates[0].raced_out, read.candidates[0].examples_scored) == (False, None)
