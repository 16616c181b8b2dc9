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
