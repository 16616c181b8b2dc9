"""A token bucket on an injected clock: the gateway's tokens/min limiter and the simulator's
rate limits are both made of it.

Providers state limits per minute but enforce them in sub-minute quanta (12,000 RPM behaves like
200 requests per second), so a bucket refills at ``rate = per_minute / 60`` per second. The
server's bucket holds ``rate * burst_s`` (at least one unit); this one holds ``share`` of that
(at least one unit), starting full, and the rest is its ``margin``. A request larger than the
capacity is paid from a full bucket and leaves it in debt (a negative level), so it is neither
refused forever nor under-counted.
"""

from __future__ import annotations

from collections.abc import Callable

_ROUNDING = 1e-9
"""A refill this close to what is needed (relative to the capacity) counts as complete."""


class TokenBucket:
    """``per_minute`` units a minute; ``now`` reads monotonic seconds."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float],
        burst_s: float = 1.0,
        share: float = 1.0,
    ) -> None:
        if per_minute <= 0 or burst_s <= 0:
            raise ValueError(f"per_minute and burst_s must be > 0, got {per_minute}, {burst_s}")
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        server = max(1.0, self.rate * burst_s)
        self.capacity = max(1.0, server * share)
        self.margin = server - self.capacity
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()

    def level(self) -> float:
        """What the bucket holds now (negative while in debt)."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket can pay ``amount`` (0 when it can now)."""
        missing = min(amount, self.capacity) - self.level()
        return missing / self.rate if missing > _ROUNDING * self.capacity else 0.0

    def take(self, amount: float) -> None:
        """Pay ``amount`` (which :meth:`wait_for` said fits)."""
        self._level = self.level() - amount

    def refund(self, amount: float) -> None:
        """Give back ``amount`` that was taken and not used (up to the capacity)."""
        self._level = min(self.capacity, self.level() + amount)

    def tighten(self, remaining: float) -> None:
        """The server says only ``remaining`` is left: never believe there is more than that,
        less the margin."""
        self._level = min(self.level(), remaining - self.margin)

    def time_to_full(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level()) / self.rate)
