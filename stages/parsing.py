"""Reading candidate prompts out of an optimizer reply.

Only text between an opening and a closing output tag is a candidate: a reply without tags
yields nothing (the caller counts a parse failure and may ask again), and the reply is never
used whole. Tags match case-insensitively; for tags in angle brackets, whitespace just inside
the brackets is tolerated (``< START >``, ``</ INS >``), nothing else is.
"""

from __future__ import annotations

import re
from functools import lru_cache


def extract_tagged(text: str, tags: tuple[str, str] = ("<START>", "<END>")) -> list[str]:
    """Every non-empty, stripped segment between an opening tag and the next closing tag.

    When an opening tag repeats before a closing one, the segment starts after the last of them
    (a stray opening tag does not swallow text). An opening tag that is never closed is not a
    candidate.

    >>> extract_tagged("Sure! <START> Be brief. <END> or <start>Be exact.<end>")
    ['Be brief.', 'Be exact.']
    >>> extract_tagged("Be brief.")
    []
    """
    pattern = _segment_pattern(*tags)
    segments = (match.group(1).strip() for match in pattern.finditer(text))
    return [segment for segment in segments if segment]


@lru_cache(maxsize=32)
def _segment_pattern(opener: str, closer: str) -> re.Pattern[str]:
    if not opener or not closer:
        raise ValueError(f"extract_tagged: tags must be non-empty, found {(opener, closer)!r}")
    open_re, close_re = _tag_pattern(opener), _tag_pattern(closer)
    return re.compile(f"{open_re}((?:(?!{open_re}).)*?){close_re}", re.IGNORECASE | re.DOTALL)


def _tag_pattern(tag: str) -> str:
    """A regex for ``tag``; in ``<...>`` tags, whitespace may surround the name and the slash."""
    if len(tag) < 3 or not (tag.startswith("<") and tag.endswith(">")):
        return re.escape(tag)
    name = tag[1:-1].strip()
    slash = ""
    if name.startswith("/"):
        slash, name = r"/\s*", name[1:].strip()
    return rf"<\s*{slash}{re.escape(name)}\s*>"
