"""How the simulator listens and behaves: its frozen, validated configuration.

Apart from :mod:`pipeline.sim.server` (the HTTP layer on ``aiohttp.web``), so that reading a run
configuration does not load an HTTP server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.sim.faults import LATENCY_SIGMA, FaultSpec


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the simulator listens and behaves; validated on construction (``ValueError``)."""

    host: str = "127.0.0.1"
    port: int = 0
    rpm: float | None = None
    tpm: float | None = None
    latency_ms: float = 0.0
    latency_sigma: float = LATENCY_SIGMA
    seed: int = 0
    faults: FaultSpec = field(default_factory=FaultSpec)
    task_paths: tuple[str, ...] = ()
    burst_s: float = 1.0
    batch_delay_s: float = 1.0
    """Seconds from creating a batch to its completion (its requests run over the first 90 %,
    then it finalizes); small by default so demos and tests are quick."""
    batch_expire_s: float = 86_400.0
    """Seconds after which a batch that is not done expires: its unfinished requests become
    expired ones (24 h, the providers' completion window)."""
    batch_fail_rate: float = 0.0
    """The share of (valid) batches that fail validation: OpenAI's ``failed``; at Anthropic, a
    batch that ends at once with every request errored."""
    batch_error_rate: float = 0.0
    """The share of batched requests that error with a 500 (the rest of the batch completes)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0-65535, got {self.port}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a number > 0 or None, got {value!r}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms: expected a number >= 0, got {self.latency_ms!r}")
        if not (math.isfinite(self.latency_sigma) and self.latency_sigma >= 0):
            raise ValueError(f"latency_sigma: expected a number >= 0, got {self.latency_sigma!r}")
        if not (math.isfinite(self.burst_s) and self.burst_s > 0):
            raise ValueError(f"burst_s: expected a number > 0, got {self.burst_s!r}")
        if not (math.isfinite(self.batch_delay_s) and self.batch_delay_s >= 0):
            raise ValueError(f"batch_delay_s: expected a number >= 0, got {self.batch_delay_s!r}")
        if not (math.isfinite(self.batch_expire_s) and self.batch_expire_s > 0):
            raise ValueError(f"batch_expire_s: expected a number > 0, got {self.batch_expire_s!r}")
        for name in ("batch_fail_rate", "batch_error_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name}: expected a number in 0..1, got {value!r}")
