"""HTTP transports on aiohttp: the only module of gpo that imports aiohttp's client.

One ``ClientSession`` per endpoint, a connector sized to the endpoint's concurrency limit,
orjson bodies, and a timeout read for each request (the gateway's, which follows the endpoint's
latency: :mod:`pipeline.llm._retry`). Every aiohttp/asyncio failure is translated into the
error tree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import aiohttp

from pipeline.errors import ConfigError, ConnectionFailed, LLMError, NotFound, RequestTimeout
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._values import ChatRequest, EmbeddingReply, EmbeddingRequest, TransportReply
from pipeline.llm.transports._classify import error_for
from pipeline.llm.transports._openai import OpenAIWire
from pipeline.llm.transports._protocol import Wire

_NO_ROUTE = (404, 405)


class HttpTransport:
    """A :class:`~pipeline.Transport` speaking ``wire`` over one aiohttp session."""

    def __init__(
        self,
        config: EndpointConfig,
        wire: Wire,
        session: aiohttp.ClientSession,
        *,
        wall_clock: Callable[[], float] = time.time,
        read_timeout: Callable[[], float] | None = None,
    ) -> None:
        self._config = config
        self._wire = wire
        self._session = session
        self._wall_clock = wall_clock
        self._read_timeout = read_timeout or (lambda: config.timeout_floor_s)
        self._headers = {
            "Content-Type": "application/json",
            **wire.auth_headers(config.api_key.reveal()),
        }

    def __repr__(self) -> str:
        return f"HttpTransport(endpoint={self._config.name!r}, url={self._config.url!r})"

    async def chat(self, request: ChatRequest) -> TransportReply:
        body, headers = await self._post(self._wire.chat_path, self._wire.chat_body(request))
        return self._wire.parse_chat(body, headers, endpoint=self._config.name)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingReply:
        payload = self._wire.embeddings_body(request)
        body, headers = await self._post(self._wire.embeddings_path, payload)
        return self._wire.parse_embeddings(body, headers, endpoint=self._config.name)

    async def aclose(self) -> None:
        await self._session.close()

    async def check(self) -> None:
        """``GET /models``: free on OpenAI-compatible servers and Anthropic alike."""
        await self._request("GET", "/models", None)

    async def check_route(self) -> None:
        """POST the chat route a body without messages: a server rejects it (400, 422) before
        any model runs, so it costs nothing; 404 or 405 means the route does not exist. An
        embeddings-only server passes on its embeddings route. ``NotFound`` naming the URL."""
        status = await self._route_status(self._wire.chat_path, b'{"messages": []}')
        if status in _NO_ROUTE and not await self._serves_embeddings():
            url = self._config.url + self._wire.chat_path
            raise NotFound(
                f"no chat route at {url} (HTTP {status}); check base_url (it usually ends in /v1)",
                endpoint=self._config.name,
            )

    async def _serves_embeddings(self) -> bool:
        if self._config.kind == "anthropic":  # no embeddings API
            return False
        status = await self._route_status(self._wire.embeddings_path, b'{"input": []}')
        return status not in _NO_ROUTE

    async def _route_status(self, path: str, payload: bytes) -> int | None:
        """The HTTP status of an answer to ``payload`` at ``path`` (None: a 2xx)."""
        try:
            await self._post(path, payload)
        except LLMError as exc:
            if exc.status is None:  # no answer at all: the endpoint is not usable
                raise
            return exc.status
        return None

    async def _post(self, path: str, payload: bytes) -> tuple[bytes, Mapping[str, str]]:
        return await self._request("POST", path, payload)

    async def _request(
        self, method: str, path: str, payload: bytes | None
    ) -> tuple[bytes, Mapping[str, str]]:
        name = self._config.name
        seconds = self._read_timeout()
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=self._config.connect_timeout_s)
        try:
            async with self._session.request(
                method,
                self._config.url + path,
                data=payload,
                headers=self._headers,
                timeout=timeout,
            ) as resp:
                body = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except TimeoutError:
            raise RequestTimeout(
                f"no answer within {seconds:g}s", endpoint=name, maybe_billed=True
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"cannot connect: {exc}", endpoint=name) from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(
                f"{type(exc).__name__}: {exc}", endpoint=name, maybe_billed=True
            ) from None
        if status >= 300:
            body = _scrub(body, self._config.api_key.reveal())
            raise error_for(status, body, headers, endpoint=name, now=self._wall_clock())
        return body, headers


def _scrub(body: bytes, secret: str) -> bytes:
    """Mask the API key where a server echoes it back in an error body."""
    return body.replace(secret.encode(), b"***") if secret else body


async def open_http_transport(
    config: EndpointConfig,
    *,
    wall_clock: Callable[[], float] = time.time,
    read_timeout: Callable[[], float] | None = None,
) -> HttpTransport:
    """Create the endpoint's session (inside the running event loop) and its transport.
    ``read_timeout()`` is each request's timeout in seconds (default: the configured floor).
    ``ConfigError`` for a key no HTTP header can carry (surrounding whitespace, a control
    character), naming the endpoint, never the key."""
    key = config.api_key.reveal()
    if key != key.strip() or not key.isprintable():
        raise ConfigError(
            f"endpoint {config.name!r}: the API key has a trailing newline/whitespace or a "
            "control character; remove it"
        )
    connector = aiohttp.TCPConnector(limit=config.max_in_flight, limit_per_host=0)
    session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
    wire = _wire_for(config, wall_clock)
    return HttpTransport(config, wire, session, wall_clock=wall_clock, read_timeout=read_timeout)


def _wire_for(config: EndpointConfig, wall_clock: Callable[[], float]) -> Wire:
    if config.kind == "anthropic":
        from pipeline.llm.transports._anthropic import AnthropicWire

        return AnthropicWire(version=config.anthropic_version, wall_clock=wall_clock)
    return OpenAIWire()
