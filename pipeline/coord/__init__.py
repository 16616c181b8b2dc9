"""Coordination of several gpo processes over Redis: shared rate limits, budget, response cache
and single-flight, and the lock on a run (``[run] coordination = "redis://..."``).

Optional: ``pip install 'gpo[redis]'``. With the default ``coordination = "local"`` nothing here
is imported. ``_conn`` connects and retries while Redis is away.
"""

from pipeline.coord._conn import (
    CoordinationError,
    endpoint_key,
    open_redis,
    redacted,
    retrying,
)

__all__ = ["CoordinationError", "endpoint_key", "open_redis", "redacted", "retrying"]
