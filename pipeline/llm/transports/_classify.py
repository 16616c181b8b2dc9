"""Turn an HTTP error answer into the right member of the error tree (DESIGN.md section 3).

Retry: 408, 409, 429 rate limits, 5xx, 529. Fail fast: 400, 401, 403, 404, 422 and quota or
spend-limit errors (recognised by code or message on any 4xx status, 429 included). A 400 or 422
naming ``n`` (its ``param``, or ``'n'``/``n_cmpl`` in its message) is ``ChoicesRefused``: the
gateway then asks for one choice per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from pipeline import errors as e

_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "quota_exceeded",
        "spend_limit_exceeded",
        "credit_balance_too_low",
        "billing_error",
    }
)
_QUOTA_TEXT = re.compile(
    r"insufficient[_ ]quota|exceeded your current quota|credit balance is too low|"
    r"spend(?:ing)? limit|billing (?:hard )?limit|"
    r"reached your specified (?:workspace )?API usage limit",
    re.IGNORECASE,
)
# llama.cpp: "Field 'n': Value must be between 1 <= value <= 8, but got 12" (a quoted n), older
# "n_cmpl cannot be greater than the number of slots"; OpenAI: "Invalid 'n': ..."; vLLM/pydantic:
# "('body', 'n')". A bare word n ("the prompt has n tokens") is not enough.
_N_TEXT = re.compile(r"""\bn_cmpl\b|(?<![\w'"`])['"`]n['"`]""")
_N_PARAMS = frozenset({"n", "n_cmpl"})
_BY_STATUS: dict[int, type[e.LLMError]] = {
    400: e.BadRequest,
    401: e.AuthenticationFailed,
    403: e.PermissionDenied,
    404: e.NotFound,
    408: e.RequestTimeout,
    409: e.Conflict,
    422: e.BadRequest,
    429: e.RateLimited,
    529: e.Overloaded,
}


def error_for(
    status: int, body: bytes, headers: Mapping[str, str], *, endpoint: str, now: float
) -> e.LLMError:
    """The error for a non-2xx answer. ``now`` (epoch seconds) reads HTTP-date ``retry-after``."""
    err = _error_object(body)
    code, message = _code(err), _message(err)
    kind = _kind(status, code, message)
    if kind is e.BadRequest and _names_n(err, message):
        kind = e.ChoicesRefused
    return kind(
        message or f"unexpected HTTP status {status}",
        endpoint=endpoint,
        status=status,
        code=code,
        retry_after=retry_after_s(headers, now),
    )


def _kind(status: int, code: str | None, message: str) -> type[e.LLMError]:
    if (code in _QUOTA_CODES or _QUOTA_TEXT.search(message)) and 400 <= status < 500:
        return e.QuotaExceeded
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return e.ServerError if status >= 500 else e.BadRequest


def _names_n(err: dict[str, Any] | str, message: str) -> bool:
    """Whether an error names the request's ``n`` (its ``param``, else its message)."""
    if isinstance(err, dict) and err.get("param") in _N_PARAMS:
        return True
    return bool(_N_TEXT.search(message))


def error_fields(body: bytes) -> tuple[str | None, str]:
    """(code, message) from OpenAI, Anthropic and vLLM error bodies; tolerant of anything."""
    err = _error_object(body)
    return _code(err), _message(err)


def _error_object(body: bytes) -> dict[str, Any] | str:
    """The error object of a JSON body (its ``error`` when nested), else the body's text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if not isinstance(data, dict):
        return {}
    nested = data.get("error")
    return nested if isinstance(nested, dict) else data


def _code(err: dict[str, Any] | str) -> str | None:
    if isinstance(err, str):
        return None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    return code or (err.get("type") if isinstance(err.get("type"), str) else None)


def _message(err: dict[str, Any] | str) -> str:
    if isinstance(err, str):
        return err
    message = err.get("message")
    return message if isinstance(message, str) else ""


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP-date)."""
    ms = _float(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
