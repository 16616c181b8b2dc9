"""Replies that are tagged but are no candidate: the current prompt back, or the meta-prompt copied.

Small optimizer models often answer a meta-prompt with the current prompt unchanged, or copy
into the tags what the meta-prompt showed them: an exemplar (its input, the ``Input:`` and
``Output:`` lines, the ``<Prompt>`` placeholder) or a scored trajectory entry (``text:`` and
``score:`` lines, "It scores 61 out of 100", or a shown prompt as it was), or the output
format's example (``<START>...<END>``). Such a reply is a counted rejection, like a reply
without tags, and the generation stage asks again for it.
A prompt that merely *mentions* an output format ("Output: only the letter") is no copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from stages.edits import normalize_prompt
from stages.messages import MetaPrompt

Rejection = Literal["rejected_unchanged", "rejected_exemplar_copy"]

_PLACEHOLDER = re.compile(r"<\s*prompt\s*>", re.IGNORECASE)
_INPUT_LINE = re.compile(r"^\W*input\W*:", re.IGNORECASE | re.MULTILINE)
_OUTPUT_LINE = re.compile(r"^\W*output\W*:", re.IGNORECASE | re.MULTILINE)
_SCORED = re.compile(
    r"\bscore\W{0,3}[:=]\W{0,3}\d|\bscores?\s+\d{1,3}\s+out\s+of\s+100\b|^\W*text\W*:\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_MIN_COPIED = 20  # characters: an exemplar input shorter than this may be quoted on purpose


def rejection(candidate: str, meta: MetaPrompt) -> Rejection | None:
    """Why ``candidate`` is no candidate for ``meta``'s step, or None if it is one."""
    key = normalize_prompt(candidate)
    if key == normalize_prompt(meta.ticket.current.prompt):
        return "rejected_unchanged"
    if _copies_framing(candidate) or key in {normalize_prompt(p.text) for p in meta.shown}:
        return "rejected_exemplar_copy"
    inputs = (e.input for e in meta.ticket.context.splits.exemplars)
    return "rejected_exemplar_copy" if _quotes_any(candidate, inputs) else None


def _copies_framing(candidate: str) -> bool:
    """The placeholder, an exemplar's ``Input:``/``Output:`` pair, a score as shown, or the
    output format's ``<START>...<END>`` (no letter or digit at all)."""
    if not any(c.isalnum() for c in candidate):
        return True
    if _PLACEHOLDER.search(candidate) or _SCORED.search(candidate):
        return True
    return bool(_INPUT_LINE.search(candidate) and _OUTPUT_LINE.search(candidate))


def _quotes_any(candidate: str, inputs: Iterable[str]) -> bool:
    text = _flat(candidate)
    return any(len(q) >= _MIN_COPIED and q in text for q in map(_flat, inputs))


def _flat(text: str) -> str:
    return " ".join(text.casefold().split())
