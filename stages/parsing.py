"""Reading candidate prompts out of an optimizer reply.

Only text between an opening and a closing output tag is a candidate: a reply without tags
yields nothing (the caller counts a parse failure and may ask again), and the reply is never
used whole. Tags match case-insensitively; for tags in angle brackets, whitespace just inside
the brackets is tolerated (``< START >``, ``</ INS >``), and the closing tag may take any of
the closing forms small models write: ``</END>``, ``<\\END>``, ``<END/>`` for ``<END>``, the
same for ``</INS>``, and a closed opening tag (``</START>``) when the closing tag has another
name. Nothing else is accepted: an unclosed or untagged reply is no candidate.
"""

from __future__ import annotations

import re
from functools import lru_cache


def extract_tagged(text: str, tags: tuple[str, str] = ("<START>", "<END>")) -> list[str]:
    """Every non-empty, stripped segment between an opening tag and the next closing tag.

    When an opening tag repeats before a closing one, the segment starts after the last of them
    (a stray opening tag does not swallow text). An opening tag that is never closed is not a
    candidate.

    >>> extract_tagged("Sure! <START> Be brief. <END> or <start>Be exact.</end>")
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
    open_re, close_re = _tag_pattern(opener), _closer_pattern(opener, closer)
    return re.compile(f"{open_re}((?:(?!{open_re}).)*?){close_re}", re.IGNORECASE | re.DOTALL)


def _is_angle(tag: str) -> bool:
    return len(tag) >= 3 and tag.startswith("<") and tag.endswith(">")


def _name(tag: str) -> tuple[bool, str]:
    """Whether an angle tag closes (``</X>``), and its name."""
    name = tag[1:-1].strip()
    return (True, name[1:].strip()) if name.startswith("/") else (False, name)


def _tag_pattern(tag: str) -> str:
    """A regex for ``tag``; in ``<...>`` tags, whitespace may surround the name and the slash."""
    if not _is_angle(tag):
        return re.escape(tag)
    closing, name = _name(tag)
    slash = r"/\s*" if closing else ""
    return rf"<\s*{slash}{re.escape(name)}\s*>"


def _closer_pattern(opener: str, closer: str) -> str:
    """``closer`` as written, or in a closing form: ``</X>``, ``<\\X>``, ``<X/>``, with X the
    closer's name or, when it differs, the opener's."""
    if not _is_angle(closer):
        return re.escape(closer)
    names = [_name(closer)[1]]
    if _is_angle(opener) and _name(opener)[1].casefold() != names[0].casefold():
        names.append(_name(opener)[1])
    forms = [_tag_pattern(closer)]
    for name in map(re.escape, names):
        forms += [rf"<\s*[/\\]\s*{name}\s*>", rf"<\s*{name}\s*/\s*>"]
    return f"(?:{'|'.join(forms)})"
