"""The one error tree of gpo.

Every failure that leaves the library is a :class:`GpoError`. Third-party exceptions (aiohttp,
sqlite3, orjson, ...) are translated at the boundary where they occur. Whether an LLM call may be
retried is a property of the error *type* (``retryable``), never decided ad hoc by callers.

::

    GpoError
    ├── ConfigError                  bad configuration or data (CLI exit code 2)
    ├── BudgetExhausted              a cap refused a reservation (CLI exit code 3)
    ├── StorageError                 the run directory could not be read or written (exit code 4)
    └── LLMError                     a model endpoint call failed
        ├── RetryableError           transient: retried with backoff
        │   ├── RateLimited          429 rate_limit_exceeded (carries retry_after)
        │   ├── ServerError          5xx
        │   ├── Overloaded           529 (Anthropic) overloaded_error
        │   ├── RequestTimeout       408 or a client-side timeout
        │   ├── Conflict             409
        │   ├── ConnectionFailed     reset, refused, dropped connection
        │   └── MalformedResponse    unparseable or truncated body
        └── FatalError               permanent: fails fast, never retried
            ├── BadRequest           400, 422
            │   └── ChoicesRefused   a 400 naming n: not that many choices in one request
            ├── AuthenticationFailed 401
            ├── PermissionDenied     403
            ├── NotFound             404
            ├── QuotaExceeded        insufficient_quota, spend limits
            └── RetriesExhausted     a retryable error persisted past max_attempts
"""

from __future__ import annotations


class GpoError(Exception):
    """Base of every error raised by gpo."""


class ConfigError(GpoError):
    """Invalid configuration or input data; names where and what was wrong."""


class BudgetExhausted(GpoError):
    """A budget cap refused a reservation: the call was not made and nothing was spent."""

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class StorageError(GpoError):
    """A file of the run directory (journal, ledger, cache) could not be written or read.

    The run stops cleanly and can be resumed once the cause (a full disk, a read-only or
    damaged file) is fixed. ``path`` names the file, ``reason`` what the system said."""

    def __init__(self, path: object, reason: object) -> None:
        super().__init__(f"storage fault on {path}: {reason}")
        self.path = str(path)
        self.reason = str(reason)


class LLMError(GpoError):
    """A call to a model endpoint failed."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        maybe_billed: bool = False,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.retry_after = retry_after
        # True when the request may have reached the model (timeout mid-call, dropped or
        # truncated response): the provider may bill it, so the budget keeps the reservation.
        self.maybe_billed = maybe_billed

    def __str__(self) -> str:
        where = f"[{self.endpoint}] " if self.endpoint else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{where}{status}{self.args[0] if self.args else ''}"


class RetryableError(LLMError):
    """A transient failure; the gateway retries it with capped backoff."""

    retryable = True
    reason = "transient"


class RateLimited(RetryableError):
    reason = "rate_limited"


class ServerError(RetryableError):
    reason = "server_error"


class Overloaded(RetryableError):
    reason = "overloaded"


class RequestTimeout(RetryableError):
    reason = "timeout"


class Conflict(RetryableError):
    reason = "conflict"


class ConnectionFailed(RetryableError):
    reason = "connection"


class MalformedResponse(RetryableError):
    reason = "malformed_response"


class FatalError(LLMError):
    """A permanent failure; retrying cannot help."""


class BadRequest(FatalError):
    pass


class ChoicesRefused(BadRequest):
    """A 400 (or 422) naming the request's ``n``: the endpoint will not give that many choices
    in one request (llama.cpp's server with fewer slots than ``n``, a model without ``n``). The
    gateway then asks that endpoint for one choice per request; nothing was billed."""


class AuthenticationFailed(FatalError):
    pass


class PermissionDenied(FatalError):
    pass


class NotFound(FatalError):
    pass


class QuotaExceeded(FatalError):
    pass


class RetriesExhausted(FatalError):
    """A retryable error kept happening until the attempt limit; ``__cause__`` is the last one."""
