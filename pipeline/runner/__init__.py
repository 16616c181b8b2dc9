"""The runner: many optimization jobs flowing through the four stages at once.

What a user asks for and gets back (``_jobs``: :class:`Job`, :class:`OptimizerSettings`, the
progress events, :class:`RunResult`), the run itself (``_run``: admission control, the stages
wired by bounded streams, resume from a journal), its per-job bookkeeping (``_state``), the
``results.json`` document (``_results``) and what a run will cost before it starts
(``_estimate``).
"""

from pipeline.runner._compare import ComparePlan, Comparison, compare
from pipeline.runner._estimate import Estimate, estimate, render
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
    RunTotals,
    StepFinished,
)
from pipeline.runner._run import OptimizerRun, open_optimizer, optimize

__all__ = [
    "BudgetUpdate",
    "CandidateScored",
    "ComparePlan",
    "Comparison",
    "Estimate",
    "Job",
    "JobFinished",
    "JobResult",
    "JobStarted",
    "OptimizerRun",
    "OptimizerSettings",
    "ProgressEvent",
    "RunResult",
    "RunTotals",
    "StepFinished",
    "compare",
    "estimate",
    "open_optimizer",
    "optimize",
    "render",
]
