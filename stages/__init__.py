"""The optimizer's async stages and the strategy space they implement.

Stages: trajectory retrieval (update direction), decay-controlled refinement (word budget and
meta-prompt), candidate generation (optimizer model), dev-set evaluation (task model fan-out,
selection). Strategies: one frozen :class:`Strategy`, with the paper's methods as presets.
"""

from stages.edits import normalize_prompt, word_edit_distance
from stages.evaluation import Evaluation, task_messages
from stages.generation import Generation
from stages.messages import (
    CandidateRecord,
    Entry,
    Evaluated,
    JobContext,
    JobId,
    Outcome,
    StepRecord,
)
from stages.metaprompt import (
    ShownPrompt,
    build_meta_prompt,
    build_reflection_prompt,
    build_summary_prompt,
)
from stages.parsing import extract_tagged
from stages.pool import Stage
from stages.refinement import Refinement
from stages.retrieval import Retrieval
from stages.schedule import steps_per_epoch, total_steps, word_budget
from stages.strategy import PRESETS, Strategy, knobs, strategy

__all__ = [
    "PRESETS",
    "CandidateRecord",
    "Entry",
    "Evaluated",
    "Evaluation",
    "Generation",
    "JobContext",
    "JobId",
    "Outcome",
    "Refinement",
    "Retrieval",
    "ShownPrompt",
    "Stage",
    "StepRecord",
    "Strategy",
    "build_meta_prompt",
    "build_reflection_prompt",
    "build_summary_prompt",
    "extract_tagged",
    "knobs",
    "normalize_prompt",
    "steps_per_epoch",
    "strategy",
    "task_messages",
    "total_steps",
    "word_budget",
    "word_edit_distance",
]
