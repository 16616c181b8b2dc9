"""What a model's tokens cost, and where that figure comes from.

An endpoint's price is, in order: the ``price`` its configuration gives (``Price(...)``, or
:data:`FREE` for a local server), else the price that the maintained ``genai-prices`` database
gives for the endpoint's provider (found by its base URL) and model on the day the run starts,
else the model's price at whichever provider the database finds by the model name alone (a
LiteLLM or OpenRouter proxy serving ``gpt-4o-mini``), else **unknown** (None). An unknown price
is never taken as zero: a USD cap cannot be enforced with it, so such runs are refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

_PRICES_PACKAGE = "genai-prices"


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million tokens: input, output and, where known, cached input and the batch tier.

    ``source`` says where the figures come from (``"config"``, ``"free"``, or the price
    database with its version and the provider it matched) and ``as_of`` the day they apply to.
    """

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None
    batch_input_per_mtok: float | None = None
    batch_output_per_mtok: float | None = None
    source: str = "config"
    as_of: str | None = None
    tiers: tuple[tuple[int, float, float], ...] = ()
    """Long-context tiers ``(input tokens above which, input rate, output rate)``, ascending:
    a request whose input crosses a threshold pays that tier's rates on all its tokens."""

    def __post_init__(self) -> None:
        rates = (
            self.input_per_mtok,
            self.output_per_mtok,
            self.cached_input_per_mtok,
            self.batch_input_per_mtok,
            self.batch_output_per_mtok,
        )
        if any(rate is not None and not rate >= 0 for rate in rates):
            raise ValueError("prices must be numbers >= 0")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        rate_in, rate_out = self.input_per_mtok, self.output_per_mtok
        for start, tier_in, tier_out in self.tiers:
            if input_tokens > start:
                rate_in, rate_out = tier_in, tier_out
        return (input_tokens * rate_in + output_tokens * rate_out) / 1e6

    @property
    def free(self) -> bool:
        return self.input_per_mtok == 0 and self.output_per_mtok == 0

    def describe(self) -> dict[str, Any]:
        """The price as a JSON-ready mapping (results.json, the report)."""
        return {
            "input_per_mtok": self.input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "cached_input_per_mtok": self.cached_input_per_mtok,
            "batch_input_per_mtok": self.batch_input_per_mtok,
            "batch_output_per_mtok": self.batch_output_per_mtok,
            "source": self.source,
            "as_of": self.as_of,
        }

    def summary(self) -> str:
        """One line for a person: ``$0.15 / $0.60 per M tokens in / out (source, as of)``."""
        if self.free:
            return f"free ({self.source})"
        when = f", as of {self.as_of}" if self.as_of else ""
        return (
            f"${self.input_per_mtok:g} / ${self.output_per_mtok:g} per M tokens in / out "
            f"({self.source}{when})"
        )


FREE = Price(source="free")
"""The price of a server that bills nothing (a local vLLM, Ollama or llama.cpp; the simulator)."""


def lookup_price(model: str, base_url: str, *, on: datetime.date | None = None) -> Price | None:
    """The price database's price for ``model`` served at ``base_url`` on the day ``on``
    (today), or None when the database does not know it."""
    return _lookup(model, base_url, on or datetime.datetime.now(datetime.UTC).date())


@functools.lru_cache(maxsize=256)
def _lookup(model: str, base_url: str, on: datetime.date) -> Price | None:
    from genai_prices import Usage, __version__, calc_price

    when = datetime.datetime.combine(on, datetime.time(), tzinfo=datetime.UTC)
    for url in (base_url, None):
        try:
            found = calc_price(Usage(), model, provider_api_url=url, genai_request_timestamp=when)
            batch = calc_price(
                Usage(),
                model,
                provider_api_url=url,
                genai_request_timestamp=when,
                price_context={"processing": "batch"},
            ).model_price
        except LookupError:
            continue
        standard = found.model_price
        how = "" if url else ", matched by model name"
        return Price(
            input_per_mtok=_rate(standard, "input_mtok") or 0.0,
            output_per_mtok=_rate(standard, "output_mtok") or 0.0,
            tiers=_tiers(standard),
            cached_input_per_mtok=_rate(standard, "cache_read_mtok"),
            batch_input_per_mtok=_differs(_rate(batch, "input_mtok"), standard, "input_mtok"),
            batch_output_per_mtok=_differs(_rate(batch, "output_mtok"), standard, "output_mtok"),
            source=f"{_PRICES_PACKAGE} {__version__}: {found.provider.id} {found.model.id}{how}",
            as_of=on.isoformat(),
        )
    return None


def _rate(prices: Any, key: str) -> float | None:
    """The base USD-per-million rate (below any long-context tier)."""
    value = getattr(prices, key, None)
    if value is None:
        return None
    return float(value if isinstance(value, Decimal) else value.base)


def _tiers(prices: Any) -> tuple[tuple[int, float, float], ...]:
    """Input and output long-context tiers merged by threshold."""
    starts: set[int] = set()
    for key in ("input_mtok", "output_mtok"):
        starts |= {tier.start for tier in getattr(getattr(prices, key, None), "tiers", ())}
    return tuple(
        (start, _tier_rate(prices, "input_mtok", start), _tier_rate(prices, "output_mtok", start))
        for start in sorted(starts)
    )


def _tier_rate(prices: Any, key: str, start: int) -> float:
    """The rate of ``key`` for inputs above ``start`` tokens."""
    value = getattr(prices, key, None)
    if value is None:
        return 0.0
    if isinstance(value, Decimal):
        return float(value)
    rate = value.base
    for tier in value.tiers:
        if tier.start <= start:
            rate = tier.price
    return float(rate)


def _differs(batch: float | None, standard: Any, key: str) -> float | None:
    """The batch rate, where the database has one that is not just the standard rate."""
    return None if batch is None or batch == _rate(standard, key) else batch


HALF_PRICE_HOSTS = ("api.openai.com", "api.anthropic.com")
"""Providers whose batch APIs bill every model at half the realtime rates."""


def batch_price(price: Price, base_url: str) -> Price:
    """What a request costs in a provider batch: the price source's batch rates where it has
    them; else half the realtime rates at a provider known to bill batches so (OpenAI,
    Anthropic); else the realtime rates, so that spend is never under-counted."""
    half = urlsplit(base_url).hostname in HALF_PRICE_HOSTS
    factor = 0.5 if half else 1.0
    batch_in, batch_out = price.batch_input_per_mtok, price.batch_output_per_mtok
    if batch_in is None and batch_out is None and factor == 1.0:
        return price
    rate_in = price.input_per_mtok * factor if batch_in is None else batch_in
    rate_out = price.output_per_mtok * factor if batch_out is None else batch_out
    scale_in = rate_in / price.input_per_mtok if price.input_per_mtok else factor
    scale_out = rate_out / price.output_per_mtok if price.output_per_mtok else factor
    return dataclasses.replace(
        price,
        input_per_mtok=rate_in,
        output_per_mtok=rate_out,
        tiers=tuple((start, i * scale_in, o * scale_out) for start, i, o in price.tiers),
        source=f"{price.source}, batch",
    )
