"""Token accounting for the simulator: a deterministic stand-in for a BPE tokenizer.

The simulator only needs counts that behave like real ones: about one token per four characters
of English (one per short word, a few per long word), digits in groups of three, punctuation on its
own, and never more tokens than UTF-8 bytes. Each token is a contiguous piece of the text, so a
text cut after its k-th token has exactly k tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A piece: an optional leading space plus one CJK character, up to six other letters, up to three
# digits, up to three punctuation marks or up to three underscores; otherwise a run of whitespace
# (the run before a word leaves its last plain space to the word, as tiktoken's patterns do, so a
# text cut between two pieces counts the same pieces before the cut). Every
# character falls in one class, so the pieces tile the text.
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
_PIECE = re.compile(
    rf" ?(?:[{_CJK}]|(?:(?![{_CJK}])[^\W\d_]){{1,6}}|\d{{1,3}}|[^\w\s]{{1,3}}|_{{1,3}})"
    r"|\s+(?= \S)|\s+"
)

MESSAGE_OVERHEAD = 4
"""Tokens added per chat message (role and separators), as OpenAI's chat format does."""

REPLY_PRIMING = 3
"""Tokens added once per chat prompt (the assistant reply is primed)."""


def count_tokens(text: str) -> int:
    """The number of tokens in ``text`` (0 for the empty string)."""
    return len(_PIECE.findall(text))


def truncate_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that has at most ``limit`` tokens."""
    if limit <= 0:
        return ""
    end = 0
    for index, match in enumerate(_PIECE.finditer(text)):
        if index == limit:
            break
        end = match.end()
    return text[:end]


def count_prompt_tokens(messages: Iterable[tuple[str, str]]) -> int:
    """Prompt tokens of a chat request: each message's content plus fixed overheads."""
    return REPLY_PRIMING + sum(count_tokens(content) + MESSAGE_OVERHEAD for _, content in messages)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` cut before the earliest of the (non-empty) stop sequences it contains."""
    positions = [pos for stop in stops if stop and (pos := text.find(stop)) >= 0]
    return text[: min(positions)] if positions else text


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """A chat completion's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
