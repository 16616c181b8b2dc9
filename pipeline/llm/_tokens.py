"""Token estimates without a tokenizer.

Two different questions get two different answers:

* :func:`max_input_tokens` is a **strict upper bound** for the budget. Byte-level BPE tokenizers
  (OpenAI, Llama 3, Claude, ...) never produce more tokens than UTF-8 bytes, plus a few framing
  tokens per message. Reserving this bound is what lets the budget promise that spend never
  exceeds a cap.
* :func:`typical_input_tokens` is a realistic estimate (about 4 characters a token) for the
  tokens-per-minute limiter, where an error costs a retry, not money.
* :func:`min_text_tokens` is a floor (5 characters a token: real tokenizers give natural text
  more tokens than that, about one per 4 characters of English): reported usage below it is not
  believed (a server counting one of ``n`` choices), so the ledger does not under-count.
"""

from __future__ import annotations

from pipeline.llm._values import Message

_PER_MESSAGE = 8
_PER_REQUEST = 16


def max_input_tokens(messages: tuple[Message, ...]) -> int:
    body = sum(len(m.content.encode("utf-8")) for m in messages)
    return body + _PER_MESSAGE * len(messages) + _PER_REQUEST


def typical_input_tokens(messages: tuple[Message, ...]) -> int:
    body = sum(len(m.content) for m in messages)
    return body // 4 + 4 * len(messages) + 3


def max_text_tokens(texts: tuple[str, ...]) -> int:
    return sum(len(t.encode("utf-8")) + 1 for t in texts) + _PER_REQUEST


def min_text_tokens(texts: tuple[str, ...]) -> int:
    return sum(len(t) for t in texts) // 5
