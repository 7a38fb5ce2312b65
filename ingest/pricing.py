"""Pricing: one pure function from a usage event to its exact cost, used by streams and warehouse.

Where a price comes from, in order:
1. tokenops' own price book (negotiated, tenant-specific, non-USD, or missing from the catalog);
2. the genai-prices catalog, resolved at the event's own time and service tier (dated prices,
   DeepSeek's time-of-day windows, batch/flex/priority variants, long-context cliffs);
3. nothing: the event is `unpriced` with the reason, never a silent $0.
Both sources compile to the same rate card, so every cost is computed by one code path.
Arithmetic is exact integer atto-units (10^-18) of the billing currency: prices are turned into
integer rates per token once, per-class costs are integer products, and the only rounding is the
FX conversion to USD at the atto scale (half to even). Amounts leave as Decimal; Decimal work
runs in a context that traps FloatOperation, so a float reaching it raises.
"""

from __future__ import annotations

import decimal
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, TimeOfDateConstraint

from ingest.price_book import ClassRates, PriceBook, PriceVersion, Tier
from ingest.token_usage import usage_violation
from ingest.usage_event import TokenCounts, UsageEvent

CATALOG_VERSION = f"genai-prices@{genai_prices.__version__}"
_ONE = Decimal(1)

_MONEY = decimal.Context(prec=38, rounding=decimal.ROUND_HALF_EVEN)
_MONEY.traps[decimal.FloatOperation] = True


class UsageInvariantError(ValueError):
    """The event's token classes contradict the provider's own totals: quarantine, do not price."""


def _dec(atto: int) -> Decimal:
    """Atto-units as a Decimal with no trailing zeros (0.000114025, not 0.000114025000000000)."""
    whole, fraction = divmod(atto, ATTO)
    if not fraction:
        return Decimal(whole)
    return Decimal(atto).scaleb(-18, _MONEY).normalize(_MONEY)


class Cost(NamedTuple):
    """An exact cost. Amounts are kept as integer atto-units (10^-18) and read as Decimal."""

    price_version_id: str
    currency: str
    lines: dict[str, int]
    """Atto-units of `currency` per token class (and "request" for per-request fees)."""
    fx_rate: Decimal
    """USD per unit of `currency` at the event time (1 for USD)."""
    lines_usd: dict[str, int]

    @property
    def by_class(self) -> dict[str, Decimal]:
        return {name: _dec(atto) for name, atto in self.lines.items()}

    @property
    def total(self) -> Decimal:
        return _dec(sum(self.lines.values()))

    @property
    def by_class_usd(self) -> dict[str, Decimal]:
        return {name: _dec(atto) for name, atto in self.lines_usd.items()}

    @property
    def total_usd(self) -> Decimal:
        return _dec(sum(self.lines_usd.values()))

    @property
    def input_usd(self) -> Decimal:
        """Uncached input, cache reads and cache writes."""
        names = ("input_uncached", "cache_read", "cache_write", "cache_write_1h")
        return _dec(sum(self.lines_usd.get(n, 0) for n in names))

    @property
    def output_usd(self) -> Decimal:
        """Visible output and reasoning."""
        return _dec(self.lines_usd.get("output", 0) + self.lines_usd.get("reasoning", 0))


@dataclass(frozen=True, slots=True)
class Unpriced:
    reason: str


ATTO = 10**18
"""Costs are computed in integer atto-units (10^-18) of the billing currency: exact, fast, and
the same scale as the warehouse's DECIMAL(38, 18)."""

Pairs = tuple[tuple[str, int], ...]


def _atto(amount: Decimal, scale: int) -> int:
    """`amount` x 10^scale as an int; refuses a price finer than the atto scale can hold."""
    scaled = amount.scaleb(scale, _MONEY)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {amount} has more decimal places than tokenops keeps")
    return int(scaled)


def _per_token(rates: ClassRates) -> Pairs:
    """(token class, atto-units per token) for every class, defaults resolved."""
    return tuple((name, _atto(per_million, 12)) for name, per_million in rates.class_rates())


@dataclass(frozen=True, slots=True)
class _RateCard:
    """A price version compiled for the hot path: plain tuples, integer per-token rates."""

    version: PriceVersion
    base: tuple[Pairs, int]
    tiers: tuple[tuple[int, int | None, int, int | None, Pairs, int], ...]
    windows: tuple[tuple[time, time, Pairs, int], ...]

    @classmethod
    def compile(cls, version: PriceVersion) -> _RateCard:
        def fee(rates: ClassRates) -> int:
            return _atto(rates.request, 18)

        return cls(
            version=version,
            base=(_per_token(version.per_million), fee(version.per_million)),
            tiers=tuple(
                (
                    t.min_input_tokens,
                    t.max_input_tokens,
                    t.min_output_tokens,
                    t.max_output_tokens,
                    _per_token(t.per_million),
                    fee(t.per_million),
                )
                for t in version.tiers
            ),
            windows=tuple(
                (
                    w.start.replace(tzinfo=None),
                    w.end.replace(tzinfo=None),
                    _per_token(w.per_million),
                    fee(w.per_million),
                )
                for w in version.windows
            ),
        )

    def select(self, input_tokens: int, output_tokens: int, at: datetime) -> tuple[Pairs, int]:
        """Same rule as PriceVersion.rates_for: a window, else the first tier that holds."""
        if self.windows:
            now = at.astimezone(UTC).time().replace(tzinfo=None)
            for start, end, pairs, fee in self.windows:
                if _inside(now, start, end):
                    return pairs, fee
        for lo_in, hi_in, lo_out, hi_out, pairs, fee in self.tiers:
            if (
                input_tokens >= lo_in
                and (hi_in is None or input_tokens < hi_in)
                and output_tokens >= lo_out
                and (hi_out is None or output_tokens < hi_out)
            ):
                return pairs, fee
        return self.base


def _inside(now: time, start: time, end: time) -> bool:
    """In the daily window [start, end), which wraps midnight when end <= start."""
    return start <= now < end if start < end else (now >= start or now < end)


_CARDS: dict[int, _RateCard] = {}


def _card(version: PriceVersion) -> _RateCard:
    card = _CARDS.get(id(version))
    if card is None or card.version is not version:
        if len(_CARDS) > 100_000:
            _CARDS.clear()
        card = _CARDS[id(version)] = _RateCard.compile(version)
    return card


def _lines(pairs: Pairs, fee: int, counts: dict[str, int]) -> dict[str, int]:
    lines = {name: counts[name] * rate for name, rate in pairs if counts[name]}
    if fee:
        lines["request"] = fee
    return lines


def _convert(atto: int, fx_num: int, fx_den: int) -> int:
    """atto x fx, rounded half-to-even at the atto scale (the only rounding in pricing)."""
    quotient, remainder = divmod(atto * fx_num, fx_den)
    twice = 2 * remainder
    if twice > fx_den or (twice == fx_den and quotient % 2):
        quotient += 1
    return quotient


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
    if "input" not in values:
        return None
    # Embedding models have no output price: priced as input-only (see PriceVersion.input_only).
    values.setdefault("output", Decimal(0))
    return ClassRates(**values)


def _catalog_context(service_tier: str | None) -> dict[str, str] | None:
    if not service_tier or service_tier in ("default", "auto", "standard"):
        return None
    if service_tier == "batch":
        return {"processing": "batch"}
    return {"service_tier": service_tier}


@lru_cache(maxsize=4096)
def _time_of_day_bounds(provider: str, model: str) -> tuple[time, ...]:
    """Every time of day at which this model's catalog price can change (DeepSeek off-peak)."""
    found = _catalog_model(provider, model)
    if found is None:
        return ()
    model_info = found[1]
    constraints = (
        [c.constraint for c in model_info.prices] if isinstance(model_info.prices, list) else []
    )
    constraints += [v.constraint for v in model_info.price_variants or ()]
    bounds = {
        edge.replace(tzinfo=None)
        for c in constraints
        if isinstance(c, TimeOfDateConstraint)
        for edge in (c.start_time, c.end_time)
    }
    return tuple(sorted(bounds))


_CATALOG_CACHE: dict[tuple[str, str, str | None, date, int], PriceVersion | None] = {}


def _catalog_version(
    provider: str, model: str, at: datetime, service_tier: str | None
) -> PriceVersion | None:
    """The catalog price in force at `at`. Catalog prices change only at UTC day boundaries
    (dated prices) and at time-of-day bounds, so one resolution serves a whole (day, segment)."""
    utc = at.astimezone(UTC)
    segment = bisect_right(_time_of_day_bounds(provider, model), utc.time().replace(tzinfo=None))
    key = (provider, model, service_tier, utc.date(), segment)
    try:
        return _CATALOG_CACHE[key]
    except KeyError:
        if len(_CATALOG_CACHE) > 100_000:
            _CATALOG_CACHE.clear()
        version = _CATALOG_CACHE[key] = _resolve_catalog(provider, model, utc, service_tier)
        return version


def _resolve_catalog(
    provider: str, model: str, at: datetime, service_tier: str | None
) -> PriceVersion | None:
    found = _catalog_model(provider, model)
    if found is None:
        return None
    provider_info, model_info = found
    context = _catalog_context(service_tier)
    price = model_info.get_prices(at, context)
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
                or model_info.prices[i].constraint.active(at)  # type: ignore[union-attr]
            ),
            0,
        )
        condition = f"c{index}"
    variant = f":{'-'.join(context.values())}" if context else ""
    return PriceVersion(
        id=f"{CATALOG_VERSION}:{provider_info.id}:{model_info.id}:{condition}{variant}",
        provider=provider,
        model=model,
        effective_from=at.replace(second=0, microsecond=0),
        source=f"{CATALOG_VERSION} catalog",
        per_million=base,
        tiers=tuple(tiers),
        input_only=getattr(price, "output_mtok", None) is None,
    )


# -- the pricer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateChoice:
    """One way a call can be priced inside a price segment: the first choice (lowest `order`)
    whose token bounds hold applies, the same rule as `_RateCard.select`. Rates are integer
    atto-units of `currency` per token (per request for `fee`), as `Pricer.price` multiplies."""

    start: datetime
    end: datetime
    order: int
    min_input: int
    max_input: int | None
    min_output: int
    max_output: int | None
    rates: Pairs
    fee: int
    version: PriceVersion
    fx_rate: Decimal
    fx_numerator: int
    fx_denominator: int


class Pricer:
    """Prices events from its book and the catalog. Every price boundary is a whole UTC minute
    (catalog prices change at day and time-of-day bounds; own versions are refused otherwise),
    so each (model, tenant, tier, minute) is resolved once per book generation."""

    def __init__(self, book: PriceBook | None = None) -> None:
        self.book = book or PriceBook()
        self._resolved: dict[tuple[str, str, str | None, str | None, int], _RateCard | None] = {}
        self._fx: dict[tuple[str, int], tuple[Decimal, int, int] | None] = {}
        self._generation = self.book.generation

    def _rate_card(
        self, provider: str, model: str, at: datetime, tenant: str | None, tier: str | None
    ) -> _RateCard | None:
        if self._generation != self.book.generation:
            self._resolved.clear()
            self._fx.clear()
            self._generation = self.book.generation
        if tenant is not None and not self.book.has_tenant_prices(provider, model):
            tenant = None  # the same price for every tenant: share the cache entry
        key = (provider, model, tenant, tier, int(at.timestamp()) // 60)
        try:
            return self._resolved[key]
        except KeyError:
            if len(self._resolved) > 200_000:
                self._resolved.clear()
            version = self.version(provider, model, at, tenant, tier)
            card = self._resolved[key] = None if version is None else _card(version)
            return card

    def _fx_rate(self, currency: str, at: datetime) -> tuple[Decimal, int, int] | None:
        """(rate, numerator, denominator) of USD per unit, per day (FX rates are dated)."""
        key = (currency, int(at.timestamp()) // 86_400)
        try:
            return self._fx[key]
        except KeyError:
            rate = self.book.usd_per_unit(currency, at)
            if rate is None:
                found = None
            else:
                exponent = int(rate.as_tuple().exponent)
                numerator = int(rate.scaleb(-exponent, _MONEY)) if exponent < 0 else int(rate)
                found = (rate, numerator, 10**-exponent if exponent < 0 else 1)
            self._fx[key] = found
            return found

    def by_tenant(self, provider: str, model: str) -> bool:
        """Whether this model's price can differ between tenants (a negotiated contract)."""
        return self.book.has_tenant_prices(provider, model)

    def rate_choices(
        self, provider: str, model: str, day: date, tenant: str | None, service_tier: str | None
    ) -> list[RateChoice]:
        """How calls of one UTC day are priced, for pricing many at once (ingest.usage_batch).

        The day is cut at every instant a price may change (catalog day and time-of-day bounds,
        own versions and their windows), and each segment is resolved once, with the same rate
        cards as `price`. A segment with no price, or no FX rate to USD, has no choices: its
        calls are priced one by one, which explains why."""
        start = datetime.combine(day, time(0), UTC)
        end = datetime.combine(date.fromordinal(day.toordinal() + 1), time(0), UTC)
        edges = {start, end} | self.book.change_times(provider, model, start, end)
        edges.update(datetime.combine(day, t, UTC) for t in _time_of_day_bounds(provider, model))
        cuts = sorted(edges)
        choices: list[RateChoice] = []
        for begin, finish in pairwise(cuts):
            card = self._rate_card(provider, model, begin, tenant, service_tier)
            if card is None:
                continue
            fx = (
                (_ONE, 1, 1)
                if card.version.currency == "USD"
                else self._fx_rate(card.version.currency, begin)
            )
            if fx is None:
                continue
            window = next(
                (
                    (pairs, fee)
                    for w_start, w_end, pairs, fee in card.windows
                    if _inside(begin.time().replace(tzinfo=None), w_start, w_end)
                ),
                None,
            )
            bounds: list[tuple[int, int | None, int, int | None, Pairs, int]]
            if window is not None:
                bounds = [(0, None, 0, None, *window)]
            else:
                bounds = [*card.tiers, (0, None, 0, None, *card.base)]
            for order, (lo_in, hi_in, lo_out, hi_out, pairs, fee) in enumerate(bounds):
                choices.append(
                    RateChoice(
                        begin,
                        finish,
                        order,
                        lo_in,
                        hi_in,
                        lo_out,
                        hi_out,
                        pairs,
                        fee,
                        card.version,
                        *fx,
                    )
                )
        return choices

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
        return _catalog_version(provider, model, at, service_tier)

    def price(
        self,
        provider: str,
        model: str,
        tokens: TokenCounts,
        at: datetime,
        tenant: str | None = None,
        service_tier: str | None = None,
    ) -> Cost | Unpriced:
        card = self._rate_card(provider, model, at, tenant, service_tier)
        if card is None:
            return Unpriced(f"no price for {provider}/{model} at {at.isoformat()}")
        version = card.version
        counts = tokens.__dict__
        if version.input_only and (counts["output"] or counts["reasoning"]):
            return Unpriced(f"{provider}/{model} has a price for input only, not for its output")
        pairs, fee = card.select(
            counts["input_uncached"]
            + counts["cache_read"]
            + counts["cache_write"]
            + counts["cache_write_1h"],
            counts["output"] + counts["reasoning"],
            at,
        )
        lines = _lines(pairs, fee, counts)
        if version.currency == "USD":
            return Cost(version.id, "USD", lines, _ONE, lines)
        fx = self._fx_rate(version.currency, at)
        if fx is None:
            return Unpriced(f"no {version.currency}->USD rate at {at.date().isoformat()}")
        rate, numerator, denominator = fx
        usd = {name: _convert(atto, numerator, denominator) for name, atto in lines.items()}
        return Cost(version.id, version.currency, lines, rate, usd)

    def cache_savings_usd(self, event: UsageEvent) -> Decimal | None:
        """What caching saved on a priced event: its cost with every cached input token (read or
        written) billed as uncached input, minus its actual cost. Negative when cache writes cost
        more than the reads saved; None when the event is not priced."""
        tokens = event.tokens
        if event.cost_usd is None:
            return None
        if not (tokens.cache_read or tokens.cache_write or tokens.cache_write_1h):
            return Decimal(0)
        uncached = self.price(
            event.provider,
            event.provider_model,
            TokenCounts(
                input_uncached=tokens.input_total, output=tokens.output, reasoning=tokens.reasoning
            ),
            event.event_time,
            event.tenant,
            event.service_tier,
        )
        if isinstance(uncached, Unpriced):
            return None
        return uncached.total_usd - event.cost_usd

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
        total_usd = result.total_usd
        return event.model_copy(
            update={
                "price_status": "priced",
                "unpriced_reason": None,
                "price_version_id": result.price_version_id,
                "billing_currency": result.currency,
                "cost_billed": total_usd if result.currency == "USD" else result.total,
                "fx_rate": result.fx_rate,
                "cost_usd": total_usd,
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
