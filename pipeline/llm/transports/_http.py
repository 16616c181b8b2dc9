"""HTTP transports on aiohttp: the only module of gpo that imports aiohttp's client.

One ``ClientSession`` per endpoint, a connector sized to the endpoint's concurrency limit,
orjson bodies, and a timeout read for each request (the gateway's, which follows the endpoint's
latency: :mod:`pipeline.llm._retry`). Every aiohttp/asyncio failure is translated into the
error tree. The provider batch APIs (:mod:`._batch`) run over the same request
(:mod:`._batchflow`): OpenAI's file upload as multipart form data built in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from pipeline.errors import ConfigError, ConnectionFailed, LLMError, NotFound, RequestTimeout
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._values import ChatRequest, EmbeddingReply, EmbeddingRequest, TransportReply
from pipeline.llm.transports._batch import BatchInfo, BatchItem, BatchResult
from pipeline.llm.transports._batchflow import AnthropicBatches, OpenAIBatches
from pipeline.llm.transports._batchwire_openai import Upload
from pipeline.llm.transports._classify import error_for
from pipeline.llm.transports._openai import OpenAIWire
from pipeline.llm.transports._protocol import Wire

_NO_ROUTE = (404, 405)
_Payload = bytes | Upload | None


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
        self._batches = self._batch_flow()
        self.batch_max_requests = self._batches.batch_max_requests
        self.batch_max_bytes = self._batches.batch_max_bytes

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

    def batch_item_bytes(self, item: BatchItem) -> int:
        return self._batches.batch_item_bytes(item)

    async def batch_create(self, items: Sequence[BatchItem], *, tag: str) -> BatchInfo:
        return await self._batches.batch_create(items, tag=tag)

    async def batch_get(self, batch_id: str) -> BatchInfo:
        return await self._batches.batch_get(batch_id)

    async def batch_find(self, tag: str, *, since: float) -> BatchInfo | None:
        return await self._batches.batch_find(tag, since=since)

    async def batch_results(self, info: BatchInfo) -> list[BatchResult]:
        return await self._batches.batch_results(info)

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        return await self._batches.batch_cancel(batch_id)

    def _batch_flow(self) -> OpenAIBatches | AnthropicBatches:
        name = self._config.name

        def parse(body: bytes) -> TransportReply:
            return self._wire.parse_chat(body, {}, endpoint=name)

        flow = AnthropicBatches if self._config.kind == "anthropic" else OpenAIBatches
        return flow(self._send, parse, endpoint=name, wall_clock=self._wall_clock)

    async def _send(self, method: str, path: str, payload: _Payload = None) -> bytes:
        body, _ = await self._request(method, path, payload)
        return body

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
        self, method: str, path: str, payload: _Payload
    ) -> tuple[bytes, Mapping[str, str]]:
        """One exchange; an ``Upload`` goes as multipart form data (aiohttp sets its type)."""
        name = self._config.name
        seconds = self._read_timeout()
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=self._config.connect_timeout_s)
        data, sent = self._body(payload)
        try:
            async with self._session.request(
                method,
                self._config.url + path,
                data=data,
                headers=sent,
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

    def _body(self, payload: _Payload) -> tuple[bytes | aiohttp.FormData | None, dict[str, str]]:
        if not isinstance(payload, Upload):
            return payload, self._headers
        headers = {k: v for k, v in self._headers.items() if k.lower() != "content-type"}
        return _form(payload), headers


def _form(upload: Upload) -> aiohttp.FormData:
    """The upload as multipart form data, in memory."""
    form = aiohttp.FormData()
    for name, value in upload.fields:
        form.add_field(name, value)
    form.add_field(
        upload.file_field,
        upload.content,
        filename=upload.filename,
        content_type=upload.content_type,
    )
    return form


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
