"""What the simulator answers when things go wrong: client errors, injected faults, latency.

A :class:`FaultSpec` is parsed from a short spec such as
``"429=0.05,500=0.03,503=0.02,reset=0.01,truncate=0.01,fewer_choices=0.05,no_usage=0.02,quota"``.
Each ``kind=p`` makes that fault happen to a request with probability ``p``; the bare word ``quota``
makes every chat and embeddings call fail with ``insufficient_quota``. ``slow_s=S`` sets the extra
delay of the ``slow`` fault (a latency tail). Draws come from a seeded ``random.Random``.

Client errors live here too: :class:`InvalidRequest` (a 400) and the field checks that raise it,
shared by the endpoints, and OpenAI's error body shape.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

import orjson

LATENCY_SIGMA = 0.6
"""Shape of the lognormal latency draw (a heavy right tail around the configured mean)."""

ErrorKind = Literal["429", "500", "502", "503", "reset"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("429", "500", "502", "503", "reset")
"""Faults that replace the response (drawn in this order; the first hit wins)."""

# spec word -> FaultSpec field holding its probability
_PROBABILITY_FIELDS = {
    "429": "http_429",
    "500": "http_500",
    "502": "http_502",
    "503": "http_503",
    "reset": "reset",
    "truncate": "truncate",
    "fewer_choices": "fewer_choices",
    "no_usage": "no_usage",
    "slow": "slow",
}
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_EXPECTED = (
    "expected comma-separated KIND=PROBABILITY items with KIND one of "
    + ", ".join(_PROBABILITY_FIELDS)
    + ", plus 'quota' (or quota=0/1) and slow_s=SECONDS"
)


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """Per-request fault probabilities; all zero by default (no faults)."""

    http_429: float = 0.0
    http_500: float = 0.0
    http_502: float = 0.0
    http_503: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    fewer_choices: float = 0.0
    no_usage: float = 0.0
    slow: float = 0.0
    slow_s: float = 2.0
    quota: bool = False

    def __post_init__(self) -> None:
        for name in _PROBABILITY_FIELDS.values():
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name}: probability must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.slow_s) and self.slow_s >= 0):
            raise ValueError(f"fault slow_s: expected seconds >= 0, got {self.slow_s!r}")

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        """Parse ``"429=0.05,reset=0.01,quota"``; ``""`` or ``"none"`` means no faults.

        Raises ``ValueError`` naming the bad item and what was expected.
        """
        values: dict[str, Any] = {}
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if items == ["none"]:
            return cls()
        for item in items:
            name, value = _parse_item(item)
            if name in values:
                raise ValueError(f"fault spec item {item!r}: {name} is given twice")
            values[name] = value
        return dataclasses.replace(cls(), **values)

    def probability(self, kind: str) -> float:
        """The probability of the fault named ``kind`` in a spec (``"429"``, ``"truncate"``...)."""
        value: float = getattr(self, _PROBABILITY_FIELDS[kind])
        return value


def _parse_item(item: str) -> tuple[str, float | bool]:
    word, sep, raw = item.partition("=")
    word = word.strip()
    if word == "quota":
        return "quota", _parse_flag(item, raw.strip() if sep else "1")
    if word == "slow_s" and sep:
        return "slow_s", _parse_number(item, raw, lower=0.0, upper=math.inf)
    if word not in _PROBABILITY_FIELDS or not sep:
        raise ValueError(f"fault spec item {item!r}: unknown or incomplete; {_EXPECTED}")
    return _PROBABILITY_FIELDS[word], _parse_number(item, raw, lower=0.0, upper=1.0)


def _parse_flag(item: str, raw: str) -> bool:
    if raw in ("1", "true", "on"):
        return True
    if raw in ("0", "false", "off"):
        return False
    raise ValueError(f"fault spec item {item!r}: expected 'quota' or quota=0/1, got {raw!r}")


def _parse_number(item: str, raw: str, *, lower: float, upper: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not lower <= value <= upper:
        bounds = f"a probability in [{lower:g}, {upper:g}]" if upper <= 1 else f">= {lower:g}"
        raise ValueError(f"fault spec item {item!r}: expected {bounds}, got {raw.strip()!r}")
    return value


class InvalidRequest(ValueError):
    """A request the API refuses with 400 ``invalid_request_error``; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def model_field(body: dict[str, Any]) -> str:
    """The required ``model`` field: any non-empty string (unknown models are accepted)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", "model")
    return model


def int_field(body: dict[str, Any], name: str, *, lo: int, hi: int | None = None) -> int | None:
    """The optional integer field ``name`` (``None`` when absent), within ``lo``..``hi``."""
    value = body.get(name)
    if value is None:
        return None
    in_range = isinstance(value, int) and lo <= value and (hi is None or value <= hi)
    if in_range and not isinstance(value, bool):
        return int(value)
    bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    raise InvalidRequest(f"'{name}' must be an integer {bounds}, got {value!r}", name)


def number_field(body: dict[str, Any], name: str, *, lo: float, hi: float) -> float | None:
    """The optional number field ``name`` (``None`` when absent), within ``lo``..``hi``."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
        return float(value)
    message = f"'{name}' must be a number between {lo:g} and {hi:g}, got {value!r}"
    raise InvalidRequest(message, name)


def messages_field(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The required, non-empty ``messages`` of a chat body as (role, text) pairs."""
    value = body.get("messages")
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    return tuple(_message(item, f"messages[{index}]") for index, item in enumerate(value))


def stop_field(body: dict[str, Any]) -> tuple[str, ...]:
    """The optional ``stop`` field: a string or a list of up to 4 strings."""
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise InvalidRequest("'stop' must be a string or a list of up to 4 strings", "stop")


def _message(item: object, param: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{param}' must be an object", param)
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequest(f"'{param}.role' must be one of {sorted(_ROLES)}", f"{param}.role")
    return str(role), _content(item.get("content"), f"{param}.content")


def _content(value: object, param: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and all(_is_text_part(part) for part in value):
        return "".join(str(part["text"]) for part in value)
    raise InvalidRequest(f"'{param}' must be a string or a list of text parts", param)


def _is_text_part(part: object) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def error_body(
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return orjson.dumps({"error": error})


class Latency:
    """Per-request delay in seconds: lognormal with mean ``mean_s`` (0 means no delay) and shape
    ``sigma`` (0 means exactly ``mean_s`` every time)."""

    def __init__(self, *, mean_s: float, rng: random.Random, sigma: float = LATENCY_SIGMA) -> None:
        self._mean_s = mean_s
        self._rng = rng
        self._sigma = sigma

    def draw(self) -> float:
        """One delay; the mean over many draws is ``mean_s``."""
        if self._mean_s <= 0:
            return 0.0
        if self._sigma <= 0:
            return self._mean_s
        mu = math.log(self._mean_s) - self._sigma**2 / 2
        return self._rng.lognormvariate(mu, self._sigma)


@dataclass(frozen=True, kw_only=True)
class FaultReply:
    """A response that replaces the real one."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class FaultInjector:
    """Draws faults for requests from a seeded ``random.Random``."""

    def __init__(self, spec: FaultSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng

    def hit(self, kind: str) -> bool:
        """Whether the fault ``kind`` happens to this request (no draw when its p is 0)."""
        p = self.spec.probability(kind)
        return p > 0 and self._rng.random() < p

    def draw_error(self) -> ErrorKind | None:
        """The fault that replaces this response, if any."""
        return next((kind for kind in ERROR_KINDS if self.hit(kind)), None)

    def fewer(self, n: int) -> int:
        """How many of ``n`` choices to serve: fewer than ``n`` (at least 1) when the fault hits."""
        return self._rng.randint(1, n - 1) if n > 1 and self.hit("fewer_choices") else n

    def truncate(self, body: bytes) -> bytes:
        """``body`` cut short (any proper prefix of a JSON object is unparseable) on a hit."""
        if len(body) < 2 or not self.hit("truncate"):
            return body
        return body[: self._rng.randint(1, len(body) - 1)]

    def reply(self, kind: ErrorKind) -> FaultReply:
        """The response for an error fault other than ``reset`` (which sends nothing)."""
        if kind == "429":
            millis = self._rng.randint(50, 200)
            headers = {"retry-after": "1", "retry-after-ms": str(millis)}
            return FaultReply(
                status=429,
                body=error_body(_SIM_429, kind="requests", code="rate_limit_exceeded"),
                headers=headers,
            )
        if kind == "502":
            return FaultReply(status=502, body=_BAD_GATEWAY, content_type="text/html")
        message = _SERVER_ERROR if kind == "500" else _OVERLOADED
        return FaultReply(status=int(kind), body=error_body(message, kind="server_error"))


def quota_reply() -> FaultReply:
    """The 429 that an account without credit gets on every call."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        "(simulated by gpo-sim)"
    )
    body = error_body(message, kind="insufficient_quota", code="insufficient_quota")
    return FaultReply(status=429, body=body)


_SIM_429 = (
    "Rate limit reached for requests in organization org-gpo-sim on requests per min (RPM). "
    "Please try again shortly. (simulated fault)"
)
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
_OVERLOADED = "The engine is currently overloaded, please try again later."
_BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>gpo-sim</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
