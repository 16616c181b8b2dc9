"""Find a known task question inside the text of a chat request, fast and whitespace/case-blind.

Each example input is tokenised (see :func:`textnorm.tokens`) and indexed under its rarest
run of ``width`` tokens (its *anchor*). A request is scanned once: wherever a token starts some
anchor, the anchor's examples are verified against the surrounding tokens. The last complete
question in the text wins (few-shot demonstrations come before the question asked).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.sim.tasks import Task
from pipeline.sim.textnorm import tokens

Gram = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Match:
    """Example ``example`` of task ``task`` occupies tokens ``start:end`` of the request."""

    task: int
    example: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Entry:
    task: int
    example: int
    offset: int
    toks: Gram


def _grams(toks: Gram, width: int) -> list[Gram]:
    w = min(width, len(toks))
    return [toks[i : i + w] for i in range(len(toks) - w + 1)]


class QuestionIndex:
    """An index of every example input of ``tasks`` by its anchor."""

    def __init__(self, tasks: Sequence[Task], *, width: int = 6) -> None:
        inputs = [
            (t, e, tuple(tokens(ex.input)))
            for t, task in enumerate(tasks)
            for e, ex in enumerate(task.examples)
        ]
        inputs = [item for item in inputs if item[2]]
        frequency = Counter(g for _, _, toks in inputs for g in set(_grams(toks, width)))
        self._anchors: dict[Gram, list[_Entry]] = {}
        self._widths: dict[str, set[int]] = {}
        for t, e, toks in inputs:
            grams = _grams(toks, width)
            offset = min(range(len(grams)), key=lambda i: frequency[grams[i]])
            anchor = grams[offset]
            self._anchors.setdefault(anchor, []).append(_Entry(t, e, offset, toks))
            self._widths.setdefault(anchor[0], set()).add(len(anchor))

    def find(self, toks: Sequence[str]) -> Match | None:
        """The known question in ``toks`` that ends last (the longest one on a tie)."""
        best: Match | None = None
        for i, token in enumerate(toks):
            for width in self._widths.get(token, ()):
                for entry in self._anchors.get(tuple(toks[i : i + width]), ()):
                    found = _verify(entry, toks, i)
                    if found and (best is None or _later(found, best)):
                        best = found
        return best


def _verify(entry: _Entry, toks: Sequence[str], at: int) -> Match | None:
    start = at - entry.offset
    end = start + len(entry.toks)
    if start < 0 or end > len(toks) or tuple(toks[start:end]) != entry.toks:
        return None
    return Match(task=entry.task, example=entry.example, start=start, end=end)


def _later(a: Match, b: Match) -> bool:
    return (a.end, a.end - a.start) > (b.end, b.end - b.start)
