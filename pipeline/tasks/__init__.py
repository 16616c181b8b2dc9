"""Task data and metrics: examples loaded from files or memory, their seeded splits, and how a
task model's free-text answer is judged against the gold target."""

from pipeline.tasks._data import Example, Splits, examples_from, load_examples, split_examples
from pipeline.tasks._metrics import (
    Judgement,
    Metric,
    auto_metric,
    custom_metric,
    judge,
    metric_by_name,
)

__all__ = [
    "Example",
    "Judgement",
    "Metric",
    "Splits",
    "auto_metric",
    "custom_metric",
    "examples_from",
    "judge",
    "load_examples",
    "metric_by_name",
    "split_examples",
]
