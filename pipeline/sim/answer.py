"""The one answer path of the simulator: a chat request's choices and usage, for the realtime
chat route and for batched requests alike, so a batch and a realtime run get the same answers.

Choices come from the brain with a seeded RNG: a request at temperature 0 or with a ``seed`` is
answered from a digest of its messages (the same answer whenever and however it is sent); any
other draws from one shared sampling stream, as a real model samples afresh each time.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from pipeline.sim import tokens
from pipeline.sim.requests import ChatRequest


class Replier(Protocol):
    """What :class:`pipeline.sim.brain.Brain` offers: the text of one choice."""

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One generated choice: its text and why it ended."""

    text: str
    finish_reason: str
    """OpenAI's word: ``"stop"`` (natural end or a stop sequence) or ``"length"``."""
    stop_sequence: str | None = None
    """The stop sequence the text was cut at, if any (Anthropic reports it)."""


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A chat request's choices and the tokens they bill."""

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int


class Answerer:
    """Generates answers from a brain, with the seeded RNG streams and ids they draw from."""

    def __init__(self, brain: Replier, *, seed: int) -> None:
        self._brain = brain
        self._seed = seed
        self._sample_rng = random.Random(derive(seed, "sample"))
        self._id_rng = random.Random(derive(seed, "ids"))
        self.fingerprint = f"fp_{derive(seed, 'fingerprint') % 16**10:010x}"

    def answer(self, chat: ChatRequest, *, served: int | None = None) -> Answer:
        """``served`` choices (default ``chat.n``) of ``chat`` with their usage."""
        count = chat.n if served is None else served
        choices = tuple(self._generate(chat, index) for index in range(count))
        completion = sum(tokens.count_tokens(choice.text) for choice in choices)
        prompt = tokens.count_prompt_tokens(chat.messages)
        return Answer(choices=choices, prompt_tokens=prompt, completion_tokens=completion)

    def new_id(self, prefix: str, bits: int = 96) -> str:
        """A fresh seeded id such as ``chatcmpl-<24 hex digits>``."""
        return f"{prefix}{self._id_rng.getrandbits(bits):0{bits // 4}x}"

    def chat_completion(self, chat: ChatRequest, answer: Answer) -> dict[str, Any]:
        """``answer`` as an OpenAI ``chat.completion`` object with a new id."""
        return chat_completion(
            chat,
            answer,
            completion_id=self.new_id("chatcmpl-"),
            created=int(time.time()),
            fingerprint=self.fingerprint,
        )

    def _generate(self, chat: ChatRequest, index: int) -> Choice:
        rng = self._rng_for(chat, index)
        raw = self._brain.reply(chat.messages, temperature=chat.temperature, rng=rng)
        text = tokens.cut_at_stop(raw, chat.stop)
        if chat.max_tokens is not None and tokens.count_tokens(text) > chat.max_tokens:
            return Choice(
                text=tokens.truncate_tokens(text, chat.max_tokens), finish_reason="length"
            )
        return Choice(text=text, finish_reason="stop", stop_sequence=_stop_at(raw, text, chat.stop))

    def _rng_for(self, chat: ChatRequest, index: int) -> random.Random:
        if chat.seed is None and chat.temperature > 0:
            return random.Random(self._sample_rng.getrandbits(64))
        choice = 0 if chat.temperature == 0 else index
        digest = hashlib.sha256(orjson.dumps(chat.messages)).hexdigest()
        return random.Random(derive(self._seed, chat.seed, choice, digest))


def chat_completion(
    chat: ChatRequest, answer: Answer, *, completion_id: str, created: int, fingerprint: str
) -> dict[str, Any]:
    """``answer`` as an OpenAI ``chat.completion`` object."""
    choices = [_choice(index, choice) for index, choice in enumerate(answer.choices)]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        "usage": tokens.usage(answer.prompt_tokens, answer.completion_tokens),
    }


def derive(*parts: object) -> int:
    """A stable 64-bit seed from ``parts`` (hashlib, not the salted built-in ``hash``)."""
    material = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def _choice(index: int, choice: Choice) -> dict[str, Any]:
    message = {"role": "assistant", "content": choice.text, "refusal": None}
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish_reason,
    }


def _stop_at(raw: str, text: str, stops: Sequence[str]) -> str | None:
    if len(text) == len(raw):
        return None
    return next((stop for stop in stops if stop and raw.startswith(stop, len(text))), None)
