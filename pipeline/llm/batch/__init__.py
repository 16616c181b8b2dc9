"""Provider batch APIs in the gateway: half-price calls, coalesced, journaled and adopted.

``_batcher`` queues each endpoint's deferrable calls into batches and settles their results;
``_journal`` writes each batch's intent ahead of its creation (``batches.sqlite``), so a resumed
run adopts batches instead of creating them twice; ``_routes`` is what the gateway holds: which
calls go to a batcher, and the requests of adopted batches.
"""

from pipeline.llm.batch._batcher import Batcher, Pending
from pipeline.llm.batch._journal import (
    BatchLog,
    JournaledBatch,
    MemoryBatchLog,
    SqliteBatchLog,
    open_batch_log,
)
from pipeline.llm.batch._routes import BatchRoutes

__all__ = [
    "BatchLog",
    "BatchRoutes",
    "Batcher",
    "JournaledBatch",
    "MemoryBatchLog",
    "Pending",
    "SqliteBatchLog",
    "open_batch_log",
]
