"""gpo: asynchronous GPO prompt optimization against rate-limited, paid LLM APIs.

The public surface of the engine; import from here. Importing has no side effects. The optimizer
names (``Job``, ``open_optimizer``, ...) load lazily on first use, because the optimizer is built
on ``stages``, which is built on this package's lower layers.
"""

from typing import TYPE_CHECKING, Any

from pipeline.clock import Clock, SystemClock
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
from pipeline.llm._budget import AccountState, Budget, Caps
from pipeline.llm._cache import MemoryCache, NoCache, ResponseCache, SqliteCache, open_sqlite_cache
from pipeline.llm._endpoint import EndpointConfig, RetryPolicy
from pipeline.llm._gateway import Gateway, open_gateway
from pipeline.llm._pricing import FREE, Price, lookup_price
from pipeline.llm._secret import Secret
from pipeline.llm._stats import EndpointStatistics
from pipeline.llm._values import (
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
from pipeline.llm.transports._fake import FakeTransport
from pipeline.llm.transports._protocol import Transport
from pipeline.tasks._data import Example, Splits, examples_from, load_examples, split_examples
from pipeline.tasks._metrics import Judgement, Metric, auto_metric, custom_metric, metric_by_name

_LAZY = {
    "pipeline.runner._jobs": (
        "BudgetUpdate",
        "CandidateScored",
        "Job",
        "JobFinished",
        "JobResult",
        "JobStarted",
        "OptimizerSettings",
        "ProgressEvent",
        "RunResult",
        "RunTotals",
        "StepFinished",
    ),
    "pipeline.runner._run": ("OptimizerRun", "open_optimizer", "optimize"),
}

if TYPE_CHECKING:
    from pipeline.runner._jobs import (
        BudgetUpdate,
        CandidateScored,
        Job,
        JobFinished,
        JobResult,
        JobStarted,
        OptimizerSettings,
        ProgressEvent,
        RunResult,
        RunTotals,
        StepFinished,
    )
    from pipeline.runner._run import OptimizerRun, open_optimizer, optimize


def __getattr__(name: str) -> Any:
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "FREE",
    "AccountState",
    "AuthenticationFailed",
    "BadRequest",
    "Budget",
    "BudgetExhausted",
    "BudgetUpdate",
    "CandidateScored",
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
    "Example",
    "FakeTransport",
    "FatalError",
    "Gateway",
    "GpoError",
    "Job",
    "JobFinished",
    "JobResult",
    "JobStarted",
    "Judgement",
    "LLMError",
    "MalformedResponse",
    "MemoryCache",
    "Message",
    "Metric",
    "NoCache",
    "NotFound",
    "OptimizerRun",
    "OptimizerSettings",
    "Overloaded",
    "PermissionDenied",
    "Price",
    "ProgressEvent",
    "QuotaExceeded",
    "RateLimitInfo",
    "RateLimited",
    "RequestTimeout",
    "ResponseCache",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryableError",
    "RunResult",
    "RunTotals",
    "Secret",
    "ServerError",
    "Splits",
    "SqliteCache",
    "StepFinished",
    "SystemClock",
    "Transport",
    "TransportReply",
    "Usage",
    "auto_metric",
    "custom_metric",
    "examples_from",
    "load_examples",
    "lookup_price",
    "metric_by_name",
    "open_gateway",
    "open_optimizer",
    "open_sqlite_cache",
    "optimize",
    "split_examples",
]
