"""An in-memory transport for tests, like httpx's ``MockTransport``.

``FakeTransport(chat=handler)`` calls ``handler(request)`` for every chat request; the handler
returns a :class:`TransportReply` (or raises an ``LLMError``), synchronously or as a coroutine.
Every request it saw is kept in ``requests``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.errors import NotFound
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    EmbeddingReply,
    EmbeddingRequest,
    TransportReply,
    Usage,
)

Req = TypeVar("Req")
Rep = TypeVar("Rep")
Handler = Callable[[Req], "Rep | Awaitable[Rep]"]


def echo_reply(request: ChatRequest) -> TransportReply:
    """A reply of ``n`` choices "echo i: <last message>", with usage counted in words."""
    last = request.messages[-1].content
    choices = tuple(
        Choice(text=f"echo {i}: {last}", finish_reason="stop") for i in range(request.n)
    )
    words = sum(len(c.text.split()) for c in choices)
    usage = Usage(input_tokens=len(last.split()) + 1, output_tokens=words)
    return TransportReply(choices=choices, usage=usage, model=request.model)


class FakeTransport:
    def __init__(
        self,
        chat: Handler[ChatRequest, TransportReply] = echo_reply,
        embed: Handler[EmbeddingRequest, EmbeddingReply] | None = None,
    ) -> None:
        self._chat = chat
        self._embed = embed
        self.requests: list[ChatRequest | EmbeddingRequest] = []
        self.closed = False

    async def chat(self, request: ChatRequest) -> TransportReply:
        self.requests.append(request)
        return await _call(self._chat, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingReply:
        self.requests.append(request)
        if self._embed is None:
            raise NotFound("this fake has no embeddings handler", endpoint="fake")
        return await _call(self._embed, request)

    async def check(self) -> None:
        return None

    async def check_route(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True


async def _call(handler: Handler[Req, Rep], request: Req) -> Rep:
    result = handler(request)
    if inspect.isawaitable(result):
        return await result
    return result
