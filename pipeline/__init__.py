"""gpo: asynchronous GPO prompt optimization against rate-limited, paid LLM APIs.

The public surface of the engine; import from here. Importing has no side effects.
"""

from pipeline.budget import AccountState, Budget, Caps
from pipeline.cache import MemoryCache, NoCache, ResponseCache, SqliteCache, open_sqlite_cache
from pipeline.clock import Clock, SystemClock
from pipeline.endpoint import EndpointConfig, RetryPolicy
from pipeline.errors import (
    AuthenticationFailed,
    BadRequest,
    BudgetExhausted,
    ConfigError,
    Conflict,
    ConnectionFailed,
    FatalError,
    GpoError,
    LLMError,
    MalformedResponse,
    NotFound,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    RetriesExhausted,
    RetryableError,
    ServerError,
)
from pipeline.fake import FakeTransport
from pipeline.gateway import Gateway, open_gateway
from pipeline.pricing import DEFAULT_PRICES, PRICES_AS_OF, Price
from pipeline.secret import Secret
from pipeline.stats import EndpointStatistics
from pipeline.transport import Transport
from pipeline.values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Message,
    RateLimitInfo,
    TransportReply,
    Usage,
)

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_AS_OF",
    "AccountState",
    "AuthenticationFailed",
    "BadRequest",
    "Budget",
    "BudgetExhausted",
    "Caps",
    "ChatRequest",
    "Choice",
    "Clock",
    "Completion",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "EmbeddingRequest",
    "Embeddings",
    "EndpointConfig",
    "EndpointStatistics",
    "FakeTransport",
    "FatalError",
    "Gateway",
    "GpoError",
    "LLMError",
    "MalformedResponse",
    "MemoryCache",
    "Message",
    "NoCache",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Price",
    "QuotaExceeded",
    "RateLimitInfo",
    "RateLimited",
    "RequestTimeout",
    "ResponseCache",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryableError",
    "Secret",
    "ServerError",
    "SqliteCache",
    "SystemClock",
    "Transport",
    "TransportReply",
    "Usage",
    "open_gateway",
    "open_sqlite_cache",
]
