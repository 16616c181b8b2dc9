"""Prices in USD per million tokens, and the small default table for common models.

The table is a convenience, dated, and always overridable per endpoint: providers change prices.
A model not in the table costs what the endpoint config says; with neither, it is priced at zero and
only token caps can bound it.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-11-01"


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ValueError("prices must be >= 0")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    @property
    def free(self) -> bool:
        return self.input_per_mtok == 0 and self.output_per_mtok == 0


# Public list prices (standard tier) as of PRICES_AS_OF. Longest matching prefix wins.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.60),
    "gpt-4o": Price(input_per_mtok=2.50, output_per_mtok=10.00),
    "gpt-4.1-nano": Price(input_per_mtok=0.10, output_per_mtok=0.40),
    "gpt-4.1-mini": Price(input_per_mtok=0.40, output_per_mtok=1.60),
    "gpt-4.1": Price(input_per_mtok=2.00, output_per_mtok=8.00),
    "gpt-3.5-turbo": Price(input_per_mtok=0.50, output_per_mtok=1.50),
    "text-embedding-3-small": Price(input_per_mtok=0.02, output_per_mtok=0.0),
    "text-embedding-3-large": Price(input_per_mtok=0.13, output_per_mtok=0.0),
    "claude-3-5-haiku": Price(input_per_mtok=0.80, output_per_mtok=4.00),
    "claude-3-haiku": Price(input_per_mtok=0.25, output_per_mtok=1.25),
    "claude-haiku-4-5": Price(input_per_mtok=1.00, output_per_mtok=5.00),
    "claude-sonnet-4": Price(input_per_mtok=3.00, output_per_mtok=15.00),
    "claude-3-5-sonnet": Price(input_per_mtok=3.00, output_per_mtok=15.00),
    "claude-opus-4": Price(input_per_mtok=15.00, output_per_mtok=75.00),
}


def default_price(model: str) -> Price | None:
    """The table's price for ``model`` (longest prefix match), or None when unknown."""
    best = max((k for k in DEFAULT_PRICES if model.startswith(k)), key=len, default=None)
    return DEFAULT_PRICES[best] if best is not None else None
