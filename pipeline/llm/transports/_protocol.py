"""The LLM boundary: a transport sends one HTTP exchange and returns parsed values.

A transport does no retrying, limiting, caching or accounting: the gateway composes those. It
translates every failure into the :mod:`pipeline.errors` tree, and it parses the provider's
rate-limit headers into :class:`~pipeline.llm._values.RateLimitInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pipeline.llm._values import ChatRequest, EmbeddingReply, EmbeddingRequest, TransportReply


class Transport(Protocol):
    """One endpoint's wire protocol. Implementations: HTTP (OpenAI, Anthropic) and fakes."""

    async def chat(self, request: ChatRequest) -> TransportReply:
        """Send one chat request as is (its ``model`` already set). Raise an ``LLMError``."""
        ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingReply:
        """Send one embeddings request as is. Raise an ``LLMError``."""
        ...

    async def check(self) -> None:
        """Cheaply confirm the endpoint answers and accepts the key (no tokens spent)."""
        ...

    async def check_route(self) -> None:
        """Confirm the base URL leads to the API, with a request the server must reject (no
        tokens spent). Raise ``NotFound`` naming the URL when it has no such route."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


class Wire(Protocol):
    """A provider's wire format: paths, headers, bodies and parsing. Pure, no I/O."""

    chat_path: str
    embeddings_path: str

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def chat_body(self, request: ChatRequest) -> bytes: ...

    def embeddings_body(self, request: EmbeddingRequest) -> bytes: ...

    def parse_chat(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> TransportReply: ...

    def parse_embeddings(
        self, body: bytes, headers: Mapping[str, str], *, endpoint: str
    ) -> EmbeddingReply: ...
