"""What the stages need of the language models: chat and embeddings, nothing more.

The stages are written against this protocol, not against the gateway: the runner passes its
:class:`pipeline.llm._gateway.Gateway` (which satisfies it), tests may pass any small fake. Budget,
rate limits, retries and the response cache stay behind it, out of the stages' sight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeline.llm._values import ChatRequest, Completion, Embeddings


class Models(Protocol):
    """Chat and embeddings on named endpoints, charged to ``job`` (None: to the run alone)."""

    async def chat(
        self,
        endpoint: str,
        request: ChatRequest,
        *,
        job: str | None = None,
        deferrable: bool = False,
    ) -> Completion:
        """Exactly ``request.n`` choices. ``deferrable``: the answer may wait for a provider
        batch (evaluation's calls; the endpoint's ``batch`` mode decides)."""
        ...

    async def embed(
        self, endpoint: str, texts: Sequence[str], *, job: str | None = None
    ) -> Embeddings:
        """One vector per text, in order."""
        ...
