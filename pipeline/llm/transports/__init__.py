"""The LLM boundary: how one HTTP exchange reaches a model endpoint.

A :class:`Transport` sends one request and returns parsed values; the aiohttp one
(``_http``, the only module of gpo that imports aiohttp's client, loaded only when a gateway
opens an endpoint) speaks a :class:`Wire`: OpenAI-compatible Chat Completions (``_openai``) or
Anthropic Messages (``_anthropic``). ``_classify`` turns an error answer into the error tree;
:class:`FakeTransport` answers in memory, for tests.
"""

from pipeline.llm.transports._fake import FakeTransport, echo_reply
from pipeline.llm.transports._protocol import Transport, Wire

__all__ = ["FakeTransport", "Transport", "Wire", "echo_reply"]
