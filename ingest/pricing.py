"""Pricing: one pure function from a usage event to its exact cost, used by streams and warehouse.

Where a price comes from, in order:
1. tokenops' own price book (negotiated, tenant-specific, non-USD, or missing from the catalog);
2. the genai-prices catalog, resolved at the event's own time and service tier (dated prices,
   DeepSeek's time-of-day windows, batch/flex/priority variants, long-context cliffs);
3. nothing: the event is `unpriced` with the reason, never a silent $0.
Both sources become the same `ClassRates`, so every cost is computed by `cost_lines` alone.
Arithmetic is Decimal with exact power-of-ten scaling; a float reaching it raises (FloatOperation
is trapped), and USD amounts are quantized to 18 decimal places (far below a nano-dollar).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from ingest.price_book import TOKEN_CLASSES, ClassRates, PriceBook, PriceVersion, Tier
from ingest.token_usage import usage_violation
from ingest.usage_event import TokenCounts, UsageEvent

CATALOG_VERSION = f"genai-prices@{genai_prices.__version__}"
USD_QUANTUM = Decimal("1e-18")

_MONEY = decimal.Context(prec=38, rounding=decimal.ROUND_HALF_EVEN)
_MONEY.traps[decimal.FloatOperation] = True


class UsageInvariantError(ValueError):
    """The event's token classes contradict the provider's own totals: quarantine, do not price."""


@dataclass(frozen=True, slots=True)
class Cost:
    price_version_id: str
    currency: str
    by_class: dict[str, Decimal]
    """Cost per token class (and "request" for per-request fees) in `currency`."""
    total: Decimal
    fx_rate: Decimal
    """USD per unit of `currency` at the event time (1 for USD)."""
    by_class_usd: dict[str, Decimal]
    total_usd: Decimal

    @property
    def input_usd(self) -> Decimal:
        """Uncached input, cache reads and cache writes."""
        names = ("input_uncached", "cache_read", "cache_write", "cache_write_1h")
        return sum((self.by_class_usd.get(n, Decimal(0)) for n in names), start=Decimal(0))

    @property
    def output_usd(self) -> Decimal:
        """Visible output and reasoning."""
        names = ("output", "reasoning")
        return sum((self.by_class_usd.get(n, Decimal(0)) for n in names), start=Decimal(0))


@dataclass(frozen=True, slots=True)
class Unpriced:
    reason: str


def cost_lines(rates: ClassRates, tokens: TokenCounts) -> dict[str, Decimal]:
    """Each token class at its rate, exactly: tokens x price-per-million x 10^-6."""
    lines: dict[str, Decimal] = {}
    for token_class in TOKEN_CLASSES:
        count = getattr(tokens, token_class)
        if count:
            lines[token_class] = _MONEY.multiply(Decimal(count), rates.per_million(token_class))
            lines[token_class] = lines[token_class].scaleb(-6, _MONEY)
    if rates.request:
        lines["request"] = rates.request
    return lines


# -- the genai-prices catalog as price versions ------------------------------------------------

_KEYS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_reasoning_mtok": "reasoning",
}


@lru_cache(maxsize=4096)
def _catalog_model(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None


def _value_at(price: Decimal | TieredPrices, threshold: int | None) -> Decimal:
    """genai-prices cliff tiers: above a tier's start, that rate applies to all tokens."""
    if not isinstance(price, TieredPrices):
        return price
    chosen = price.base
    for tier in price.tiers:
        if threshold is not None and threshold >= tier.start:
            chosen = tier.price
    return chosen


def _rates(price: ModelPrice, threshold: int | None) -> ClassRates | None:
    values: dict[str, Decimal] = {}
    for key, field in _KEYS.items():
        value = getattr(price, key, None)
        if value is not None:
            values[field] = _value_at(value, threshold)
    requests = getattr(price, "requests_kcount", None)
    if requests is not None:
        values["request"] = _value_at(requests, threshold).scaleb(-3, _MONEY)
    if "input" not in values or "output" not in values:
        return None
    return ClassRates(**values)


def _catalog_context(service_tier: str | None) -> dict[str, str] | None:
    if not service_tier or service_tier in ("default", "auto", "standard"):
        return None
    if service_tier == "batch":
        return {"processing": "batch"}
    return {"service_tier": service_tier}


@lru_cache(maxsize=65_536)
def _catalog_version(
    provider: str, model: str, minute: datetime, service_tier: str | None
) -> PriceVersion | None:
    """The catalog price in force during `minute` (every catalog boundary is a whole minute)."""
    found = _catalog_model(provider, model)
    if found is None:
        return None
    provider_info, model_info = found
    context = _catalog_context(service_tier)
    price = model_info.get_prices(minute, context)
    base = _rates(price, None)
    if base is None:
        return None
    starts = sorted(
        {
            tier.start
            for value in vars(price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        },
        reverse=True,
    )
    tiers = []
    for start in starts:
        rates = _rates(price, start)
        if rates is not None:
            tiers.append(Tier(min_input_tokens=start + 1, per_million=rates))
    condition = "base"
    if isinstance(model_info.prices, list):
        # genai-prices' rule: the last conditional price that is unconstrained or active.
        index = next(
            (
                i
                for i in reversed(range(len(model_info.prices)))
                if model_info.prices[i].constraint is None
                or model_info.prices[i].constraint.active(minute)  # type: ignore[union-attr]
            ),
            0,
        )
        condition = f"c{index}"
    variant = f":{'-'.join(context.values())}" if context else ""
    return PriceVersion(
        id=f"{CATALOG_VERSION}:{provider_info.id}:{model_info.id}:{condition}{variant}",
        provider=provider,
        model=model,
        effective_from=minute,
        source=f"{CATALOG_VERSION} catalog",
        per_million=base,
        tiers=tuple(tiers),
    )


# -- the pricer --------------------------------------------------------------------------------


class Pricer:
    def __init__(self, book: PriceBook | None = None) -> None:
        self.book = book or PriceBook()

    def version(
        self,
        provider: str,
        model: str,
        at: datetime,
        tenant: str | None = None,
        service_tier: str | None = None,
    ) -> PriceVersion | None:
        own = self.book.find(provider, model, at, tenant, service_tier)
        if own is not None:
            return own
        minute = at.replace(second=0, microsecond=0)
        return _catalog_version(provider, model, minute, service_tier)

    def price(
        self,
        provider: str,
        model: str,
        tokens: TokenCounts,
        at: datetime,
        tenant: str | None = None,
        service_tier: str | None = None,
    ) -> Cost | Unpriced:
        version = self.version(provider, model, at, tenant, service_tier)
        if version is None:
            return Unpriced(f"no price for {provider}/{model} at {at.isoformat()}")
        fx = self.book.usd_per_unit(version.currency, at)
        if fx is None:
            return Unpriced(f"no {version.currency}->USD rate at {at.date().isoformat()}")
        rates = version.rates_for(tokens.input_total, tokens.output_total, at)
        by_class = cost_lines(rates, tokens)
        if version.currency == "USD":
            by_class_usd = by_class
        else:
            by_class_usd = {
                name: _MONEY.multiply(amount, fx).quantize(USD_QUANTUM, context=_MONEY)
                for name, amount in by_class.items()
            }
        return Cost(
            price_version_id=version.id,
            currency=version.currency,
            by_class=by_class,
            total=sum(by_class.values(), start=Decimal(0)),
            fx_rate=fx,
            by_class_usd=by_class_usd,
            total_usd=sum(by_class_usd.values(), start=Decimal(0)),
        )

    def price_event(self, event: UsageEvent) -> UsageEvent:
        """The event with its pricing fields set; raises UsageInvariantError on bad usage."""
        violation = usage_violation(event)
        if violation is not None:
            raise UsageInvariantError(violation)
        result = self.price(
            event.provider,
            event.provider_model,
            event.tokens,
            event.event_time,
            event.tenant,
            event.service_tier,
        )
        if isinstance(result, Unpriced):
            return event.model_copy(
                update={
                    "price_status": "unpriced",
                    "unpriced_reason": result.reason,
                    "price_version_id": None,
                    "billing_currency": None,
                    "cost_billed": None,
                    "fx_rate": None,
                    "cost_usd": None,
                    "cost_by_class": None,
                }
            )
        return event.model_copy(
            update={
                "price_status": "priced",
                "unpriced_reason": None,
                "price_version_id": result.price_version_id,
                "billing_currency": result.currency,
                "cost_billed": result.total,
                "fx_rate": result.fx_rate,
                "cost_usd": result.total_usd,
                "cost_by_class": result.by_class_usd,
            }
        )


_DEFAULT = Pricer()


def price_tokens(provider: str, model: str, tokens: TokenCounts, at: datetime) -> Cost | None:
    """Catalog-only price (no own book); None when unknown. Kept for simple callers."""
    result = _DEFAULT.price(provider, model, tokens, at)
    return result if isinstance(result, Cost) else None


def price_event(event: UsageEvent, pricer: Pricer | None = None) -> UsageEvent:
    return (pricer or _DEFAULT).price_event(event)
