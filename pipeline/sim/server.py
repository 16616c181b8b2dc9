"""The simulator's HTTP layer: an OpenAI-compatible server on ``aiohttp.web``.

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``. A call goes
through: API key check -> body validation (400) -> quota fault -> rate limits (429 with OpenAI's
headers) -> latency -> error faults (429, 5xx, connection reset) -> the answer, which a fault may
shorten (fewer choices, no usage, a truncated body). Everything is seeded by ``SimConfig.seed``.

The batch APIs, answered by the same :class:`pipeline.sim.answer.Answerer` without the rate
limits, latency or faults: OpenAI's ``/v1/files`` and ``/v1/batches``
(:mod:`pipeline.sim.batch_openai`) and Anthropic's ``/v1/messages/batches``
(:mod:`pipeline.sim.batch_anthropic`, whose errors have Anthropic's shape). ``GET /_sim/stats``
(the simulator's own) returns :class:`SimStats` as JSON, for a benchmark in another process.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from pipeline._log import get_logger
from pipeline.sim import tokens
from pipeline.sim.answer import Answerer, derive
from pipeline.sim.answer import Replier as Replier  # re-exported: its old home
from pipeline.sim.batch_anthropic import AnthropicBatches, anthropic_error
from pipeline.sim.batch_openai import OpenAIBatches
from pipeline.sim.batches import BatchBook, NotFound
from pipeline.sim.brain import Brain
from pipeline.sim.config import SimConfig as SimConfig  # re-exported: its old home
from pipeline.sim.embed import EmbeddingRequest, embedding_payload, parse_embedding_request
from pipeline.sim.faults import (
    FaultInjector,
    FaultReply,
    InvalidRequest,
    Latency,
    error_body,
    quota_reply,
)
from pipeline.sim.limits import DEFAULT_COMPLETION_TOKENS, Clock, RateLimiter
from pipeline.sim.requests import ChatRequest, parse_chat
from pipeline.sim.stats import SimStats as SimStats  # re-exported: its old home

CHAT_MODEL = "sim-1"
EMBED_MODEL = "sim-embed-1"
INVALID_API_KEY = "sk-invalid"
"""The one API key the simulator rejects (401), so clients can exercise authentication errors."""


CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
STATS_PATH = "/_sim/stats"
"""The simulator's own route: :class:`SimStats` as JSON (not part of any provider's API)."""
ANTHROPIC_PREFIX = "/v1/messages"
_LIMITED_PATHS = frozenset({CHAT_PATH, EMBEDDINGS_PATH})
_MODELS_CREATED = 1_700_000_000
_MAX_BODY_BYTES = 64 * 2**20
_SHUTDOWN_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class Simulator:
    """A running simulator, as yielded by :func:`open_simulator`."""

    config: SimConfig
    host: str
    port: int
    stats: SimStats

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8123/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"


@asynccontextmanager
async def open_simulator(
    config: SimConfig, *, brain: Replier | None = None, clock: Clock = time.monotonic
) -> AsyncIterator[Simulator]:
    """Serve ``config`` in the running event loop until the block exits.

    ``brain`` replaces the one loaded from ``config.task_paths``; ``clock`` drives the rate limits.
    """
    if brain is None:
        brain = load_brain(config)
    service = _Service(config, brain=brain, clock=clock)
    runner = web.AppRunner(
        build_app(service), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        port = int(runner.addresses[0][1])
        simulator = Simulator(config=config, host=config.host, port=port, stats=service.stats)
        yield simulator
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
        service.log.info(
            "sim_stopped",
            requests=sum(service.stats.requests.values()),
            billed_input_tokens=service.stats.billed_input_tokens,
            billed_output_tokens=service.stats.billed_output_tokens,
        )


def load_brain(config: SimConfig) -> Replier:
    """The brain for ``config``: loaded from its task files, or a bare seeded one without any."""
    if not config.task_paths:
        return Brain(seed=config.seed)
    loaded: Replier = Brain.from_paths(  # type: ignore[attr-defined, unused-ignore]
        seed=config.seed, paths=config.task_paths
    )
    return loaded


def build_app(service: _Service) -> web.Application:
    """The aiohttp application routing the OpenAI endpoints to ``service``."""
    app = web.Application(middlewares=[service.middleware], client_max_size=_MAX_BODY_BYTES)
    app.router.add_post(CHAT_PATH, service.chat)
    app.router.add_post(EMBEDDINGS_PATH, service.embeddings)
    app.router.add_get(MODELS_PATH, service.models)
    app.router.add_get(STATS_PATH, service.stats_route)
    OpenAIBatches(service.batches).add_routes(app)
    AnthropicBatches(service.batches).add_routes(app)
    return app


class _Service:
    """The request handlers and the state they share (buckets, seeded RNGs, counters)."""

    def __init__(self, config: SimConfig, *, brain: Replier, clock: Clock) -> None:
        self.config = config
        self.stats = SimStats()
        self.log = get_logger("gpo.sim").bind(component="sim")
        self._answerer = Answerer(brain, seed=config.seed)
        self.batches = BatchBook(config, answerer=self._answerer, stats=self.stats, clock=clock)
        self._limiter = RateLimiter(
            rpm=config.rpm, tpm=config.tpm, burst_s=config.burst_s, clock=clock
        )
        self._faults = FaultInjector(config.faults, random.Random(derive(config.seed, "faults")))
        latency_rng = random.Random(derive(config.seed, "latency"))
        self._latency = Latency(
            mean_s=config.latency_ms / 1000, rng=latency_rng, sigma=config.latency_sigma
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the call, check the key, turn errors into API bodies, add limit headers."""
        resource = request.match_info.route.resource
        self.stats.requests[resource.canonical if resource is not None else request.path] += 1
        response = await self._guarded(request, handler)
        if request.path in _LIMITED_PATHS:
            for name, value in self._limiter.headers().items():
                response.headers.setdefault(name, value)
        if request.transport is not None and not request.transport.is_closing():
            self.stats.responses[response.status] += 1
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        shape = "anthropic" if request.path.startswith(ANTHROPIC_PREFIX) else "openai"
        if INVALID_API_KEY in (_api_key(request), request.headers.get("x-api-key")):
            message = "Incorrect API key provided: sk-inv***lid (simulated)."
            return _error(shape, 401, message, code="invalid_api_key")
        try:
            return await handler(request)
        except InvalidRequest as exc:
            return _error(shape, 400, str(exc), param=exc.param)
        except NotFound as exc:
            return _error(shape, 404, str(exc))
        except web.HTTPException as exc:
            return _error(shape, exc.status, f"{exc.reason} ({request.method} {request.path})")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        chat = parse_chat(await _json_body(request))
        per_choice = chat.max_tokens or DEFAULT_COMPLETION_TOKENS
        cost = tokens.count_prompt_tokens(chat.messages) + chat.n * per_choice
        return await self._serve(request, cost, lambda: self._chat_payload(chat))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``."""
        body = await _json_body(request)
        embedding = parse_embedding_request(body)
        return await self._serve(request, embedding.tokens, lambda: self._embed_payload(embedding))

    def _embed_payload(self, embedding: EmbeddingRequest) -> dict[str, Any]:
        self.stats.billed_input_tokens += embedding.tokens
        return embedding_payload(embedding)

    async def stats_route(self, request: web.Request) -> web.StreamResponse:
        """``GET /_sim/stats``: every counter of :class:`SimStats` as JSON."""
        return _json_response(200, self.stats.as_json())

    async def models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``."""
        data = [
            {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "gpo-sim"}
            for name in (CHAT_MODEL, EMBED_MODEL)
        ]
        return _json_response(200, {"object": "list", "data": data})

    async def _serve(
        self, request: web.Request, cost: int, build: Callable[[], dict[str, Any]]
    ) -> web.StreamResponse:
        if self.config.faults.quota:
            return self._fault_response(quota_reply(), "quota", {})
        admission = self._limiter.admit(cost)
        if not admission.allowed:
            self.stats.rate_limited += 1
            self.log.debug("sim_rate_limited", kind=admission.kind, cost=cost)
            headers = {**admission.headers, **admission.retry_headers()}
            return _json_response(429, admission.error_body(), headers)
        await self._delay()
        error = self._faults.draw_error()
        if error == "reset":
            return self._reset(request)
        if error is not None:
            return self._fault_response(self._faults.reply(error), error, admission.headers)
        return self._respond(build(), admission.headers)

    async def _delay(self) -> None:
        seconds = self._latency.draw()
        if self._faults.hit("slow"):
            self._count_fault("slow")
            seconds += self.config.faults.slow_s
        if seconds > 0:
            await anyio.sleep(seconds)

    def _respond(self, payload: dict[str, Any], headers: dict[str, str]) -> web.Response:
        if self._faults.hit("no_usage"):
            self._count_fault("no_usage")
            payload.pop("usage", None)
        body = orjson.dumps(payload)
        sent = self._faults.truncate(body)
        if len(sent) < len(body):
            self._count_fault("truncate")
        return web.Response(body=sent, content_type="application/json", headers=headers)

    def _fault_response(
        self, reply: FaultReply, kind: str, headers: dict[str, str]
    ) -> web.Response:
        self._count_fault(kind)
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers={**headers, **reply.headers},
        )

    def _reset(self, request: web.Request) -> web.Response:
        self._count_fault("reset")
        if request.transport is not None:
            request.transport.close()  # the client sees the connection drop, not this response
        return web.Response(status=500)

    def _count_fault(self, kind: str) -> None:
        self.stats.faults[kind] += 1
        self.log.debug("sim_fault", kind=kind)

    def _chat_payload(self, chat: ChatRequest) -> dict[str, Any]:
        served = self._faults.fewer(chat.n)
        if served < chat.n:
            self._count_fault("fewer_choices")
        answer = self._answerer.answer(chat, served=served)
        self.stats.choices_served += served
        self.stats.billed_input_tokens += answer.prompt_tokens
        self.stats.billed_output_tokens += answer.completion_tokens
        return self._answerer.chat_completion(chat, answer)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        message = "We could not parse the JSON body of your request. (simulated)"
        raise InvalidRequest(message) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _api_key(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def _json_response(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _error(
    shape: str, status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    """An error in the API's shape: Anthropic's under ``/v1/messages``, OpenAI's elsewhere."""
    if shape == "anthropic":
        return anthropic_error(status, message)
    return _error_response(status, message, param=param, code=code)


def _error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    body = error_body(message, param=param, code=code)
    return web.Response(status=status, body=body, content_type="application/json")
