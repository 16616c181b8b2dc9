"""The LLM gateway and what it composes: the one path from gpo to a model endpoint.

Per call: cache and single-flight (``_cache``, ``_singleflight``) -> concurrency and rate limits
(``_limits``) -> budget reservation, written ahead to the spend ledger (``_budget``,
``_ledger``) -> the transport (``transports``) -> error classification and retry (``_retry``)
-> usage settlement at the endpoint's price (``_pricing``) -> cache write. Values exchanged with
the gateway are in ``_values``; endpoint settings in ``_endpoint``; counters in ``_stats``.
"""

from pipeline.llm._budget import AccountState, Budget, Caps, Reservation, SpendLedger
from pipeline.llm._cache import (
    MemoryCache,
    NoCache,
    ResponseCache,
    SqliteCache,
    open_sqlite_cache,
)
from pipeline.llm._endpoint import BatchPolicy, EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._ledger import SqliteLedger, open_sqlite_ledger
from pipeline.llm._pricing import FREE, Price, lookup_price
from pipeline.llm._secret import Secret
from pipeline.llm._stats import EndpointStatistics
from pipeline.llm._values import (
    ChatRequest,
    Choice,
    Completion,
    EmbeddingReply,
    EmbeddingRequest,
    Embeddings,
    Message,
    RateLimitInfo,
    TransportReply,
    Usage,
)
from pipeline.llm.batch import BatchLog, MemoryBatchLog, open_batch_log

__all__ = [
    "FREE",
    "AccountState",
    "BatchLog",
    "BatchPolicy",
    "Budget",
    "Caps",
    "ChatRequest",
    "Choice",
    "Completion",
    "EmbeddingReply",
    "EmbeddingRequest",
    "Embeddings",
    "EndpointConfig",
    "EndpointStatistics",
    "Gateway",
    "MemoryBatchLog",
    "MemoryCache",
    "Message",
    "NoCache",
    "Price",
    "RateLimitInfo",
    "Reservation",
    "ResponseCache",
    "RetryPolicy",
    "Secret",
    "SpendLedger",
    "SqliteCache",
    "SqliteLedger",
    "TransportReply",
    "Usage",
    "lookup_price",
    "open_batch_log",
    "open_gateway",
    "open_sqlite_cache",
    "open_sqlite_ledger",
]
