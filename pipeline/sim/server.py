"""The simulator's HTTP layer: an OpenAI-compatible server on ``aiohttp.web``.

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``. A call goes
through: API key check -> body validation (400) -> quota fault -> rate limits (429 with OpenAI's
headers) -> latency -> error faults (429, 5xx, connection reset) -> the answer, which a fault may
shorten (fewer choices, no usage, a truncated body). Everything is seeded by ``SimConfig.seed``.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from pipeline._log import get_logger
from pipeline.sim import tokens
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

CHAT_MODEL = "sim-1"
EMBED_MODEL = "sim-embed-1"
INVALID_API_KEY = "sk-invalid"
"""The one API key the simulator rejects (401), so clients can exercise authentication errors."""


CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
_LIMITED_PATHS = frozenset({CHAT_PATH, EMBEDDINGS_PATH})
_MODELS_CREATED = 1_700_000_000
_MAX_BODY_BYTES = 64 * 2**20
_SHUTDOWN_TIMEOUT_S = 2.0


class Replier(Protocol):
    """What :class:`pipeline.sim.brain.Brain` offers: the text of one choice."""

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str: ...


@dataclass(kw_only=True)
class SimStats:
    """Counters of what reached the simulator and what it sent back."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests received, by path (e.g. ``"/v1/chat/completions"``)."""
    responses: Counter[int] = field(default_factory=Counter)
    """Responses sent, by status (a connection reset sends none)."""
    rate_limited: int = 0
    """429s sent by the rate limiter (injected 429s count under ``faults["429"]``)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by kind (``"429"``, ``"reset"``, ``"truncate"``, ``"quota"``...)."""
    choices_served: int = 0
    """Chat choices generated and sent."""
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0
    """What the chat answers it generated would bill (whether or not they arrived whole): the
    ground truth of what a client spent, for tests of its ledger."""


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
    return app


class _Service:
    """The request handlers and the state they share (buckets, seeded RNGs, counters)."""

    def __init__(self, config: SimConfig, *, brain: Replier, clock: Clock) -> None:
        self.config = config
        self.stats = SimStats()
        self.log = get_logger("gpo.sim").bind(component="sim")
        self._brain = brain
        self._limiter = RateLimiter(
            rpm=config.rpm, tpm=config.tpm, burst_s=config.burst_s, clock=clock
        )
        self._faults = FaultInjector(config.faults, random.Random(_derive(config.seed, "faults")))
        latency_rng = random.Random(_derive(config.seed, "latency"))
        self._latency = Latency(
            mean_s=config.latency_ms / 1000, rng=latency_rng, sigma=config.latency_sigma
        )
        self._sample_rng = random.Random(_derive(config.seed, "sample"))
        self._id_rng = random.Random(_derive(config.seed, "ids"))
        self._fingerprint = f"fp_{_derive(config.seed, 'fingerprint') % 16**10:010x}"

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the call, check the key, turn errors into OpenAI bodies, add limit headers."""
        self.stats.requests[request.path] += 1
        response = await self._guarded(request, handler)
        if request.path in _LIMITED_PATHS:
            for name, value in self._limiter.headers().items():
                response.headers.setdefault(name, value)
        if request.transport is not None and not request.transport.is_closing():
            self.stats.responses[response.status] += 1
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if _api_key(request) == INVALID_API_KEY:
            message = "Incorrect API key provided: sk-inv***lid (simulated)."
            return _error_response(401, message, code="invalid_api_key")
        try:
            return await handler(request)
        except InvalidRequest as exc:
            return _error_response(400, str(exc), param=exc.param)
        except web.HTTPException as exc:
            message = f"{exc.reason} ({request.method} {request.path})"
            return _error_response(exc.status, message)

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
        choices = [self._generate(chat, index) for index in range(served)]
        self.stats.choices_served += served
        completion = sum(tokens.count_tokens(text) for text, _ in choices)
        prompt = tokens.count_prompt_tokens(chat.messages)
        self.stats.billed_input_tokens += prompt
        self.stats.billed_output_tokens += completion
        return {
            "id": f"chatcmpl-{self._id_rng.getrandbits(96):024x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "system_fingerprint": self._fingerprint,
            "choices": [_choice(index, *choice) for index, choice in enumerate(choices)],
            "usage": tokens.usage(prompt, completion),
        }

    def _generate(self, chat: ChatRequest, index: int) -> tuple[str, str]:
        rng = self._rng_for(chat, index)
        text = self._brain.reply(chat.messages, temperature=chat.temperature, rng=rng)
        text = tokens.cut_at_stop(text, chat.stop)
        if chat.max_tokens is not None and tokens.count_tokens(text) > chat.max_tokens:
            return tokens.truncate_tokens(text, chat.max_tokens), "length"
        return text, "stop"

    def _rng_for(self, chat: ChatRequest, index: int) -> random.Random:
        if chat.seed is None and chat.temperature > 0:
            return random.Random(self._sample_rng.getrandbits(64))
        choice = 0 if chat.temperature == 0 else index
        digest = hashlib.sha256(orjson.dumps(chat.messages)).hexdigest()
        return random.Random(_derive(self.config.seed, chat.seed, choice, digest))


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


def _choice(index: int, text: str, finish_reason: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": None}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def _json_response(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    body = error_body(message, param=param, code=code)
    return web.Response(status=status, body=body, content_type="application/json")


def _derive(*parts: object) -> int:
    """A stable 64-bit seed from ``parts`` (hashlib, not the salted built-in ``hash``)."""
    material = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")
