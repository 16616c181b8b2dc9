"""The optimizer's async stages and the strategy space they implement.

Stages: trajectory retrieval (update direction), decay-controlled refinement (word budget and
meta-prompt), candidate generation (optimizer model), dev-set evaluation (task model fan-out,
selection). Strategies: one frozen :class:`Strategy`, with the paper's methods as presets.

The stages are built on :mod:`pipeline`'s lower layers (the gateway's values, task data and
metrics, the error tree) and reach models only through their own small :class:`Models`
protocol (chat and embed); :mod:`pipeline.runner` drives them. ``pipeline`` is loaded first,
so that its layers are complete whichever of the two packages a program imports first.
"""

import pipeline  # noqa: F401  (the lower layers first; see above)
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
from stages.models import Models
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
    "Models",
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
