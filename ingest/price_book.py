"""Price versions: what one model costs, per token class, from when, for whom, in which currency.

A price version is immutable. Correcting a price means adding a version (effective from the
date it should have applied); history is re-priced through correction entries, never edited.

Shapes a version can express:
- rates per million tokens for every token class (cache reads default to the input rate, 1 h
  cache writes to the 5 min rate, reasoning to the output rate) and a fee per request;
- tiers that reprice the WHOLE call once it crosses a bound, by input size (Qwen) or by input and
  output length together (GLM): the first tier whose bounds all hold applies;
- daily UTC time windows with their own rates (DeepSeek off-peak);
- a service tier (batch, flex, priority) and a tenant (a negotiated contract);
- a currency other than USD, converted with the dated FX table.
Amounts in files are quoted decimal strings; a YAML float is refused so no binary float ever
enters a money path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from tokenops.errors import ConfigError

TOKEN_CLASSES = (
    "input_uncached",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
)


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(f"write amounts as quoted decimal strings, not the float {value!r}")
    return value


Amount = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0)]


def _utc_datetime(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


When = Annotated[AwareDatetime, BeforeValidator(_utc_datetime)]


class ClassRates(BaseModel):
    """Prices per million tokens (and per request) in the version's currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Amount
    output: Amount
    cache_read: Amount | None = None
    cache_write: Amount | None = None
    cache_write_1h: Amount | None = None
    reasoning: Amount | None = None
    request: Amount = Decimal(0)

    def class_rates(self) -> tuple[tuple[str, Decimal], ...]:
        """(token class, price per million) for every class, defaults resolved."""
        return tuple((name, self.per_million(name)) for name in TOKEN_CLASSES)

    def per_million(self, token_class: str) -> Decimal:
        if token_class == "input_uncached":
            return self.input
        if token_class == "cache_read":
            return self.input if self.cache_read is None else self.cache_read
        if token_class == "cache_write":
            return self.input if self.cache_write is None else self.cache_write
        if token_class == "cache_write_1h":
            return (
                self.per_million("cache_write")
                if self.cache_write_1h is None
                else self.cache_write_1h
            )
        if token_class == "output":
            return self.output
        if token_class == "reasoning":
            return self.output if self.reasoning is None else self.reasoning
        raise KeyError(token_class)


class Tier(BaseModel):
    """Whole-call rates when input (and output) token totals fall in [min, max)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_input_tokens: int = Field(0, ge=0)
    max_input_tokens: int | None = Field(None, gt=0)
    min_output_tokens: int = Field(0, ge=0)
    max_output_tokens: int | None = Field(None, gt=0)
    per_million: ClassRates

    def holds(self, input_tokens: int, output_tokens: int) -> bool:
        return (
            input_tokens >= self.min_input_tokens
            and (self.max_input_tokens is None or input_tokens < self.max_input_tokens)
            and output_tokens >= self.min_output_tokens
            and (self.max_output_tokens is None or output_tokens < self.max_output_tokens)
        )


class TimeWindow(BaseModel):
    """Rates for a daily UTC window [start, end); a window with end <= start wraps midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time
    end: time
    per_million: ClassRates

    @field_validator("start", "end")
    @classmethod
    def _to_utc(cls, value: time) -> time:
        """Bounds given with an offset (08:30+08:00) are converted to UTC, never dropped."""
        if value.tzinfo is None:
            return value
        anchored = datetime.combine(date(2000, 1, 1), value).astimezone(UTC)
        return anchored.time()

    def holds(self, at: datetime) -> bool:
        now = at.astimezone(UTC).time().replace(tzinfo=None)
        start, end = self.start.replace(tzinfo=None), self.end.replace(tzinfo=None)
        if start < end:
            return start <= now < end
        return now >= start or now < end


class PriceVersion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = ""
    provider: str
    model: str
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    effective_from: When
    effective_to: When | None = None
    tenant: str | None = None
    service_tier: str | None = None
    source: str = Field(min_length=1)
    per_million: ClassRates
    tiers: tuple[Tier, ...] = ()
    windows: tuple[TimeWindow, ...] = ()
    input_only: bool = False
    """Only input is priced (embedding models): a call that produced output is unpriced."""

    def model_post_init(self, _: Any) -> None:
        for bound in (self.effective_from, self.effective_to):
            if bound is not None and (bound.second or bound.microsecond):
                raise ValueError("effective_from/effective_to must be whole minutes")
        if not self.id:
            parts = [
                "book",
                self.provider,
                self.model,
                self.effective_from.date().isoformat(),
                self.tenant or "*",
                self.service_tier or "*",
            ]
            object.__setattr__(self, "id", ":".join(parts))
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError(f"price version {self.id}: effective_to must be after effective_from")

    def in_force(self, at: datetime) -> bool:
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    def rates_for(self, input_tokens: int, output_tokens: int, at: datetime) -> ClassRates:
        for window in self.windows:
            if window.holds(at):
                return window.per_million
        for tier in self.tiers:
            if tier.holds(input_tokens, output_tokens):
                return tier.per_million
        return self.per_million


class FxRate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    usd_per_unit: Amount
    effective_from: When
    source: str = Field(min_length=1)

    @field_validator("effective_from")
    @classmethod
    def _whole_day(cls, value: datetime) -> datetime:
        utc = value.astimezone(UTC)
        if (utc.hour, utc.minute, utc.second, utc.microsecond) != (0, 0, 0, 0):
            raise ValueError("FX rates are daily: effective_from must be a date (UTC midnight)")
        return utc

    @field_validator("usd_per_unit")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("an FX rate must be positive")
        return value


class _PriceBookFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fx: list[FxRate] = []
    prices: list[PriceVersion] = []


class PriceBook:
    """tokenops' own price versions and FX rates; they override the genai-prices catalog."""

    def __init__(self, versions: Iterable[PriceVersion] = (), fx: Iterable[FxRate] = ()) -> None:
        self._versions: dict[tuple[str, str], list[PriceVersion]] = {}
        self._ids: set[str] = set()
        self._fx: dict[str, list[FxRate]] = {}
        self._tenant_priced: set[tuple[str, str]] = set()
        self.generation = 0
        """Bumped on every change so price caches know to forget."""
        for rate in fx:
            self.add_fx(rate)
        for version in versions:
            self.add(version)

    def add(self, version: PriceVersion) -> bool:
        """Add a version; False when a version with that id is already known."""
        if version.id in self._ids:
            return False
        self._ids.add(version.id)
        key = (version.provider.lower(), version.model.lower())
        self._versions.setdefault(key, []).append(version)
        self._versions[key].sort(key=lambda v: v.effective_from)
        if version.tenant is not None:
            self._tenant_priced.add(key)
        self.generation += 1
        return True

    def __contains__(self, version_id: object) -> bool:
        return version_id in self._ids

    def add_fx(self, rate: FxRate) -> None:
        rates = self._fx.setdefault(rate.currency, [])
        rates.append(rate)
        rates.sort(key=lambda r: r.effective_from)
        self.generation += 1

    @property
    def versions(self) -> list[PriceVersion]:
        return [v for versions in self._versions.values() for v in versions]

    @property
    def fx_rates(self) -> list[FxRate]:
        return [r for rates in self._fx.values() for r in rates]

    def has_tenant_prices(self, provider: str, model: str) -> bool:
        return (provider.lower(), model.lower()) in self._tenant_priced

    def find(
        self,
        provider: str,
        model: str,
        at: datetime,
        tenant: str | None = None,
        service_tier: str | None = None,
    ) -> PriceVersion | None:
        """The version in force: tenant-specific beats general, an exact service tier beats
        the untiered one, and among equals the latest effective_from wins."""
        best: PriceVersion | None = None
        best_rank: tuple[bool, bool, datetime] | None = None
        for version in self._versions.get((provider.lower(), model.lower()), ()):
            if not version.in_force(at):
                continue
            if version.tenant is not None and version.tenant != tenant:
                continue
            if version.service_tier is not None and version.service_tier != service_tier:
                continue
            rank = (
                version.tenant is not None,
                version.service_tier is not None,
                version.effective_from,
            )
            if best_rank is None or rank > best_rank:
                best, best_rank = version, rank
        return best

    def change_times(
        self, provider: str, model: str, start: datetime, end: datetime
    ) -> set[datetime]:
        """Every instant in [start, end) at which this model's own price may change: a version
        starting or ending, or one of its daily time windows opening or closing."""
        times: set[datetime] = set()
        for version in self._versions.get((provider.lower(), model.lower()), ()):
            times.update(b for b in (version.effective_from, version.effective_to) if b is not None)
            day = start.astimezone(UTC).date()
            while datetime.combine(day, time(0), UTC) < end:
                for window in version.windows:
                    for edge in (window.start, window.end):
                        times.add(datetime.combine(day, edge.replace(tzinfo=None), UTC))
                day = date.fromordinal(day.toordinal() + 1)
        return {t for t in times if start <= t < end}

    def usd_per_unit(self, currency: str, at: datetime) -> Decimal | None:
        if currency == "USD":
            return Decimal(1)
        found = None
        for rate in self._fx.get(currency, ()):
            if rate.effective_from <= at:
                found = rate.usd_per_unit
        return found


def load_price_book(book_file: Path, additions_file: Path | None = None) -> PriceBook:
    """The curated book file plus the append-only log of versions added at run time."""
    book = PriceBook()
    if book_file.exists():
        try:
            parsed = _PriceBookFile.model_validate(yaml.safe_load(book_file.read_text()) or {})
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid price book {book_file}: {exc}") from exc
        for rate in parsed.fx:
            book.add_fx(rate)
        for version in parsed.prices:
            book.add(version)
    if additions_file is not None and additions_file.exists():
        for number, line in enumerate(additions_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                book.add(PriceVersion.model_validate_json(line))
            except ValidationError as exc:
                raise ConfigError(
                    f"invalid price version at {additions_file}:{number}: {exc}"
                ) from exc
    return book
